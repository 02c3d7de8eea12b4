"""Shared fixtures and helpers for jiffy's end-to-end tests.

Every test gets its own private runtime directory (JIFFY_RUNTIME_DIR) and a
unique marker variable in the environment of everything it starts. At
teardown the fixture stops that directory's daemon and checks that no process
carrying the marker survives (ranks, their children, daemons).

Run:  /usr/bin/python3 -m pytest tests/e2e            (whole suite)
      /usr/bin/python3 -m pytest tests/e2e -m 'not slow'
Binaries: $JIFFY_BUILD_DIR or <repo>/build (jiffy, jiffyd, test-programs/).
"""

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("JIFFY_BUILD_DIR") or (REPO / "build")).resolve()
JIFFY = BUILD / "jiffy"
JIFFYD = BUILD / "jiffyd"
PROGRAMS = BUILD / "test-programs"
PROBE = PROGRAMS / "probe"

MARKER_VAR = "JIFFY_E2E_MARKER"
# Under scripts/sanitize.sh: memory figures are the sanitizer's (shadow
# memory, quarantine) and a loaded daemon is several times slower, so tests
# of memory bounds and of service under load skip; the plain run has them.
SANITIZED = bool(os.environ.get("ASAN_OPTIONS") or os.environ.get("TSAN_OPTIONS"))
needs_plain_build = pytest.mark.skipif(SANITIZED, reason="memory and load bounds hold for the plain build only")
# Variables of the caller that would change what jiffy does; tests set them
# explicitly where they matter.
SCRUBBED_VARS = (
    "MPIEXEC_TIMEOUT", "CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "ZE_AFFINITY_MASK",
    "HIP_VISIBLE_DEVICES", "JIFFY_GPUS", "JIFFY_JOB_ID", "JIFFY_RANK", "JIFFY_SIZE",
    "JIFFY_CORES", "PMI_FD", "PMI_RANK", "PMI_SIZE", "JIFFY_RUNTIME_DIR", "JIFFY_DAEMON_TIMEOUT",
    "JIFFY_TOPOLOGY_CACHE", "HWLOC_XMLFILE", "HWLOC_THISSYSTEM", "HWLOC_PLUGINS_PATH", "JIFFY_UCX_SHM", "UCX_TLS",
    "UCX_MODULES", "UCX_MM_RX_BUFS_GROW", "PMIX_MCA_gds",
    "JIFFY_SINGLE_NODE_OMPI", "JIFFY_BACKFILL", "JIFFY_BACKFILL_SLACK", "CTEST_RESOURCE_GROUP_COUNT",
)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds; deselect with -m 'not slow'")


def _executable(p: Path) -> bool:
    return p.is_file() and os.access(p, os.X_OK)


@pytest.fixture(scope="session")
def jiffy_bin() -> str:
    if not _executable(JIFFY):
        pytest.skip(f"jiffy binary not built: {JIFFY} (set JIFFY_BUILD_DIR or run cmake --build build)")
    return str(JIFFY)


@pytest.fixture(scope="session")
def probe_bin(jiffy_bin) -> str:
    if not _executable(PROBE):
        pytest.skip(f"test program not built: {PROBE}")
    return str(PROBE)


# --------------------------------------------------------------------------
# processes


def procs_with_marker(marker: str):
    """[(pid, comm, cmdline)] of live (non-zombie) processes whose environ holds marker."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read()
            if needle not in env.split(b"\0"):
                continue
            if proc_state(int(d)) in (None, "Z", "X"):
                continue
            with open(f"/proc/{d}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            found.append((int(d), comm, cmd))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def is_jiffy_server(p) -> bool:
    """Whether a (pid, comm, cmdline) of procs_with_marker is one of the
    long-lived processes a launch may start: a daemon, or the resource set's
    shared PMIx server (launch/pmix_shared.h)."""
    return p[1] == "jiffyd" or (p[1] == "jiffy-pmix" and "--jiffy-pmix-serve" in p[2])


def proc_state(pid: int):
    """The state letter of pid (R, S, Z, ...) or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        return s[s.rindex(")") + 2]
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    return proc_state(pid) not in (None, "Z", "X")


def process_gone(pid: int) -> bool:
    """True once pid is dead with every thread of it: only then are its
    descriptors (and the locks they hold) closed. A zombie leader may wait
    for other threads (the daemon's history thread) still exiting."""
    if not pid_alive(pid):
        try:
            return len(os.listdir(f"/proc/{pid}/task")) <= 1 and proc_state(pid) in (None, "Z", "X")
        except OSError:
            return True
    return False


def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def allowed_cpus():
    return sorted(os.sched_getaffinity(0))


# --------------------------------------------------------------------------
# probe records


def parse_cpu_list(s: str):
    out = set()
    for part in s.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-")
            out.update(range(int(a), int(b) + 1))
        else:
            out.add(int(part))
    return out


def read_record(path) -> dict:
    rec = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if "=" not in line:
                continue
            k, v = line.split("=", 1)
            if k == "signal":  # a rank may record several signals
                rec["signals"] = rec.get("signals", []) + [int(v)]
            rec[k] = v
    return rec


def read_records(directory, tag=None):
    """{tag: {rank: record}} for the probe records in directory."""
    out = {}
    for name in os.listdir(directory):
        t, _, r = name.rpartition(".")
        if not r.isdigit() or (tag is not None and t != tag):
            continue
        out.setdefault(t, {})[int(r)] = read_record(os.path.join(directory, name))
    return out


class JobTrace:
    """One launch as seen by its probe ranks."""

    def __init__(self, tag, ranks: dict, resources=None):
        self.tag = tag
        # a rank terminated before it wrote its start record has no start_ns
        ranks = {r: rec for r, rec in ranks.items() if "start_ns" in rec}
        assert ranks, f"{tag}: no rank started"
        self.ranks = ranks
        starts = [int(r["start_ns"]) for r in ranks.values()]
        ends = [int(r["end_ns"]) for r in ranks.values() if "end_ns" in r]
        self.start = min(starts)
        self.end = max(ends) if ends else None
        self.cores = set()
        for r in ranks.values():
            self.cores |= parse_cpu_list(r.get("cores", ""))
        self.resources = resources if resources is not None else self.cores

    def __repr__(self):
        return f"JobTrace({self.tag}, ranks={sorted(self.ranks)}, cores={sorted(self.cores)}, [{self.start},{self.end}])"


def find_overlaps(traces, key=lambda t: t.resources):
    """Pairs of traces that overlap in time and share a resource."""
    bad = []
    ts = sorted(traces, key=lambda t: t.start)
    for i, a in enumerate(ts):
        for b in ts[i + 1:]:
            if b.start >= a.end:
                break
            shared = set(key(a)) & set(key(b))
            if shared:
                bad.append((a, b, shared))
    return bad


def overlaps_in_time(a, b):
    return a.start < b.end and b.start < a.end



# --------------------------------------------------------------------------
# the per-test jiffy environment


class Jiffy:
    """One isolated jiffy world: runtime dir, environment, helpers to run jiffy."""

    def __init__(self, jiffy_bin: str, runtime_dir: str):
        self.bin = jiffy_bin
        self.runtime_dir = runtime_dir
        self.marker = uuid.uuid4().hex
        env = dict(os.environ)
        for v in SCRUBBED_VARS:
            env.pop(v, None)
        env["JIFFY_RUNTIME_DIR"] = runtime_dir
        # The history database (docs/history.md) of this world, not the user's.
        env["XDG_STATE_HOME"] = os.path.join(runtime_dir, "state")
        env[MARKER_VAR] = self.marker
        # A daemon silent for 10 s (the default) is taken for hung. On a
        # shared CI machine, ten times oversubscribed, a busy one can be:
        # tests of that detector set their own value.
        env["JIFFY_DAEMON_TIMEOUT"] = "60"
        self.env = env
        self.popens = []
        self.daemons = []

    # ---- running jiffy
    def _env(self, env=None, unset=()):
        e = dict(self.env)
        if env:
            e.update(env)
        for k in unset:
            e.pop(k, None)
        return e

    def run(self, args, timeout=30, input=None, env=None, unset=(), cwd=None, stdin=None,
            text=True):
        """Runs `jiffy args...`; returns CompletedProcess (stdout/stderr captured).
        Fails the test (instead of hanging) when it runs past timeout."""
        argv = [self.bin] + [str(a) for a in args]
        kw = {}
        if input is None and stdin is None:
            kw["stdin"] = subprocess.DEVNULL
        elif stdin is not None:
            kw["stdin"] = stdin
        t0 = time.monotonic()
        try:
            cp = subprocess.run(argv, input=input, capture_output=True, text=text, timeout=timeout,
                                env=self._env(env, unset), cwd=cwd, **kw)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"`{' '.join(argv)}` did not finish within {timeout}s; "
                        f"stdout={e.stdout!r} stderr={e.stderr!r}")
        cp.elapsed = time.monotonic() - t0
        return cp

    def popen(self, args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
              env=None, unset=(), text=True, **kw):
        argv = [self.bin] + [str(a) for a in args]
        p = subprocess.Popen(argv, stdout=stdout, stderr=stderr, stdin=stdin, text=text,
                             env=self._env(env, unset), **kw)
        self.popens.append(p)
        return p

    def status(self, timeout=90):
        cp = self.run(["status", "--json"], timeout=timeout)
        assert cp.returncode == 0, f"jiffy status --json failed: rc={cp.returncode} {cp.stderr!r}"
        try:
            return json.loads(cp.stdout)
        except json.JSONDecodeError:
            pytest.fail(f"jiffy status --json printed invalid JSON: {cp.stdout!r}")

    def history(self):
        """Every launch remembered (docs/history.md fields), oldest first, as
        `jiffy history --json` prints them (the daemon ingests its journal
        first when it runs)."""
        cp = self.run(["history", "--json"], timeout=60)
        assert cp.returncode == 0, f"jiffy history --json failed: rc={cp.returncode} {cp.stderr!r}"
        return [json.loads(line) for line in cp.stdout.splitlines() if line.strip()]

    def wait_history(self, n, timeout=10, what=None):
        """Waits until at least n launches are remembered; returns them."""
        return wait_until(lambda: (lambda h: h if len(h) >= n else None)(self.history()), timeout,
                          0.02, what or f"{n} history record(s)")

    def daemon_pid(self):
        st = self.status()
        d = st.get("daemon")
        return d["pid"] if d else None

    def stop(self, timeout=15):
        return self.run(["stop"], timeout=timeout)

    def sockets(self):
        """The daemons' sockets (not the shared PMIx server's, <key>.pmix.sock)."""
        return sorted(str(p) for p in Path(self.runtime_dir).glob("*.sock") if not p.name.endswith(".pmix.sock"))

    def wait_queued(self, pid, timeout=10):
        """Waits until the launcher with this pid is in the queued list."""
        def q():
            st = self.status()
            return [j for j in st.get("queued", []) if j.get("pid") == pid]
        return wait_until(q, timeout, 0.05, f"launcher {pid} to be queued")[0]

    def wait_running(self, pid, timeout=10):
        def q():
            st = self.status()
            return [j for j in st.get("running", []) if j.get("pid") == pid]
        return wait_until(q, timeout, 0.05, f"launcher {pid} to be running")[0]

    # ---- a hand-started daemon
    def start_daemon(self, cores=64, gpus=0, slots_per_core=1, max_oversubscribe=8, extra=(),
                     env=None, timeout=15, idle_timeout=0):
        argv = [self.bin, "daemon", "--cores", str(cores), "--slots-per-core", str(slots_per_core),
                "--foreground", "--idle-timeout", str(idle_timeout),
                "--max-oversubscribe", str(max_oversubscribe)]
        if gpus:
            argv += ["--gpus", str(gpus)]
        argv += list(extra)
        log = open(os.path.join(self.runtime_dir, f"fg-daemon-{len(self.daemons)}.log"), "w")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             env=self._env(env))
        log.close()
        self.daemons.append(p)

        def ready():
            if p.poll() is not None:
                raise AssertionError(f"jiffy daemon exited early with {p.returncode}: "
                                     f"{self.daemon_log(len(self.daemons) - 1)}")
            cp = self.run(["status", "--json"], timeout=5, env=env)
            if cp.returncode != 0:
                return None
            try:
                st = json.loads(cp.stdout)
            except json.JSONDecodeError:
                return None
            return st if st.get("daemon") else None

        st = wait_until(ready, timeout, 0.05, "the hand-started daemon to answer status")
        p.status_at_start = st
        return p

    def daemon_log(self, i=0):
        try:
            with open(os.path.join(self.runtime_dir, f"fg-daemon-{i}.log")) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    # ---- teardown
    def cleanup(self):
        problems = []
        for p in self.popens:
            if p.poll() is None:
                p.kill()
            try:
                p.communicate(timeout=10)
            except Exception:  # noqa: BLE001
                pass
        try:
            cp = subprocess.run([self.bin, "stop"], env=self.env, capture_output=True, text=True,
                                timeout=15, stdin=subprocess.DEVNULL)
            if cp.returncode != 0:
                problems.append(f"`jiffy stop` exited {cp.returncode}: {cp.stderr.strip()}")
        except subprocess.TimeoutExpired:
            problems.append("`jiffy stop` hung for 15 s")
        for i, d in enumerate(self.daemons):
            try:
                d.wait(timeout=10)
            except subprocess.TimeoutExpired:
                problems.append(f"hand-started daemon pid {d.pid} still running 10 s after `jiffy stop`")
                d.kill()
                d.wait()
        strays = []
        deadline = time.monotonic() + 5
        while True:
            strays = procs_with_marker(self.marker)
            if not strays or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for pid, _, _ in strays:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if strays:
            problems.append("stray processes survived the test: " +
                            "; ".join(f"pid {p} [{c}] {cmd}" for p, c, cmd in strays))
        return problems


def make_runtime_dir() -> str:
    # Short path: the daemon's Unix socket lives inside (sun_path is 108 bytes).
    d = tempfile.mkdtemp(prefix="jfe2e-", dir="/tmp")
    os.chmod(d, 0o700)
    return d


@pytest.fixture
def runtime_dir():
    d = make_runtime_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def jx(jiffy_bin, runtime_dir):
    """The test's isolated jiffy world (see class Jiffy)."""
    j = Jiffy(jiffy_bin, runtime_dir)
    yield j
    problems = j.cleanup()
    if problems:
        pytest.fail("teardown: " + " | ".join(problems), pytrace=False)


@pytest.fixture
def run(jx):
    """run(args, timeout=...) -> CompletedProcess of `jiffy args`."""
    return jx.run


@pytest.fixture
def fake_daemon(jx):
    """fake_daemon(cores=64, gpus=4, ...) starts `jiffy daemon` by hand in the
    test's runtime dir with fake resources and waits until it answers."""
    return jx.start_daemon


# --------------------------------------------------------------------------
# concurrency helper


def run_concurrently(n_workers, jobs, worker):
    """Calls worker(job) for every job from n_workers threads; returns results
    in job order; re-raises the first exception."""
    results = [None] * len(jobs)
    errors = []
    idx = iter(range(len(jobs)))
    lock = threading.Lock()

    def loop():
        while True:
            with lock:
                i = next(idx, None)
            if i is None or errors:
                return
            try:
                results[i] = worker(jobs[i])
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
                return

    ts = [threading.Thread(target=loop) for _ in range(n_workers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return results


def one_line_error(cp, what=""):
    """Asserts the CompletedProcess failed with a one-line 'jiffy: ' error."""
    assert cp.returncode != 0, f"{what}: expected failure, got rc 0; stdout={cp.stdout!r}"
    lines = [l for l in cp.stderr.splitlines() if l.strip()]
    assert lines, f"{what}: no error message on stderr"
    assert lines[0].startswith("jiffy: "), f"{what}: error does not start with 'jiffy: ': {cp.stderr!r}"
    assert len(lines) == 1, f"{what}: expected a one-line error, got {cp.stderr!r}"
    return lines[0]


def core_cpu_map(status: dict):
    """{core id: set of OS CPUs} from a `jiffy status --json` object."""
    out = {}
    for c in status["resources"]["cores"]:
        cpus = c["cpus"]
        out[int(c["id"])] = parse_cpu_list(cpus) if isinstance(cpus, str) else {int(x) for x in cpus}
    return out


def _overlap(sets):
    seen = set()
    for x in sets:
        if seen & x:
            return True
        seen |= x
    return False


def check_rank_affinity(rec: dict, cmap: dict, where="", job=None):
    """Asserts the rank's affinity is exactly its granted cores' CPUs; when
    job (all its ranks' records) shows ranks sharing a core and a CPU, all
    of the job's cores' CPUs (each rank may run on the whole grant)."""
    cores = parse_cpu_list(rec.get("cores", ""))
    assert cores, f"{where}: rank {rec.get('rank')} has no JIFFY_CORES"
    want = set()
    for c in cores:
        assert c in cmap, f"{where}: granted core {c} not in the daemon's resources"
        want |= cmap[c]
    if job:
        core_sets = [parse_cpu_list(r.get("cores", "")) for r in job.values()]
        cpu_sets = [set().union(*(cmap[c] for c in cs)) for cs in core_sets]
        if _overlap(core_sets) and _overlap(cpu_sets):
            want = set().union(*cpu_sets)
    got = parse_cpu_list(rec["cpus"])
    assert got == want, (f"{where}: rank {rec.get('rank')} cores {sorted(cores)} should run on CPUs "
                         f"{sorted(want)}, affinity is {sorted(got)}")