#!/usr/bin/python3
"""MPI start-up cost of jiffy against MPICH's mpiexec.hydra and Open MPI's
mpirun, and the cost of jiffy's MPI support for programs that use no MPI.

    /usr/bin/python3 bench/mpi_bench.py [--reps N] [--light-reps N] [--quick]

What it measures, in one run, every command once per round in a shuffled
order (so machine noise hits all of them alike): wall (perf_counter around
spawn + wait4) and CPU (user+sys of the child and everything it reaped, from
wait4's rusage) of

  MPICH    mpiexec.hydra -n 2 build/mpi/hello.mpich (also with UCX_TLS=self,sm)
           jiffy -n 2 build/mpi/hello.mpich                  (default: topology
                                                               cache, UCX_TLS=self,sm)
           jiffy --no-ucx-shm ..., jiffy --no-topology-cache ...
           -n 1: hello.mpich run directly (a singleton; also with UCX_TLS),
           jiffy -n 1 (default, --no-ucx-shm, --no-topology-cache)
  Open MPI mpirun.openmpi --allow-run-as-root -n 2 build/mpi/hello.openmpi
           jiffy -n 2 build/mpi/hello.openmpi                (default: topology
                                                               cache, single-node profile)
           jiffy --no-topology-cache ...
           jiffy --no-single-node-ompi ...
  no MPI   jiffy -n 1 /bin/true         vs  jiffy --mpi=none -n 1 /bin/true
           jiffy -n 1 sh -c true        vs  jiffy --mpi=none -n 1 sh -c true
           (these take a few ms each, so each round runs them light-reps/reps
           times; they are interleaved among themselves)

jiffy's daemon and its set's shared PMIx server are not children of the
launcher, so their CPU is read from /proc/<pid>/stat around each jiffy run
and reported per launch ("daemon").
Every hello run's stdout is checked: exactly one "hello R of 2" line for each
rank R and exit status 0; any other outcome aborts the benchmark. Every launch
runs under a timeout (--timeout).

Targets (issue 3), on median wall:
  MPICH hello     jiffy <= 0.7x hydra (issue 10, with the defaults)
  Open MPI hello  jiffy <= 0.35x mpirun (issue 10, with the defaults);
                  <= 0.8x with --no-topology-cache or --no-single-node-ompi
  no MPI          "no noticeable cost": default within 10% of --mpi=none on
                  median wall (this script's own threshold, not the issue's)

The script uses its own JIFFY_RUNTIME_DIR (a fresh private directory), so the
daemon it starts is its own; it stops it at the end. Standard library only.
"""

import argparse
import json
import os
import random
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
HELLO_RE = re.compile(rb"^hello (\d+) of (\d+)$")


class BenchError(Exception):
    pass


def find_jiffy(arg):
    if arg:
        return str(Path(arg).resolve())
    build = Path(os.environ.get("JIFFY_BUILD_DIR") or REPO / "build")
    return str((build / "jiffy").resolve())


class Runner:
    """Runs one command with stdin /dev/null and stdout/stderr in files."""

    def __init__(self, env, timeout, tmpdir):
        self.env = env
        self.timeout = timeout
        self.devnull = os.open(os.devnull, os.O_RDONLY)
        # O_APPEND: ranks sharing the fd never overwrite each other's lines
        self.out = os.open(os.path.join(tmpdir, "stdout"), os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self.err = os.open(os.path.join(tmpdir, "stderr"), os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)

    @staticmethod
    def _read(fd):
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while True:
            b = os.read(fd, 65536)
            if not b:
                return b"".join(chunks)
            chunks.append(b)

    def once(self, argv, env=None):
        """(wall s, cpu s, exit code, stdout bytes, stderr bytes) of one run;
        env: variables added to the runner's."""
        os.ftruncate(self.out, 0)
        os.ftruncate(self.err, 0)
        fa = [(os.POSIX_SPAWN_DUP2, self.devnull, 0), (os.POSIX_SPAWN_DUP2, self.out, 1),
              (os.POSIX_SPAWN_DUP2, self.err, 2)]
        t0 = time.perf_counter()
        # own process group, so that a hung launch can be killed with its ranks
        pid = os.posix_spawn(argv[0], argv, {**self.env, **(env or {})}, file_actions=fa, setpgroup=0)
        pfd = os.pidfd_open(pid)
        try:
            ready, _, _ = select.select([pfd], [], [], self.timeout)
            if not ready:
                os.killpg(pid, signal.SIGKILL)
                os.wait4(pid, 0)
                raise BenchError(f"timed out after {self.timeout} s: {' '.join(argv)}")
            _, status, ru = os.wait4(pid, 0)
        finally:
            os.close(pfd)
        wall = time.perf_counter() - t0
        return (wall, ru.ru_utime + ru.ru_stime, os.waitstatus_to_exitcode(status),
                self._read(self.out), self._read(self.err))


def proc_cpu(pid):
    """utime+stime of pid (and its reaped children) in seconds, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        fields = s[s.rindex(")") + 2:].split()
        # fields[11..14] = utime stime cutime cstime (stat fields 14..17)
        return sum(int(x) for x in fields[11:15]) / CLK_TCK
    except (OSError, ValueError):
        return None


def daemon_pid(jiffy, env):
    cp = subprocess.run([jiffy, "status", "--json"], env=env, capture_output=True, text=True, timeout=10)
    try:
        d = json.loads(cp.stdout).get("daemon")
        return d["pid"] if d else None
    except (ValueError, AttributeError, KeyError, TypeError):
        return None


def shared_pmix_server(daemon):
    """The pid of the shared PMIx server of the daemon's resource set
    (launch/pmix_shared.h), or None: the process whose argv[0] is
    jiffy-pmix:IDENTITY where the daemon's is jiffyd:IDENTITY."""
    try:
        with open(f"/proc/{daemon}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0")[0]
    except OSError:
        return None
    if not argv0.startswith(b"jiffyd:"):
        return None
    want = b"jiffy-pmix:" + argv0[len(b"jiffyd:"):]
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if f.read().split(b"\0")[0] == want:
                    return int(d)
        except OSError:
            continue
    return None


def check_hello(nranks):
    """A checker: the output holds exactly one 'hello R of N' line per rank."""
    def check(out):
        seen = []
        for line in out.splitlines():
            m = HELLO_RE.match(line.strip())
            if m:
                seen.append((int(m.group(1)), int(m.group(2))))
        want = [(r, nranks) for r in range(nranks)]
        if sorted(seen) != want:
            return f"expected one 'hello R of {nranks}' line for each R in 0..{nranks - 1}, got {len(seen)} hello line(s): {sorted(seen)}"
        return None
    return check


def check_empty(out):
    return None if not out.strip() else f"expected no output, got {out[:200]!r}"


class Cmd:
    def __init__(self, key, label, argv, check, jiffy, light=False, env=None):
        self.key, self.label, self.argv, self.check = key, label, argv, check
        self.jiffy, self.light, self.env = jiffy, light, env
        self.wall, self.cpu, self.dcpu = [], [], []


def median_ms(xs):
    return statistics.median(xs) * 1000 if xs else float("nan")


def fmt_ratio(x):
    return "n/a" if x is None or x != x else f"{x:.2f}x"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=20, help="runs of each MPI command (default 20)")
    ap.add_argument("--light-reps", type=int, default=200,
                    help="runs of each no-MPI command (default 200; rounded up to a multiple of --reps)")
    ap.add_argument("--warmup", type=int, default=3, help="unmeasured runs of each command first (default 3)")
    ap.add_argument("--quick", action="store_true", help="reps 5, light-reps 50")
    ap.add_argument("--jiffy", help="jiffy binary (default: $JIFFY_BUILD_DIR or <repo>/build/jiffy)")
    ap.add_argument("--mpi-dir", help="where hello.mpich and hello.openmpi are (default: <jiffy's dir>/mpi)")
    ap.add_argument("--no-mpich", action="store_true", help="skip the MPICH part")
    ap.add_argument("--no-ompi", action="store_true", help="skip the Open MPI part")
    ap.add_argument("--timeout", type=float, default=60, help="seconds before one launch counts as hung (default 60)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.quick:
        a.reps, a.light_reps = 5, 50
    if a.reps < 1 or a.light_reps < 1:
        ap.error("--reps and --light-reps must be at least 1")
    per_round = -(-a.light_reps // a.reps)

    jiffy = find_jiffy(a.jiffy)
    if not os.access(jiffy, os.X_OK):
        sys.exit(f"mpi_bench: jiffy not found at {jiffy} (build it or pass --jiffy)")
    mpi_dir = Path(a.mpi_dir).resolve() if a.mpi_dir else Path(jiffy).parent / "mpi"
    true = shutil.which("true", path="/bin:/usr/bin")
    sh = shutil.which("sh", path="/bin:/usr/bin")
    hydra = shutil.which("mpiexec.hydra")
    mpirun = shutil.which("mpirun.openmpi")
    hello_mpich, hello_ompi = str(mpi_dir / "hello.mpich"), str(mpi_dir / "hello.openmpi")
    skipped = []

    cmds = []
    if a.no_mpich:
        skipped.append("MPICH part (--no-mpich)")
    elif not hydra:
        skipped.append("MPICH part: mpiexec.hydra not installed")
    elif not os.access(hello_mpich, os.X_OK):
        skipped.append(f"MPICH part: {hello_mpich} missing (build the tests)")
    else:
        h, h1 = check_hello(2), check_hello(1)
        ucx = {"UCX_TLS": "self,sm"}
        cmds += [Cmd("hydra", "mpiexec.hydra -n 2 hello.mpich", [hydra, "-n", "2", hello_mpich], h, False),
                 Cmd("hydra-ucx", "UCX_TLS=self,sm mpiexec.hydra -n 2 hello.mpich", [hydra, "-n", "2", hello_mpich],
                     h, False, env=ucx),
                 Cmd("j-mpich", "jiffy -n 2 hello.mpich", [jiffy, "-n", "2", hello_mpich], h, True),
                 Cmd("j-mpich-notc", "jiffy --no-topology-cache -n 2 hello.mpich",
                     [jiffy, "--no-topology-cache", "-n", "2", hello_mpich], h, True),
                 Cmd("j-mpich-noucx", "jiffy --no-ucx-shm -n 2 hello.mpich",
                     [jiffy, "--no-ucx-shm", "-n", "2", hello_mpich], h, True),
                 Cmd("single", "hello.mpich (a singleton: no launcher)", [hello_mpich], h1, False),
                 Cmd("single-ucx", "UCX_TLS=self,sm hello.mpich (a singleton)", [hello_mpich], h1, False, env=ucx),
                 Cmd("j1-mpich", "jiffy -n 1 hello.mpich", [jiffy, "-n", "1", hello_mpich], h1, True),
                 Cmd("j1-mpich-notc", "jiffy --no-topology-cache -n 1 hello.mpich",
                     [jiffy, "--no-topology-cache", "-n", "1", hello_mpich], h1, True),
                 Cmd("j1-mpich-noucx", "jiffy --no-ucx-shm -n 1 hello.mpich",
                     [jiffy, "--no-ucx-shm", "-n", "1", hello_mpich], h1, True)]
    if a.no_ompi:
        skipped.append("Open MPI part (--no-ompi)")
    elif not mpirun:
        skipped.append("Open MPI part: mpirun.openmpi not installed")
    elif not os.access(hello_ompi, os.X_OK):
        skipped.append(f"Open MPI part: {hello_ompi} missing (build the tests)")
    else:
        h = check_hello(2)
        cmds += [Cmd("mpirun", "mpirun.openmpi --allow-run-as-root -n 2 hello.openmpi",
                     [mpirun, "--allow-run-as-root", "-n", "2", hello_ompi], h, False),
                 Cmd("j-ompi", "jiffy -n 2 hello.openmpi", [jiffy, "-n", "2", hello_ompi], h, True),
                 Cmd("j-ompi-notc", "jiffy --no-topology-cache -n 2 hello.openmpi",
                     [jiffy, "--no-topology-cache", "-n", "2", hello_ompi],
                     h, True),
                 Cmd("j-ompi-nosn", "jiffy --no-single-node-ompi -n 2 hello.openmpi",
                     [jiffy, "--no-single-node-ompi", "-n", "2", hello_ompi],
                     h, True)]
    cmds += [Cmd("true", "jiffy -n 1 /bin/true", [jiffy, "-n", "1", true], check_empty, True, light=True),
             Cmd("true-none", "jiffy --mpi=none -n 1 /bin/true", [jiffy, "--mpi=none", "-n", "1", true],
                 check_empty, True, light=True),
             Cmd("sh", "jiffy -n 1 sh -c true", [jiffy, "-n", "1", sh, "-c", "true"], check_empty, True,
                 light=True),
             Cmd("sh-none", "jiffy --mpi=none -n 1 sh -c true", [jiffy, "--mpi=none", "-n", "1", sh, "-c", "true"],
                 check_empty, True, light=True)]
    by = {c.key: c for c in cmds}

    rdir = tempfile.mkdtemp(prefix="jfbench-", dir="/tmp")
    os.chmod(rdir, 0o700)
    tmp = tempfile.mkdtemp(prefix="jfbench-out-", dir="/tmp")
    env = dict(os.environ)
    for v in list(env):
        # a caller's jiffy, MPI or hwloc settings would skew the comparison
        if v.startswith(("JIFFY_", "OMPI_", "PMIX_", "HYDRA_", "MPIR_CVAR_", "HWLOC_")) or v == "MPIEXEC_TIMEOUT":
            env.pop(v)
    env["JIFFY_RUNTIME_DIR"] = rdir
    r = Runner(env, a.timeout, tmp)
    load0 = os.getloadavg()
    t_start = time.monotonic()
    dpid = None

    spid = None

    def long_lived_cpu():
        """The daemon's CPU and its set's shared PMIx server's."""
        d = proc_cpu(dpid)
        return None if d is None else d + ((proc_cpu(spid) or 0) if spid else 0)

    def run(c, measure):
        nonlocal dpid
        d0 = long_lived_cpu() if (measure and c.jiffy and dpid) else None
        w, cpu, rc, out, err = r.once(c.argv, c.env)
        d1 = long_lived_cpu() if d0 is not None else None
        problem = f"exit status {rc}" if rc != 0 else c.check(out)
        if problem:
            raise BenchError(f"{c.label}: {problem}\n  command: {' '.join(c.argv)}\n"
                             f"  stdout: {out.decode(errors='replace')[-1500:]!r}\n"
                             f"  stderr: {err.decode(errors='replace')[-1500:]!r}")
        if measure:
            c.wall.append(w)
            c.cpu.append(cpu)
            if d0 is not None and d1 is not None:
                c.dcpu.append(d1 - d0)

    try:
        # warm up: start the daemon (and its topology XML), fault in binaries and libraries
        for _ in range(a.warmup):
            for c in cmds:
                run(c, False)
        dpid = daemon_pid(jiffy, env)
        if not dpid:
            raise BenchError("jiffy's daemon did not start (jiffy status --json shows none)")
        spid = shared_pmix_server(dpid)  # started by the warm-up's Open MPI launches

        rnd = random.Random(a.seed)
        heavy = [c for c in cmds if not c.light]
        light = [c for c in cmds if c.light]
        for _ in range(a.reps):
            order = heavy + light * per_round
            rnd.shuffle(order)
            for c in order:
                run(c, True)
    except (BenchError, OSError) as e:
        print(f"mpi_bench: ABORTED: {e}", file=sys.stderr)
        return 1
    finally:
        try:
            subprocess.run([jiffy, "stop"], env=env, capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            print(f"mpi_bench: warning: jiffy stop failed: {e}", file=sys.stderr)
        shutil.rmtree(rdir, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - t_start
    load1 = os.getloadavg()

    # ---- report
    print(f"jiffy: {jiffy}")
    print(f"machine: {os.cpu_count()} CPUs; load average {load0[0]:.2f} at start, {load1[0]:.2f} at end; "
          f"{elapsed:.0f} s")
    print(f"reps: {a.reps} per MPI command, {a.reps * per_round} per no-MPI command, "
          f"interleaved (shuffled each round); all hello outputs checked")
    for s in skipped:
        print(f"skipped: {s}")

    def table(title, keys):
        keys = [k for k in keys if k in by]
        if not keys:
            return
        print()
        print(title)
        print(f"{'command':<60} {'wall ms':>8} {'p90 ms':>8} {'CPU ms':>8} {'daemon':>7} {'runs':>5}")
        for k in keys:
            c = by[k]
            p90 = statistics.quantiles(c.wall, n=10)[-1] * 1000 if len(c.wall) >= 2 else median_ms(c.wall)
            dm = f"{statistics.mean(c.dcpu) * 1000:7.2f}" if c.dcpu else f"{'':7}"
            print(f"{c.label:<60} {median_ms(c.wall):8.1f} {p90:8.1f} {median_ms(c.cpu):8.1f} {dm} {len(c.wall):5d}")

    table("MPICH: -n 2 hello (medians; daemon = CPU per launch of jiffy's daemon and shared PMIx server, mean)",
          ["hydra", "hydra-ucx", "j-mpich", "j-mpich-noucx", "j-mpich-notc"])
    table("MPICH: -n 1 hello", ["single", "single-ucx", "j1-mpich", "j1-mpich-noucx", "j1-mpich-notc"])
    table("Open MPI: -n 2 hello (medians; daemon = CPU per launch of jiffy's daemon and shared PMIx server, mean)",
          ["mpirun", "j-ompi", "j-ompi-notc", "j-ompi-nosn"])
    print()
    print("No MPI: cost of the MPI support (medians)")
    print(f"{'command':<60} {'wall ms':>8} {'CPU ms':>8} {'daemon':>7} {'runs':>5}")
    for k in ["true", "true-none", "sh", "sh-none"]:
        c = by[k]
        dm = f"{statistics.mean(c.dcpu) * 1000:7.3f}" if c.dcpu else f"{'':7}"
        print(f"{c.label:<60} {median_ms(c.wall):8.2f} {median_ms(c.cpu):8.2f} {dm} {len(c.wall):5d}")

    def ratio(num, den, what):
        n, d = by[num], by[den]
        if what == "wall":
            x, y = median_ms(n.wall), median_ms(d.wall)
        else:
            x, y = median_ms(n.cpu), median_ms(d.cpu)
        return x / y if y else None

    rows = []  # (name, metric, value, target text, predicate or None)
    le = lambda t: (f"<= {t}", lambda v: v <= t)  # noqa: E731
    if "hydra" in by:
        for k, tgt in [("j-mpich", 0.7), ("j-mpich-noucx", None), ("j-mpich-notc", None)]:
            rows.append((f"{by[k].label} / hydra", "wall", ratio(k, "hydra", "wall"), *(le(tgt) if tgt else ("", None))))
            rows.append((f"{by[k].label} / hydra", "CPU", ratio(k, "hydra", "cpu"), "", None))
        rows.append((f"{by['j-mpich'].label} / {by['j-mpich-noucx'].label}", "wall", ratio("j-mpich", "j-mpich-noucx", "wall"), "", None))
        rows.append((f"{by['j-mpich'].label} / {by['j-mpich-noucx'].label}", "CPU", ratio("j-mpich", "j-mpich-noucx", "cpu"), "", None))
        rows.append((f"{by['hydra-ucx'].label} / hydra", "wall", ratio("hydra-ucx", "hydra", "wall"), "", None))
        for k in ["single-ucx", "j1-mpich", "j1-mpich-noucx", "j1-mpich-notc"]:
            rows.append((f"{by[k].label} / singleton", "wall", ratio(k, "single", "wall"), "", None))
            rows.append((f"{by[k].label} / singleton", "CPU", ratio(k, "single", "cpu"), "", None))
    if "mpirun" in by:
        for k, tgt in [("j-ompi", 0.35), ("j-ompi-notc", 0.8), ("j-ompi-nosn", 0.8)]:
            rows.append((f"{by[k].label} / mpirun", "wall", ratio(k, "mpirun", "wall"), *le(tgt)))
            rows.append((f"{by[k].label} / mpirun", "CPU", ratio(k, "mpirun", "cpu"), "", None))
    for k, base in [("true", "true-none"), ("sh", "sh-none")]:
        rows.append((f"{by[k].label} / --mpi=none", "wall", ratio(k, base, "wall"), *le(1.1)))
        rows.append((f"{by[k].label} / --mpi=none", "CPU", ratio(k, base, "cpu"), "", None))
    print()
    print(f"{'ratio':<72} {'metric':<6} {'value':>7} {'target':>7}  met")
    for name, metric, val, tgt, ok in rows:
        met = "" if ok is None or val is None else ("yes" if ok(val) else "NOT MET")
        print(f"{name:<72} {metric:<6} {fmt_ratio(val):>7} {tgt:>7}  {met}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
