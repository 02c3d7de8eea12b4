#!/usr/bin/python3
"""What the front's hand-over to jiffy-launch costs an MPICH job (PMI-1).

    /usr/bin/python3 bench/front_bench.py [--reps N] [--baseline DIR] [--quick]

The front (src/front) does not speak PMI: an MPICH job is handed over to
jiffy-launch (its ~1 ms glibc start-up) once its ranks run. This measures,
in one run, every command once per round in a shuffled order (so machine
noise hits all of them alike), wall (perf_counter around spawn + wait4) and
CPU (user+sys of the child and everything it reaped, from wait4's rusage) of

  build/mpi/hello.mpich                          the bare singleton (-n 1 only)
  jiffy -n N hello.mpich                         the default (the front, handing over)
  MPIEXEC_TIMEOUT=60 jiffy -n N hello.mpich      as PETSc's harness launches
  JIFFY_FAST=0 jiffy -n N hello.mpich            jiffy-launch from the start
  DIR/jiffy -n N hello.mpich                     another build's front (--baseline:
                                                 a directory holding a jiffy and,
                                                 beside it, its jiffy-launch)
  mpiexec.hydra -n N hello.mpich                 for reference (if installed)

for N = 1 and 2. jiffy's daemon is not a child of the launcher, so its CPU is
read from /proc/<pid>/stat around each jiffy run and reported per launch
("daemon", mean). Every run's stdout is checked: one "hello R of N" line per
rank, exit status 0; anything else aborts the benchmark.

Wall times of hello (50-100 ms here, mostly MPICH's own MPI_Init) are too
noisy on a busy machine to resolve a millisecond, so the benchmark also
measures the quantity itself: build/mpi/pmi_first_answer.mpich
(tests/mpi/pmi_first_answer.c) is an MPICH rank reduced to its first PMI-1
exchange, written at once in main (earlier than any real MPI_Init writes
it: a worst case), which prints how long it waited for the answer. With a
hand-over on the critical path that wait holds jiffy-launch's start-up.
Table 2 gives its median and p90 per launch variant (every rank's wait).

Target (issue 10 item 4): the hand-over costs at most 0.1 ms: the first PMI
answer of the default within 0.1 ms of JIFFY_FAST=0's (no hand-over at all).

Uses its own JIFFY_RUNTIME_DIR (a fresh private directory) and stops its
daemon at the end. Standard library only.
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


class Runner:
    """Runs one command with stdin /dev/null and stdout/stderr in files."""

    def __init__(self, timeout, tmpdir):
        self.timeout = timeout
        self.devnull = os.open(os.devnull, os.O_RDONLY)
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

    def once(self, argv, env):
        """(wall s, cpu s, exit code, stdout, stderr) of one run."""
        os.ftruncate(self.out, 0)
        os.ftruncate(self.err, 0)
        fa = [(os.POSIX_SPAWN_DUP2, self.devnull, 0), (os.POSIX_SPAWN_DUP2, self.out, 1),
              (os.POSIX_SPAWN_DUP2, self.err, 2)]
        t0 = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, env, file_actions=fa, setpgroup=0)
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


def hello_problem(out, n):
    seen = sorted((int(m.group(1)), int(m.group(2))) for m in
                  (HELLO_RE.match(line.strip()) for line in out.splitlines()) if m)
    want = [(r, n) for r in range(n)]
    return None if seen == want else f"expected one 'hello R of {n}' per rank, got {seen}"


def waits_problem(out, n, waits):
    """The probe's output: one wait (microseconds) per rank, kept in waits."""
    try:
        got = [float(x) for x in out.split()]
    except ValueError:
        got = []
    if len(got) != n:
        return f"expected {n} waits, got {out[:200]!r}"
    waits.extend(got)
    return None


class Cmd:
    def __init__(self, key, label, argv, env, n, jiffy, probe=False):
        self.key, self.label, self.argv, self.env, self.n, self.jiffy = key, label, argv, env, n, jiffy
        self.probe = probe
        self.wall, self.cpu, self.dcpu, self.waits = [], [], [], []


def median_ms(xs):
    return statistics.median(xs) * 1000 if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=100, help="runs of each command (default 100)")
    ap.add_argument("--warmup", type=int, default=3, help="unmeasured runs of each command first (default 3)")
    ap.add_argument("--quick", action="store_true", help="reps 20")
    ap.add_argument("--jiffy", help="jiffy binary (default: $JIFFY_BUILD_DIR or <repo>/build/jiffy)")
    ap.add_argument("--baseline", help="a directory with another build's jiffy front (and its jiffy-launch)")
    ap.add_argument("--no-hydra", action="store_true", help="skip mpiexec.hydra")
    ap.add_argument("--timeout", type=float, default=60, help="seconds before one launch counts as hung")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.quick:
        a.reps = 20
    build = Path(os.environ.get("JIFFY_BUILD_DIR") or REPO / "build")
    jiffy = str(Path(a.jiffy).resolve()) if a.jiffy else str((build / "jiffy").resolve())
    hello = str(Path(jiffy).parent / "mpi" / "hello.mpich")
    for f in (jiffy, hello):
        if not os.access(f, os.X_OK):
            sys.exit(f"front_bench: {f} not found (build it or pass --jiffy)")
    hydra = None if a.no_hydra else shutil.which("mpiexec.hydra")

    rdir = tempfile.mkdtemp(prefix="jfbench-", dir="/tmp")
    os.chmod(rdir, 0o700)
    tmp = tempfile.mkdtemp(prefix="jfbench-out-", dir="/tmp")
    env = dict(os.environ)
    for v in list(env):
        if v.startswith(("JIFFY_", "OMPI_", "PMIX_", "HYDRA_", "MPIR_CVAR_", "HWLOC_", "PMI_")) or v == "MPIEXEC_TIMEOUT":
            env.pop(v)
    env["JIFFY_RUNTIME_DIR"] = rdir
    env["XDG_STATE_HOME"] = os.path.join(rdir, "state")

    cmds = [Cmd("single", "hello.mpich (singleton, no launcher)", [hello], env, 1, False)]
    for n in (1, 2):
        cmds += [Cmd(f"front{n}", f"jiffy -n {n} hello.mpich", [jiffy, "-n", str(n), hello], env, n, True),
                 Cmd(f"timeout{n}", f"MPIEXEC_TIMEOUT=60 jiffy -n {n} hello.mpich", [jiffy, "-n", str(n), hello],
                     dict(env, MPIEXEC_TIMEOUT="60"), n, True),
                 Cmd(f"nofront{n}", f"JIFFY_FAST=0 jiffy -n {n} hello.mpich", [jiffy, "-n", str(n), hello],
                     dict(env, JIFFY_FAST="0"), n, True)]
        if a.baseline:
            base = str(Path(a.baseline, "jiffy").resolve())
            cmds.append(Cmd(f"base{n}", f"baseline jiffy -n {n} hello.mpich", [base, "-n", str(n), hello], env, n,
                            True))
        if hydra:
            cmds.append(Cmd(f"hydra{n}", f"mpiexec.hydra -n {n} hello.mpich", [hydra, "-n", str(n), hello], env, n,
                            False))
    # The probe: an MPICH rank reduced to its first PMI exchange.
    probe = str(Path(jiffy).parent / "mpi" / "pmi_first_answer.mpich")
    if os.access(probe, os.X_OK):
        variants = [("front", "jiffy", [jiffy], env), ("timeout", "MPIEXEC_TIMEOUT=60 jiffy", [jiffy],
                                                         dict(env, MPIEXEC_TIMEOUT="60")),
                    ("nofront", "JIFFY_FAST=0 jiffy", [jiffy], dict(env, JIFFY_FAST="0"))]
        if a.baseline:
            variants.append(("base", "baseline jiffy", [str(Path(a.baseline, "jiffy").resolve())], env))
        for n in (1, 2):
            for key, label, argv, e in variants:
                cmds.append(Cmd(f"probe-{key}{n}", f"{label} -n {n} pmi_first_answer", argv + ["-n", str(n), probe],
                                e, n, True, probe=True))
    else:
        print(f"front_bench: {probe} not built: no first-PMI-answer probe", file=sys.stderr)
    r = Runner(a.timeout, tmp)
    load0 = os.getloadavg()
    dpid = None

    def run(c, measure):
        d0 = proc_cpu(dpid) if (measure and c.jiffy and dpid) else None
        w, cpu, rc, out, err = r.once(c.argv, c.env)
        d1 = proc_cpu(dpid) if d0 is not None else None
        problem = (f"exit status {rc}" if rc != 0 else
                   waits_problem(out, c.n, c.waits if measure else []) if c.probe else hello_problem(out, c.n))
        if problem:
            raise BenchError(f"{c.label}: {problem}\n  stderr: {err.decode(errors='replace')[-1500:]!r}")
        if measure:
            c.wall.append(w)
            c.cpu.append(cpu)
            if d0 is not None and d1 is not None:
                c.dcpu.append(d1 - d0)

    t0 = time.monotonic()
    try:
        for _ in range(a.warmup):
            for c in cmds:
                run(c, False)
        dpid = daemon_pid(jiffy, env)
        rnd = random.Random(a.seed)
        for _ in range(a.reps):
            order = list(cmds)
            rnd.shuffle(order)
            for c in order:
                run(c, True)
    except (BenchError, OSError) as e:
        print(f"front_bench: ABORTED: {e}", file=sys.stderr)
        return 1
    finally:
        subprocess.run([jiffy, "stop"], env=env, capture_output=True, timeout=30)
        shutil.rmtree(rdir, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    load1 = os.getloadavg()

    print(f"jiffy: {jiffy}" + (f"; baseline: {a.baseline}" if a.baseline else ""))
    print(f"machine: {os.cpu_count()} CPUs; load average {load0[0]:.2f} at start, {load1[0]:.2f} at end; "
          f"{time.monotonic() - t0:.0f} s; {a.reps} runs of each command, interleaved")
    print(f"{'command':<48} {'wall ms':>8} {'p10':>7} {'p90':>7} {'CPU ms':>7} {'daemon':>7}")
    for c in (c for c in cmds if not c.probe):
        q = statistics.quantiles(c.wall, n=10) if len(c.wall) >= 2 else [c.wall[0]] * 9
        dm = f"{statistics.mean(c.dcpu) * 1000:7.2f}" if c.dcpu else f"{'':7}"
        print(f"{c.label:<48} {median_ms(c.wall):8.2f} {q[0] * 1000:7.2f} {q[-1] * 1000:7.2f} "
              f"{median_ms(c.cpu):7.2f} {dm}")
    probes = [c for c in cmds if c.probe]
    if probes:
        print()
        print("A rank's wait for its first PMI-1 answer (every rank of every run)")
        print(f"{'command':<48} {'wait us':>8} {'p90':>7} {'wall ms':>8} {'CPU ms':>7}")
        for c in probes:
            p90 = statistics.quantiles(c.waits, n=10)[-1] if len(c.waits) >= 2 else c.waits[0]
            print(f"{c.label:<48} {statistics.median(c.waits):8.1f} {p90:7.1f} {median_ms(c.wall):8.2f} "
                  f"{median_ms(c.cpu):7.2f}")
    by = {c.key: c for c in cmds}
    print()
    for n in (1, 2):
        f, nf = median_ms(by[f"front{n}"].wall), median_ms(by[f"nofront{n}"].wall)
        t = median_ms(by[f"timeout{n}"].wall)
        line = f"-n {n}: default - JIFFY_FAST=0 = {f - nf:+.2f} ms; MPIEXEC_TIMEOUT=60 - default = {t - f:+.2f} ms"
        if n == 1:
            line += f"; default / singleton = {f / median_ms(by['single'].wall):.2f}x"
        if a.baseline:
            line += f"; default - baseline = {f - median_ms(by[f'base{n}'].wall):+.2f} ms"
        if f"probe-front{n}" in by:
            w = {k: statistics.median(by[f"probe-{k}{n}"].waits) for k in ("front", "nofront")}
            d = (w["front"] - w["nofront"]) / 1000
            line += f"; first PMI answer: default - JIFFY_FAST=0 = {d:+.3f} ms (target <= 0.1 ms: " \
                    f"{'met' if d <= 0.1 else 'NOT MET'})"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
