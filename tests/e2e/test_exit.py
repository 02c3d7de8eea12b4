"""Exit status aggregation, failure clean-up, timeouts, missing programs."""

import os
import re
import stat
import subprocess
import time

import pytest

from conftest import pid_alive, procs_with_marker, read_records, wait_until


def test_all_ranks_succeed(jx):
    cp = jx.run(["-n", 4, "true"])
    assert cp.returncode == 0, cp.stderr
    assert cp.stderr == ""


def test_rank_exit_code(jx):
    cp = jx.run(["-n", 1, "sh", "-c", "exit 3"])
    assert cp.returncode == 3, cp.stderr


def test_one_rank_exit_code_and_message(jx, probe_bin):
    cp = jx.run(["-n", 2, probe_bin, "exit@1=3"])
    assert cp.returncode == 3, cp.stderr
    lines = [l for l in cp.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, f"one stderr line names the failing rank: {cp.stderr!r}"
    assert re.search(r"rank 1\b", lines[0]), lines[0]


def test_sigsegv_gives_139(jx, probe_bin):
    cp = jx.run(["-n", 2, probe_bin, "segv@1=1", "sleep@1=50"])
    assert cp.returncode == 139, cp.stderr
    assert re.search(r"rank 1\b", cp.stderr), cp.stderr


def test_sigkilled_rank_gives_137(jx):
    cp = jx.run(["-n", 1, "sh", "-c", "kill -9 $$"])
    assert cp.returncode == 137, cp.stderr


def test_failing_rank_terminates_the_rest(jx, probe_bin, tmp_path):
    t0 = time.monotonic()
    cp = jx.run(["-n", 3, probe_bin, f"out={tmp_path}", "tag=f", "exit@0=5", "sleep@0=200",
                 "sleep=100000"], timeout=60)
    took = time.monotonic() - t0
    assert cp.returncode == 5, cp.stderr
    assert took < 10, f"the other ranks should be terminated at once, took {took:.1f}s"
    recs = read_records(tmp_path)["f"]
    for r in (1, 2):
        assert recs[r].get("signal") == "15", f"rank {r} should get SIGTERM: {recs[r]}"
        assert not pid_alive(int(recs[r]["pid"]))


def test_failing_rank_kills_term_ignoring_ranks(jx, probe_bin, tmp_path):
    t0 = time.monotonic()
    cp = jx.run(["-n", 2, probe_bin, f"out={tmp_path}", "tag=k", "exit@0=6", "sleep@0=200",
                 "ignoreterm=1", "sleep=100000"], timeout=60)
    took = time.monotonic() - t0
    assert cp.returncode == 6, cp.stderr
    assert took < 15, f"TERM then KILL after a short grace, took {took:.1f}s"
    rec = read_records(tmp_path)["k"][1]
    assert not pid_alive(int(rec["pid"]))


def test_first_failure_wins_over_terminated_ranks(jx, probe_bin):
    # rank 1 fails; ranks 0 and 2 die of the SIGTERM that follows: the code is rank 1's
    cp = jx.run(["-n", 3, probe_bin, "exit@1=42", "sleep@1=100", "sleep=100000"], timeout=60)
    assert cp.returncode == 42, cp.stderr


def test_failing_rank_kills_rank_children(jx, probe_bin, tmp_path):
    cp = jx.run(["-n", 2, probe_bin, f"out={tmp_path}", "tag=c", "spawn=1", "exit@0=2",
                 "sleep@0=300", "sleep=100000"], timeout=60)
    assert cp.returncode == 2
    recs = read_records(tmp_path)["c"]
    for r, rec in recs.items():
        child = int(rec["child"])
        wait_until(lambda: not pid_alive(child), 5, what=f"rank {r}'s child {child} to die")


# ---------------------------------------------------------------- timeouts


@pytest.mark.parametrize("how", ["-timeout", "--timeout", "env"])
def test_timeout(jx, probe_bin, how):
    args = ["-n", 2, probe_bin, "sleep=100000"]
    env = None
    if how == "env":
        env = {"MPIEXEC_TIMEOUT": "1"}
    else:
        args = [how, 1] + args
    t0 = time.monotonic()
    cp = jx.run(args, env=env, timeout=60)
    took = time.monotonic() - t0
    assert cp.returncode == 255, cp.stderr
    assert "APPLICATION TIMED OUT" in cp.stderr
    assert 0.9 < took < 10, took


def test_timeout_kills_term_ignoring_ranks(jx, probe_bin, tmp_path):
    t0 = time.monotonic()
    cp = jx.run(["-timeout", 1, "-n", 2, probe_bin, f"out={tmp_path}", "tag=t", "ignoreterm=1", "spawn=1",
                 "sleep=100000"], timeout=60)
    assert cp.returncode == 255
    assert "APPLICATION TIMED OUT" in cp.stderr
    assert time.monotonic() - t0 < 15
    for rec in read_records(tmp_path)["t"].values():
        assert not pid_alive(int(rec["pid"]))
        wait_until(lambda: not pid_alive(int(rec["child"])), 5, what="rank child to die")


def test_timeout_not_reached(jx):
    cp = jx.run(["-timeout", 20, "-n", 2, "true"], env={"MPIEXEC_TIMEOUT": "30"})
    assert cp.returncode == 0, cp.stderr
    assert "TIMED OUT" not in cp.stderr


# ---------------------------------------------------------------- missing programs


def _check_127(cp, name):
    assert cp.returncode == 127, f"rc={cp.returncode} stderr={cp.stderr!r}"
    assert name in cp.stderr, cp.stderr
    assert cp.stderr.startswith("jiffy: "), cp.stderr


def test_missing_program_starts_no_daemon(jx, tmp_path):
    notexec = tmp_path / "notexec"
    notexec.write_text("#!/bin/sh\necho hi\n")
    notexec.chmod(0o644)
    cases = [("/nonexistent/prog", "/nonexistent/prog"),
             ("no-such-program-xyzzy", "no-such-program-xyzzy"),
             (str(notexec), "notexec"),
             (str(tmp_path), str(tmp_path))]
    for prog, name in cases:
        cp = jx.run(["-n", 2, prog, "arg"], timeout=10)
        _check_127(cp, name)
        assert cp.elapsed < 3
    # MPMD: the second group's program is missing
    cp = jx.run(["-n", 1, "true", ":", "-n", 1, "/nonexistent/b"], timeout=10)
    _check_127(cp, "/nonexistent/b")
    assert jx.sockets() == [], "a missing program must not start a daemon"
    assert jx.status() == {"daemon": None}


def test_missing_program_does_not_queue(jx, fake_daemon, probe_bin):
    """Reported before any resources are taken: even with every core busy it
    returns at once, and never shows up in the queue."""
    fake_daemon(cores=2)
    busy = jx.popen(["-n", 2, probe_bin, "sleep=60000"])
    jx.wait_running(busy.pid)
    t0 = time.monotonic()
    cp = jx.run(["-n", 1, "/nonexistent/prog"], timeout=20)
    _check_127(cp, "/nonexistent/prog")
    assert time.monotonic() - t0 < 3, "must not wait for cores"
    st = jx.status()
    assert st["queued"] == []
    assert len(st["running"]) == 1
    busy.terminate()
    busy.communicate(timeout=15)


def test_closed_stderr_pipe_does_not_kill_launcher(jx, probe_bin):
    """jiffy's own failure message goes to a pipe nobody reads any more:
    SIGPIPE never kills jiffy, the exit code is still the rank's."""
    p = jx.popen(["-n", 2, probe_bin, "exit@1=3", "sleep@1=300", "sleep=100000"])
    p.stderr.close()
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("jiffy hung")
    assert p.returncode == 3, f"rc {p.returncode} (-13 = killed by SIGPIPE)"
    p.stdout.read()
