"""The front (src/front): `jiffy` runs the common launch itself and hands
everything else to jiffy-launch, before the job (same arguments) or during it
(same process: the ranks, the daemon connection and the PMI channels carry
over). Which program supervises a rank is visible to the rank as its parent's
executable."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BUILD, wait_until

MPI = BUILD / "mpi"
PARENT = ["sh", "-c", 'readlink /proc/$PPID/exe']
# Where the ranks' variables differ between any two jobs.
PER_JOB = ("JIFFY_JOB_ID", "JIFFY_JOB_TAG", "PMI_FD", "PMIX_NAMESPACE", "PMIX_SERVER_URI41",
           "PMIX_SERVER_URI4", "PMIX_SERVER_URI3", "PMIX_SERVER_URI2", "PMIX_SERVER_URI21")


def supervisor(cp):
    names = {os.path.basename(l.strip()) for l in cp.stdout.splitlines() if l.strip()}
    assert len(names) == 1, cp.stdout
    return names.pop()


def test_plain_job_runs_in_the_front(jx):
    jx.run(["-n", 1, "true"])  # the first launch starts the daemon (through jiffy-launch)
    cp = jx.run(["-n", 2] + PARENT)
    assert cp.returncode == 0, cp.stderr
    assert supervisor(cp) == "jiffy"
    cp = jx.run(["-np", 1] + PARENT)
    assert supervisor(cp) == "jiffy"


@pytest.mark.parametrize("args,env", [
    (["-l", "-n", 1], {}),                      # an option the front leaves alone
    (["-n", 1], {"JIFFY_FAST": "0"}),           # the opt-out
])
def test_other_launches_go_to_jiffy_launch(jx, args, env):
    cp = jx.run(args + PARENT, env=env)
    assert cp.returncode == 0, cp.stderr
    out = cp.stdout.replace("[0] ", "")
    assert {os.path.basename(l) for l in out.split()} == {"jiffy-launch"}, cp.stdout


@pytest.mark.parametrize("value", ["0", "1", ""])
def test_topology_cache_setting_stays_in_the_front(jx, value):
    jx.run(["-n", 1, "true"])
    assert supervisor(jx.run(["-n", 1] + PARENT, env={"JIFFY_TOPOLOGY_CACHE": value})) == "jiffy"


def test_first_launch_starts_the_daemon_through_jiffy_launch(jx):
    assert jx.daemon_pid() is None
    cp = jx.run(["-n", 1] + PARENT)
    assert cp.returncode == 0, cp.stderr
    assert supervisor(cp) == "jiffy-launch"
    assert supervisor(jx.run(["-n", 1] + PARENT)) == "jiffy"


def rank_environment(jx, env=None):
    cp = jx.run(["-n", 2, "sh", "-c", 'env -0 > "$OUT.$JIFFY_RANK"'], env=env)
    assert cp.returncode == 0, cp.stderr
    ranks = []
    for r in range(2):
        path = Path(env["OUT"] + f".{r}")
        items = [e.split("=", 1) for e in path.read_text().split("\0") if e]
        ranks.append({k: "" if k in PER_JOB else v for k, v in items if k not in ("_", "SHLVL", "PWD", "OUT")})
    return ranks


@pytest.mark.parametrize("extra", [{}, {"JIFFY_TOPOLOGY_CACHE": "0"}, {"HWLOC_THISSYSTEM": "0"},
                                   {"HWLOC_XMLFILE": "/nonexistent.xml"}])
def test_front_gives_ranks_what_jiffy_launch_gives(jx, tmp_path, extra):
    jx.run(["-n", 1, "true"])  # the daemon runs: the next launch is the front's
    base = {"PMI_RANK": "stale", "X_Y": "1", **extra}
    fast = rank_environment(jx, {"OUT": str(tmp_path / "fast"), **base})
    full = rank_environment(jx, {"OUT": str(tmp_path / "full"), "JIFFY_FAST": "0", **base})
    for r in full:
        del r["JIFFY_FAST"]
    assert fast == full
    assert fast[1]["PMI_RANK"] == fast[1]["JIFFY_RANK"] == "1" and fast[1]["X_Y"] == "1"
    # the topology cache is on unless switched off (or the user has an XML)
    assert ("HWLOC_XMLFILE" in fast[0]) == (extra.get("JIFFY_TOPOLOGY_CACHE") != "0"), fast[0]


def test_rank_failure_hands_over_mid_job(jx):
    jx.run(["-n", 1, "true"])
    t0 = time.monotonic()
    cp = jx.run(["-n", 2, "sh", "-c", 'if [ "$JIFFY_RANK" = 1 ]; then exit 3; fi; exec sleep 30'],
                env={"JIFFY_KILL_GRACE": "0.2"})
    assert cp.returncode == 3
    assert time.monotonic() - t0 < 10
    assert "rank 1 (sh, pid " in cp.stderr and "exited with code 3; terminating the other 1 rank" in cp.stderr


def test_rank_zero_done_then_another_fails(jx):
    """Rank 0 exited 0 (reaped by the front later) before rank 1 failed."""
    jx.run(["-n", 1, "true"])
    cp = jx.run(["-n", 3, "sh", "-c", 'case "$JIFFY_RANK" in 0) exit 0;; 1) sleep 0.5; exit 5;; esac; exec sleep 30'],
                env={"JIFFY_KILL_GRACE": "0.2"})
    assert cp.returncode == 5, cp.stderr
    assert "rank 1 (sh, pid " in cp.stderr


def test_signalled_rank(jx):
    jx.run(["-n", 1, "true"])
    cp = jx.run(["-n", 1, "sh", "-c", "kill -SEGV $$"])
    assert cp.returncode == 139
    assert "was killed by signal 11 (SIGSEGV)" in cp.stderr


def test_signal_is_forwarded_after_hand_over(jx, tmp_path):
    jx.run(["-n", 1, "true"])
    flag = tmp_path / "ready"
    p = jx.popen(["-n", 2, "sh", "-c",
                  f'trap "echo got TERM; exit 7" TERM; touch {flag}.$JIFFY_RANK; sleep 30 & wait'])
    wait_until(lambda: all(Path(f"{flag}.{r}").exists() for r in range(2)), 10, what="ranks up")
    assert os.path.basename(os.readlink(f"/proc/{p.pid}/exe")) == "jiffy"
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=20)
    # Both got the forwarded TERM (the first to exit 7 may make jiffy-launch
    # terminate the other with a second one, which the trap also reports).
    assert out.count("got TERM") >= 2, (out, err)
    assert p.returncode == 7, err


def test_mpich_program_is_handed_over(jx):
    """As its ranks start (test_front_timeout.py shows when)."""
    prog = MPI / "hello.mpich"
    if not prog.exists():
        pytest.skip("MPICH test programs not built")
    jx.run(["-n", 1, "true"])
    cp = jx.run(["-n", 2, prog])
    assert cp.returncode == 0, cp.stderr
    assert sorted(cp.stdout.split("\n")[:2]) == ["hello 0 of 2", "hello 1 of 2"]


def test_daemon_death_mid_job_is_survived(jx, tmp_path):
    """A job the daemon granted (the lane off): the front hands over when
    the daemon dies, and jiffy-launch re-attaches to a new one."""
    jx.run(["-n", 1, "true"])
    old = jx.daemon_pid()
    flag, release = tmp_path / "up", tmp_path / "release"
    # The rank runs until the test has seen it re-attached (a fixed
    # lifetime loses that race on a loaded machine).
    p = jx.popen(["-n", 1, "sh", "-c", f"touch {flag}; while [ ! -e {release} ]; do sleep 0.02; done"],
                 env={"JIFFY_LANE": "0"})
    wait_until(flag.exists, 30, what="rank up")
    os.kill(old, signal.SIGKILL)
    # The front hands over; jiffy-launch re-attaches to a new daemon. Until
    # then a status may meet the dying daemon (reset) or show the job as
    # "detached" (recovered from the ledger, its launcher not back yet).
    def reattached():
        cp = jx.run(["status", "--json"])
        if cp.returncode != 0:
            return None
        st = json.loads(cp.stdout)
        return [j for j in st.get("running", []) if j.get("pid") == p.pid and j["state"] in ("running", "granted")]

    wait_until(reattached, 30, 0.05, "the job re-attached")
    assert jx.daemon_pid() not in (None, old)
    release.touch()
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert jx.status()["running"] == []


def test_interrupt_while_queued(jx, tmp_path):
    jx.start_daemon(cores=1)
    flag = tmp_path / "up"
    first = jx.popen(["-n", 1, "sh", "-c", f"touch {flag}; sleep 30"])
    wait_until(flag.exists, 10, what="first job up")
    second = jx.popen(["-n", 1, "true"])
    jx.wait_queued(second.pid)
    second.send_signal(signal.SIGINT)
    second.communicate(timeout=10)
    assert second.returncode == 130
    wait_until(lambda: not jx.status()["queued"], 10, what="request withdrawn")
    first.kill()
    first.communicate(timeout=10)


def test_closed_stdio(jx):
    jx.run(["-n", 1, "true"])
    p = subprocess.run(f'exec 0<&- 2>&-; "{jx.bin}" -n 1 sh -c "echo ok"', shell=True,
                       env=jx._env(), stdout=subprocess.PIPE, timeout=30)
    assert p.returncode == 0
    assert p.stdout == b"ok\n"


def test_bad_hand_over_state_is_an_error(jx):
    # In the environment (the front's way), in argv (an older front's), none.
    for state, argv in (("v=1 daemon=x", []), (None, ["v=1 daemon=x"]), (None, [])):
        env = jx._env({"JIFFY_HANDOFF": state} if state else None, unset=() if state else ("JIFFY_HANDOFF",))
        cp = subprocess.run([str(BUILD / "jiffy-launch"), "--jiffy-handoff", *argv, "-n", "1", "true"],
                            capture_output=True, text=True, env=env, timeout=30)
        assert cp.returncode == 1
        assert cp.stderr.startswith("jiffy: malformed hand-over state"), cp.stderr


def test_front_is_small_and_static():
    """The point of the front: no dynamic loader, no glibc start-up."""
    data = (BUILD / "jiffy").read_bytes()
    if b"musl" not in data and b"MUSL" not in data:
        pytest.skip("front built without musl (no musl-gcc, or a sanitizer build)")
    assert b"/lib64/ld-linux" not in data
    assert len(data) < 1 << 20


def test_wide_job_runs_in_the_front(jx):
    """A grant for hundreds of ranks (a fake 512-core daemon) is read by the front."""
    jx.start_daemon(cores=512)
    cp = jx.run(["-n", 400] + PARENT, timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.count("\n") == 400
    assert supervisor(cp) == "jiffy"


@pytest.mark.parametrize("fast", ["1", "0"])
def test_a_long_wait_in_the_queue_is_not_a_silent_daemon(jx, fast):
    """JIFFY_DAEMON_TIMEOUT bounds the wait for the daemon's first answer,
    never the wait for cores after "queued" (a PETSc suite's 2-rank test
    on 2 busy cores waits longer than 10 s). Both launchers."""
    jx.start_daemon(cores=1)
    holder = jx.popen(["-n", 1, "sleep", "3"], env={"JIFFY_LANE": "0"})
    jx.wait_running(holder.pid)
    t0 = time.monotonic()
    cp = jx.run(["-n", 1, "true"], env={"JIFFY_DAEMON_TIMEOUT": "0.5", "JIFFY_FAST": fast, "JIFFY_LANE": "0"})
    assert cp.returncode == 0, cp.stderr
    assert time.monotonic() - t0 > 1, "it did not wait in the queue"
    assert holder.wait(timeout=30) == 0
