"""MPI_Comm_spawn under jiffy (issue 11, docs/spawn.md).

Real Open MPI programs (tests/mpi/spawn.c, spawn_other.c), mpi4py on
Debian's python3-mpi4py, and a scripted PMI-1 client for the MPICH side
(Debian's MPICH cannot spawn: tests/e2e/pmi1_spawn_client.py). Most tests
run on a hand-started daemon with more (fake) cores than the machine has,
so that spawns fit; those that read affinities run on the real machine.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import pid_alive, wait_until
from test_mpi import job_dirs, lines, mx, prog  # noqa: F401  (mx is a fixture)

HERE = Path(__file__).resolve().parent
PMI1_CLIENT = str(HERE / "pmi1_spawn_client.py")
MPI4PY_SCRIPT = str(HERE / "spawn_mpi4py.py")
SYSTEM_PYTHON = "/usr/bin/python3"

WORKER_RE = re.compile(r"^worker (\d+)/(\d+) appnum (\d+) pid (\d+)$")
CPUS_RE = re.compile(r"^(parent|worker) (\d+) pid (\d+) cpus ([\d,]+)$")


def workers(out):
    return [tuple(int(x) for x in m.groups()) for m in map(WORKER_RE.match, lines(out)) if m]


def cpus_of(out):
    """{pid: set of cpus} of every process that reported its affinity."""
    got = {}
    for m in map(CPUS_RE.match, lines(out)):
        if m:
            got[int(m.group(3))] = {int(c) for c in m.group(4).split(",")}
    return got


@pytest.fixture
def big(mx):
    """mx with a daemon of 8 (fake) cores: room for the spawns."""
    mx.start_daemon(cores=8)
    return mx


def spawn_prog():
    prog("spawn_other", "openmpi")
    return prog("spawn", "openmpi")


def test_spawn_one_worker_on_its_own_core(mx):
    cp = mx.run(["-n", 1, spawn_prog(), "parent", 1], timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert "spawned 1 ok" in lines(cp.stdout)
    (w,) = workers(cp.stdout)
    assert w[:3] == (0, 1, 0)
    cpus = cpus_of(cp.stdout)
    assert len(cpus) == 2 and not set.intersection(*cpus.values()), cpus


def test_spawn_several_workers_that_report_back(big):
    cp = big.run(["-n", 2, spawn_prog(), "parent", 3], timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert "spawned 3 ok" in lines(cp.stdout)
    assert sorted(w[:3] for w in workers(cp.stdout)) == [(0, 3, 0), (1, 3, 0), (2, 3, 0)]


def test_concurrent_spawns_on_comm_self(big):
    cp = big.run(["-n", 2, spawn_prog(), "self", 1], timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert {"rank 0 spawned 1 ok", "rank 1 spawned 1 ok"} <= set(lines(cp.stdout))
    assert [w[:3] for w in workers(cp.stdout)] == [(0, 1, 0), (0, 1, 0)]


def test_spawn_multiple_gives_each_program_its_appnum(big):
    cp = big.run(["-n", 1, spawn_prog(), "multiple"], timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert "multiple ok" in lines(cp.stdout)
    assert sorted(w[:3] for w in workers(cp.stdout)) == [(0, 3, 0), (1, 3, 1), (2, 3, 1)]


def test_nested_spawn(big):
    cp = big.run(["-n", 1, spawn_prog(), "nested"], timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert "nested ok" in lines(cp.stdout)
    assert len(workers(cp.stdout)) == 2  # the grand-worker reported to the worker, the worker to us


def test_spawn_of_a_missing_program_fails_the_call_cleanly(big):
    cp = big.run(["-n", 1, spawn_prog(), "missing"], timeout=60)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert lines(cp.stdout).count("spawn failed: class 50") == 2, cp.stdout  # MPI_ERR_SPAWN
    assert "/nonexistent/program: No such file or directory" in cp.stderr
    assert "no-such-program-on-path: command not found" in cp.stderr


def test_a_failing_worker_fails_the_job(big):
    cp = big.run(["-n", 1, spawn_prog(), "fail", 3], timeout=60)
    assert cp.returncode == 3, cp.stderr
    assert "spawned rank 0 of world 1" in cp.stderr and "exited with code 3" in cp.stderr


def test_a_spawn_that_can_never_fit_fails_at_once(mx):
    # Two ranks hold both cores of the machine and wait in the spawn: the
    # worker's core could never come, so the call fails instead of hanging.
    t = time.monotonic()
    cp = mx.run(["-n", 2, spawn_prog(), "parent", 1], timeout=60)
    assert cp.returncode != 0
    assert "needs 1 more core slot" in cp.stderr and "hold 2 of the 2 slots" in cp.stderr, cp.stderr
    assert time.monotonic() - t < 30


def test_a_spawn_waits_for_a_full_machine_then_runs_on_a_free_core(mx):
    holder = mx.popen(["-n", 1, "sleep", "60"])
    mx.wait_running(holder.pid)
    parent = mx.popen(["-n", 1, spawn_prog(), "parent", 1])

    def spawn_queued():
        st = json.loads(mx.run(["status", "--json"]).stdout)
        return any(j.get("parent") for j in st["queued"])
    wait_until(spawn_queued, 30, what="the spawn's cores to queue behind the sleeper")
    holder_cores = {c for j in json.loads(mx.run(["status", "--json"]).stdout)["running"]
                    if "sleep" in j["command"] for c in j["cores"]}
    holder.send_signal(signal.SIGTERM)
    holder.wait(timeout=30)
    out, err = parent.communicate(timeout=60)
    assert parent.returncode == 0, err
    assert "spawned 1 ok" in lines(out)
    cpus = cpus_of(out)
    assert len(cpus) == 2 and not set.intersection(*cpus.values()), cpus
    assert holder_cores, "the sleeper held a core"


def read_worker_pids(p, n):
    pids = []
    while len(pids) < n:
        line = p.stdout.readline()
        assert line, "the job ended before its workers started"
        m = re.match(r"^worker pid (\d+)$", line.strip())
        if m:
            pids.append(int(m.group(1)))
    return pids


def kill_and_settle(jx, p):
    """SIGKILLs launcher p; waits until the daemon has every core back and
    the job's directory is gone (both once nothing of the family runs)."""
    p.kill()
    p.wait(timeout=10)
    wait_until(lambda: not json.loads(jx.run(["status", "--json"]).stdout)["running"], 15,
               what="every core back")
    wait_until(lambda: not job_dirs(jx.tmpdir), 15, what="the job directory to go")


def test_a_killed_launcher_leaves_no_spawned_rank(big):
    p = big.popen(["-n", 1, spawn_prog(), "hold", 60, 2], stdout=subprocess.PIPE, text=True)
    pids = read_worker_pids(p, 2)
    kill_and_settle(big, p)
    assert not any(pid_alive(x) for x in pids)


def test_the_timeout_covers_spawned_ranks(big):
    p = big.popen(["-timeout", 3, "-n", 1, spawn_prog(), "hold", 60, 1], stdout=subprocess.PIPE, text=True)
    pids = read_worker_pids(p, 1)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 255 and "APPLICATION TIMED OUT" in err, err
    wait_until(lambda: not any(pid_alive(x) for x in pids), 15, what="the spawned rank to die")


def test_status_shows_the_spawned_ranks_under_their_job(big):
    p = big.popen(["-n", 1, spawn_prog(), "hold", 60, 2], stdout=subprocess.PIPE, text=True)
    try:
        read_worker_pids(p, 2)
        st = json.loads(big.run(["status", "--json"]).stdout)
        parents = [j for j in st["running"] if not j["parent"]]
        subs = [j for j in st["running"] if j["parent"]]
        assert len(parents) == 1 and len(subs) == 1, st["running"]
        assert subs[0]["parent"] == parents[0]["job"] and subs[0]["ntasks"] == 2
        assert not set(subs[0]["cores"]) & set(parents[0]["cores"])
        text = lines(big.run(["status"]).stdout)
        at = next(i for i, l in enumerate(text) if l.startswith(f"  job {parents[0]['job']} "))
        assert text[at + 1].startswith(f"    spawned: job {subs[0]['job']} "), text
    finally:
        kill_and_settle(big, p)  # the spawn's cores come back with the job's


def have_mpi4py():
    return os.access(SYSTEM_PYTHON, os.X_OK) and subprocess.run(
        [SYSTEM_PYTHON, "-c", "import mpi4py.MPI"], capture_output=True).returncode == 0


@pytest.mark.skipif(not have_mpi4py(), reason="Debian's python3-mpi4py (Open MPI) is not installed")
def test_mpi4py_comm_self_spawn(big):
    cp = big.run(["-n", 1, SYSTEM_PYTHON, MPI4PY_SCRIPT, 2], timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert lines(cp.stdout) == ["mpi4py got [(0, 2), (1, 2)]"], cp.stdout


def test_debian_mpich_cannot_spawn_and_does_not_hang(mx):
    # MPICH 4.0.2 ch4:ucx has no MPI_Open_port: the spawn fails in the
    # library before it asks anyone (under hydra too).
    cp = mx.run(["-n", 1, prog("spawn", "mpich"), "parent", 1], timeout=60)
    assert cp.returncode != 0
    assert "spawned 1 ok" not in cp.stdout


# --- PMI-1 (a scripted MPICH rank) -------------------------------------------

def pmi1(big, mode):
    return big.run(["--mpi=pmi1", "-n", 1, SYSTEM_PYTHON, PMI1_CLIENT, mode], timeout=60)


def test_pmi1_spawn_multiple_makes_one_world_with_the_parent_port(big):
    cp = pmi1(big, "parent")
    assert cp.returncode == 0, cp.stderr
    out = lines(cp.stdout)
    assert "spawn rc 0" in out, out
    children = sorted(l for l in out if l.startswith("child "))
    port = "tag#0$connentry#0123$"
    assert children == [
        f"child rank 0 size 2 appnum 0 port {port} cwd {os.getcwd()} args ['child', 'has space=eq']",
        f"child rank 1 size 2 appnum 1 port {port} cwd /tmp args ['child']",
    ], out


def test_pmi1_spawn_of_a_missing_program_answers_minus_one(big):
    cp = pmi1(big, "missing")
    assert cp.returncode == 0, cp.stderr
    assert "spawn rc -1 msg /nonexistent/program:_No_such_file_or_directory" in lines(cp.stdout)


def test_pmi1_nested_spawn(big):
    cp = pmi1(big, "nest")
    assert cp.returncode == 0, cp.stderr
    out = lines(cp.stdout)
    assert "spawn rc 0" in out and "nested spawn rc 0" in out, out
    assert sum(l.startswith("child rank 0 size 1") for l in out) == 2, out


def test_spawned_ranks_get_gpus_like_the_job(mx):
    mx.start_daemon(cores=8, gpus=4)
    p = mx.popen(["-g", 1, "-n", 1, spawn_prog(), "hold", 60, 2], stdout=subprocess.PIPE, text=True)
    try:
        read_worker_pids(p, 2)
        st = json.loads(mx.run(["status", "--json"]).stdout)
        (parent,) = [j for j in st["running"] if not j["parent"]]
        (sub,) = [j for j in st["running"] if j["parent"]]
        assert len(parent["gpus"]) == 1 and len(sub["gpus"]) == 2, st["running"]
        assert not set(parent["gpus"]) & set(sub["gpus"])
    finally:
        kill_and_settle(mx, p)
