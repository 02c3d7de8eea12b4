"""The front (src/front) runs launches with a timeout (MPIEXEC_TIMEOUT, as
PETSc's harness sets on every launch, or -timeout N) itself: its poll loop
waits for the deadline, and when it comes the front hands the job to
jiffy-launch, which times it out at once, as its own. Every hand-over
carries the deadline (launch/handoff.h "deadline="), so a job handed over
mid-way keeps it. MPICH jobs are handed over as their ranks start, with the
deadline too."""

import os
import signal
import threading
import time

import pytest

from conftest import BUILD, wait_until
from test_history_records import one_record, warm

MPI = BUILD / "mpi"
PARENT = ["sh", "-c", 'readlink /proc/$PPID/exe']


def supervisor(cp):
    names = {os.path.basename(l.strip()) for l in cp.stdout.splitlines() if l.strip()}
    assert len(names) == 1, cp.stdout
    return names.pop()


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def exe_name(pid):
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return None


class Stalls:
    """Time the whole machine stood still while the test watched (a thread
    that sleeps 10 ms at a time sees the rest). Shared test VMs freeze every
    process, now and then, for up to ~15 s; an upper bound on how late a
    timeout fires must not count that."""

    def __init__(self):
        self.total = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self):
        last = time.monotonic()
        while not self._stop.wait(0.01):
            now = time.monotonic()
            if now - last > 0.1:
                self.total += now - last - 0.01
            last = now

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.total


def wait_ranks(p, n, exe):
    """Waits until launcher p has n children running exe; returns when it
    saw them (monotonic): after the ranks' spawn, where the timeout starts.
    Timeouts below are bounded from the launch's start (not earlier than
    its timeout) and from this moment (not much later, Stalls deducted), so
    that a slow grant on a loaded machine does not count."""
    def up():
        assert p.poll() is None, f"the job ended early: {p.communicate()}"
        kids = children(p.pid)
        return len(kids) == n and all(exe_name(k) == exe for k in kids)
    wait_until(up, 30, 0.01, f"{n} ranks running {exe}")
    return time.monotonic()


def mpich(name):
    p = MPI / f"{name}.mpich"
    if not p.exists():
        pytest.skip("MPICH test programs not built")
    return p


@pytest.mark.parametrize("args,env", [
    (["-n", 2], {"MPIEXEC_TIMEOUT": "60"}),
    (["-n", 2], {"MPIEXEC_TIMEOUT": "0"}),          # 0: no timeout
    (["-n", 2], {"MPIEXEC_TIMEOUT": ""}),           # empty: unset
    (["-n", 2], {"MPIEXEC_TIMEOUT": "00012.50"}),
    (["-timeout", 60, "-n", 2], {}),
    (["--timeout", 60, "-np", 2], {}),
    (["-timeout=60", "-n", 2], {}),
    (["--timeout=.5", "-n", 2], {}),
    (["-n", 2, "-timeout", 60], {}),
    (["-timeout", 60, "-n", 2], {"MPIEXEC_TIMEOUT": "junk"}),  # the option wins, the variable is not read
])
def test_timeout_launch_stays_in_the_front(jx, args, env):
    jx.run(["-n", 1, "true"])  # the daemon runs: the next launch is the front's
    cp = jx.run(args + PARENT, env=env)
    assert cp.returncode == 0, cp.stderr
    assert supervisor(cp) == "jiffy"


@pytest.mark.parametrize("args,env", [
    (["-n", 1], {"MPIEXEC_TIMEOUT": "-0"}),              # jiffy-launch reads it as 0
    (["-n", 1], {"MPIEXEC_TIMEOUT": "12345678901"}),     # beyond what the front reads
    (["-timeout", 5, "-timeout", 6, "-n", 1], {}),       # twice: the last wins
])
def test_timeouts_the_front_does_not_read_go_to_jiffy_launch(jx, args, env):
    jx.run(["-n", 1, "true"])
    cp = jx.run(args + PARENT, env=env)
    assert cp.returncode == 0, cp.stderr
    assert supervisor(cp) == "jiffy-launch"


@pytest.mark.parametrize("value", ["abc", "1e3", "-1", "+1", " 1", "inf", "1.5.2", "."])
def test_bad_timeout_is_jiffy_launchs_error(jx, value):
    jx.run(["-n", 1, "true"])
    cp = jx.run(["-n", 1, "true"], env={"MPIEXEC_TIMEOUT": value})
    assert cp.returncode == 1, cp.stderr
    assert cp.stderr == f"jiffy: MPIEXEC_TIMEOUT: expected a number of seconds, got '{value}'\n"
    cp = jx.run(["-timeout", value, "-n", 1, "true"])
    assert cp.returncode == 1, cp.stderr
    assert cp.stderr == f"jiffy: -timeout: expected a number of seconds, got '{value}'\n"


@pytest.mark.parametrize("how", ["env", "-timeout", "-n first"])
def test_job_that_outlives_its_timeout(jx, how):
    """Timed out 1 s after the start by the front's deadline: exit 255,
    jiffy-launch's message, the history's outcome "timeout"."""
    before = warm(jx)
    job = ["sleep", 30]
    args, env = {"env": (["-n", 2] + job, {"MPIEXEC_TIMEOUT": "1"}),
                 "-timeout": (["-timeout", 1, "-n", 2] + job, None),
                 "-n first": (["-n", 2, "--timeout=1"] + job, None)}[how]
    stalls = Stalls()
    t0 = time.monotonic()
    p = jx.popen(args, env=env)
    up = wait_ranks(p, 2, "sleep")
    # While it runs the front supervises it (no hand-over before the deadline).
    assert exe_name(p.pid) == "jiffy"
    out, err = p.communicate(timeout=30)
    end, stalled = time.monotonic(), stalls.stop()
    assert p.returncode == 255, err
    assert "jiffy: APPLICATION TIMED OUT after 1 s (job " in err, err
    assert end - t0 >= 1.0 and end - stalled - up < 2.0, (end - t0, end - up, stalled)
    rec = one_record(jx, before)
    assert rec["outcome"] == "timeout" and rec["timed_out"] and rec["exit_code"] == 255, rec
    assert rec["handed_over"], rec
    assert rec["run_s"] >= 0.99, rec


def test_job_handed_over_mid_way_keeps_its_deadline(jx):
    """A signal for the launcher hands the job over 1 s into a 2 s timeout:
    jiffy-launch times it out 2 s after the start, not 2 s after the
    hand-over."""
    jx.run(["-n", 1, "true"])
    stalls = Stalls()
    t0 = time.monotonic()
    p = jx.popen(["-n", 2, "sh", "-c", 'trap "" USR1; exec sleep 30'],
                 env={"MPIEXEC_TIMEOUT": "2", "JIFFY_KILL_GRACE": "0.2"})
    up = wait_ranks(p, 2, "sleep")
    wait_until(lambda: time.monotonic() - up >= 1.0, 5, what="1 s into the job")
    assert exe_name(p.pid) == "jiffy"
    p.send_signal(signal.SIGUSR1)  # forwarded by jiffy-launch; sleep ignores it (inherited)
    wait_until(lambda: exe_name(p.pid) == "jiffy-launch", 5, what="the hand-over")
    out, err = p.communicate(timeout=30)
    end, stalled = time.monotonic(), stalls.stop()
    assert p.returncode == 255, err
    assert "APPLICATION TIMED OUT after 2 s" in err, err
    # A fresh timeout at the hand-over would end it 3 s after `up` or later.
    assert end - t0 >= 2.0 and end - stalled - up < 2.8, (end - t0, end - up, stalled)


def test_lane_off_timeout_in_the_front(jx):
    """A granted (not lent) launch keeps the timeout in the front too."""
    jx.run(["-n", 1, "true"])
    stalls = Stalls()
    t0 = time.monotonic()
    p = jx.popen(["-n", 1, "sleep", 30],
                 env={"MPIEXEC_TIMEOUT": "1", "JIFFY_LANE": "0"})
    up = wait_ranks(p, 1, "sleep")
    assert exe_name(p.pid) == "jiffy"
    out, err = p.communicate(timeout=30)
    end, stalled = time.monotonic(), stalls.stop()
    assert p.returncode == 255, err
    assert "APPLICATION TIMED OUT after 1 s" in err
    assert end - t0 >= 1.0 and end - stalled - up < 2.0, (end - t0, end - up, stalled)
    wait_until(lambda: not jx.status()["running"], 10, what="the job released")


# --------------------------------------------------------------------------
# MPICH programs: handed over as their ranks start


@pytest.mark.parametrize("env", [{}, {"MPIEXEC_TIMEOUT": "60"}])
@pytest.mark.parametrize("n", [1, 2])
def test_mpich_hello(jx, n, env):
    hello = mpich("hello")
    jx.run(["-n", 1, "true"])
    cp = jx.run(["-n", n, hello], env=env, timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert sorted(cp.stdout.splitlines()) == [f"hello {r} of {n}" for r in range(n)], cp.stdout
    assert cp.stderr == "", cp.stderr


@pytest.mark.parametrize("env", [{}, {"MPIEXEC_TIMEOUT": "60"}])
def test_mpich_abort_and_missing_finalize(jx, env):
    jx.run(["-n", 1, "true"])
    cp = jx.run(["-n", 2, mpich("abort")], env=env, timeout=60)
    assert cp.returncode == 7, cp.stderr
    assert "called MPI_Abort with code 7" in cp.stderr, cp.stderr
    cp = jx.run(["-n", 2, mpich("nofinalize")], env=env, timeout=60)
    assert cp.returncode != 0, cp.stderr
    assert "without calling MPI_Finalize" in cp.stderr, cp.stderr


def test_mpich_job_that_outlives_its_timeout(jx):
    """Handed over at its start, the job keeps the front's deadline."""
    loop = mpich("allreduce_loop")
    before = warm(jx)
    stalls = Stalls()
    t0 = time.monotonic()
    p = jx.popen(["-n", 2, loop, 10 ** 9], env={"MPIEXEC_TIMEOUT": "1"})
    up = wait_ranks(p, 2, loop.name)
    out, err = p.communicate(timeout=60)
    end, stalled = time.monotonic(), stalls.stop()
    assert p.returncode == 255, err
    assert "APPLICATION TIMED OUT after 1 s" in err
    assert end - t0 >= 1.0 and end - stalled - up < 2.0, (end - t0, end - up, stalled)
    rec = one_record(jx, before)
    assert rec["outcome"] == "timeout" and rec["handed_over"], rec


def test_mpich_job_is_handed_over_as_its_ranks_start(jx):
    """jiffy-launch, which serves PMI-1, supervises an MPICH rank before the
    rank's first PMI write: its start-up overlaps the rank's own."""
    probe = mpich("pmi_first_answer")
    jx.run(["-n", 1, "true"])
    cp = jx.run(["-n", 1, probe, "parent"], timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == "jiffy-launch\n"
    cp = jx.run(["-n", 2, probe], timeout=60)  # each rank's first PMI answer, in microseconds
    assert cp.returncode == 0, cp.stderr
    assert len(cp.stdout.split()) == 2, cp.stdout
