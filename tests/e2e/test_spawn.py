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
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import core_cpu_map, pid_alive, procs_with_marker, wait_until
from test_mpi import MPI_DIR, job_dirs, lines, mx, prog  # noqa: F401  (mx is a fixture)

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


def test_spawns_in_turn_on_a_full_machine_reuse_the_last_workers_core(mx):
    # The real machine (2 cores): the parent holds one, each worker the
    # other. A spawn made right after the last worker disconnected must wait
    # for that worker's core (its world is ending), not fail as "never fits".
    cp = mx.run(["-n", 1, spawn_prog(), "loop", 3], timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert "spawned 3 in turn ok" in lines(cp.stdout)
    assert len(workers(cp.stdout)) == 3


def test_spawns_in_turn_with_room(big):
    cp = big.run(["-n", 1, spawn_prog(), "loop", 5], timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert "spawned 5 in turn ok" in lines(cp.stdout)


def test_spawned_ranks_get_the_jobs_cores_per_rank(big):
    p = big.popen(["-c", 2, "-n", 1, spawn_prog(), "hold", 60, 2], stdout=subprocess.PIPE, text=True)
    try:
        read_pids(p, 2)
        st = json.loads(big.run(["status", "--json"]).stdout)
        (sub,) = [j for j in st["running"] if j["parent"]]
        assert len(sub["cores"]) == 4, st["running"]
    finally:
        kill_and_settle(big, p)


def spawned_workers_running(jx):
    """Live processes of this test that are spawn.c workers."""
    return [p for p in procs_with_marker(jx.marker) if re.search(r"spawn\.openmpi worker", p[2])]


def test_a_spawn_waits_for_a_full_machine_then_runs_on_a_free_core(mx):
    # The real machine (2 cores here): a sleeper holds one core, the parent
    # the other; the spawn's core queues until the sleeper ends, and the
    # worker then runs on the sleeper's core, never on the parent's.
    holder = mx.popen(["-n", 1, "sleep", "60"])
    mx.wait_running(holder.pid)
    parent = mx.popen(["-n", 1, spawn_prog(), "parent", 1])

    def spawn_queued():
        st = json.loads(mx.run(["status", "--json"]).stdout)
        return any(j.get("parent") for j in st["queued"])
    wait_until(spawn_queued, 30, what="the spawn's cores to queue behind the sleeper")
    st = json.loads(mx.run(["status", "--json"]).stdout)
    cmap = core_cpu_map(st)
    holder_cpus = set().union(*(cmap[c] for j in st["running"] if "sleep" in j["command"] for c in j["cores"]))
    assert holder_cpus, st["running"]
    assert not spawned_workers_running(mx), "a worker started while the machine was full"
    assert parent.poll() is None, "the parent gave up instead of waiting"
    holder.send_signal(signal.SIGTERM)
    holder.wait(timeout=30)
    out, err = parent.communicate(timeout=60)
    assert parent.returncode == 0, err
    assert "spawned 1 ok" in lines(out)
    cpus = cpus_of(out)
    assert len(cpus) == 2 and not set.intersection(*cpus.values()), cpus
    (w,) = workers(out)
    assert cpus[w[3]] == holder_cpus, (cpus, holder_cpus)  # the core the sleeper gave back


def read_worker_pids(p, n):
    pids = []
    while len(pids) < n:
        line = p.stdout.readline()
        assert line, "the job ended before its workers started"
        m = re.match(r"^worker pid (\d+)$", line.strip())
        if m:
            pids.append(int(m.group(1)))
    return pids


def read_pids(p, n):
    """(parent rank 0's pid, [pids of n workers]) from a `hold` run's stdout."""
    parent, pids = None, []
    while parent is None or len(pids) < n:
        line = p.stdout.readline()
        assert line, "the job ended before its workers started"
        m = re.match(r"^(parent 0|worker) pid (\d+)", line.strip())
        if m and m.group(1) == "parent 0":
            parent = int(m.group(2))
        elif m and line.startswith("worker pid"):
            pids.append(int(m.group(2)))
    return parent, pids


def settled(jx):
    """Waits until the daemon has every core back and no job directory is left."""
    wait_until(lambda: not json.loads(jx.run(["status", "--json"]).stdout)["running"], 15,
               what="every core back")
    wait_until(lambda: not job_dirs(jx.tmpdir), 15, what="the job directory to go")


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


def test_a_spawn_re_attaches_after_a_daemon_crash(mx, tmp_path):
    """The daemon dies while a spawned world runs: the launcher re-attaches
    the spawn's cores to the successor (with their parent and the family's
    tag) beside the job's own, so they show as running, not detached, and
    come back when the world ends, not only when the launcher exits. The
    real 2-core machine: the parent holds one core, the worker the other."""
    release = tmp_path / "release"
    p = mx.popen(["-n", 1, spawn_prog(), "hold", release, 1], stdout=subprocess.PIPE, text=True)
    read_pids(p, 1)
    job = wait_until(lambda: [j for j in mx.status()["running"] if j.get("pid") == p.pid], 30, 0.05,
                     "the job running")[0]["job"]
    old = mx.daemon_pid()
    os.kill(old, signal.SIGKILL)

    def both_back():
        cp = mx.run(["status", "--json"])
        if cp.returncode != 0:
            return None
        rows = json.loads(cp.stdout).get("running", [])
        ours = [j for j in rows if j["job"] == job or j.get("parent") == job]
        return rows if len(ours) == 2 and all(j["state"] == "running" for j in ours) else None

    rows = wait_until(both_back, 30, 0.05, "the job and its spawn re-attached")
    assert mx.daemon_pid() not in (None, old)
    spawn = [j for j in rows if j.get("parent") == job]
    assert len(spawn) == 1, rows
    release.touch()
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "spawned 1 ok" in out and "lost the daemon" not in err, (out, err)
    settled(mx)


def test_a_killed_parent_rank_takes_its_workers(big):
    p = big.popen(["-n", 1, spawn_prog(), "hold", 60, 2], stdout=subprocess.PIPE, text=True)
    parent, pids = read_pids(p, 2)
    os.kill(parent, signal.SIGKILL)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 137, err
    assert "rank 0" in err and "killed by signal 9" in err and "terminating the other 2 ranks" in err, err
    wait_until(lambda: not any(pid_alive(x) for x in pids), 15, what="the spawned ranks to die")
    settled(big)


def test_a_killed_worker_fails_the_job(big):
    p = big.popen(["-n", 1, spawn_prog(), "hold", 60, 2], stdout=subprocess.PIPE, text=True)
    parent, pids = read_pids(p, 2)
    os.kill(pids[0], signal.SIGKILL)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 137, err
    assert re.search(r"spawned rank \d of world 1 .*pid %d\) was killed by signal 9" % pids[0], err), err
    wait_until(lambda: not any(pid_alive(x) for x in [parent] + pids), 15, what="the job's ranks to die")
    settled(big)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signals_to_the_launcher_reach_spawned_ranks(big, sig, code):
    p = big.popen(["-n", 1, spawn_prog(), "hold", 60, 2], stdout=subprocess.PIPE, text=True)
    parent, pids = read_pids(p, 2)
    p.send_signal(sig)
    out, err = p.communicate(timeout=30)
    assert p.returncode == code, err
    wait_until(lambda: not any(pid_alive(x) for x in [parent] + pids), 15, what="every rank to die")
    settled(big)


def test_a_worker_calling_mpi_abort_ends_the_job_with_its_code(big):
    cp = big.run(["-n", 1, spawn_prog(), "abort", 5], timeout=60)
    assert cp.returncode == 5, cp.stderr
    assert "jiffy: spawned rank 0 of world 1 called MPI_Abort with code 5" in cp.stderr, cp.stderr


def test_a_worker_leaving_without_finalize_fails_the_job(big):
    cp = big.run(["-n", 1, spawn_prog(), "nofinalize"], timeout=60)
    assert cp.returncode != 0, cp.stdout + cp.stderr
    assert "spawned rank 0 of world 1" in cp.stderr and "exited without calling MPI_Finalize" in cp.stderr, \
        cp.stderr


def test_a_spawned_program_that_never_connects_fails_the_spawn(big):
    # /bin/true exits 0 without contacting the PMIx server: mpirun leaves
    # the parent in the connect (600 s); jiffy fails the spawn.
    t = time.monotonic()
    cp = big.run(["-n", 1, spawn_prog(), "nonmpi", "/bin/true"], timeout=60)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert any(l.startswith("spawn failed: class ") for l in lines(cp.stdout)), cp.stdout
    assert time.monotonic() - t < 30


def test_spawned_output_is_labelled_as_a_world_of_its_own(big):
    cp = big.run(["-l", "-n", 1, spawn_prog(), "parent", 2], timeout=60)
    assert cp.returncode == 0, cp.stderr
    out = lines(cp.stdout)
    assert any(l.startswith("[0] parent 0 pid") for l in out), out
    assert {l.split()[0] for l in out if " worker " in l and " cpus " in l} == {"[1.0]", "[1.1]"}, out
    cp = big.run(["--tag-output", "-n", 1, spawn_prog(), "parent", 1], timeout=60)
    assert cp.returncode == 0, cp.stderr
    out = lines(cp.stdout)
    assert any(l.startswith("[1,0]<stdout>:parent 0 pid") for l in out), out  # as mpirun labels them
    assert any(l.startswith("[2,0]<stdout>:worker 0 pid") for l in out), out


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
    assert "Error in spawn call" in cp.stderr, cp.stderr
    hydra = shutil.which("mpiexec.hydra")
    if hydra:  # the same failure, the same exit code, under hydra
        peer = subprocess.run([hydra, "-n", "1", prog("spawn", "mpich"), "parent", "1"], env=mx.env,
                              capture_output=True, text=True, timeout=60)
        assert peer.returncode == cp.returncode, (peer.returncode, cp.returncode)
        assert "Error in spawn call" in peer.stderr, peer.stderr


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


def test_pmi1_spawn_on_another_host_is_refused_and_on_this_one_runs(big):
    cp = pmi1(big, "hosts")
    assert cp.returncode == 0, cp.stderr
    out = lines(cp.stdout)
    assert any(l.startswith("elsewhere rc -1 msg ") and "elsewhere.invalid" in l for l in out), out
    assert "localhost rc 0" in out, out
    assert "'elsewhere.invalid' is another" in cp.stderr, cp.stderr


# Spawned programs are found as the launcher finds its own (PATH, the
# working directory, the wdir info); one that cannot run fails the spawn.
PROGS = MPI_DIR


def test_a_spawned_program_is_found_in_path(big, tmp_path):
    big.env["PATH"] = f"{PROGS}:{big.env['PATH']}"
    cp = big.run(["-n", 1, str(PROGS / "spawn.openmpi"), "prog", "spawn_other.openmpi", 2], timeout=60,
                 cwd=tmp_path)
    assert cp.returncode == 0, cp.stderr
    assert "spawned 2 ok" in lines(cp.stdout)
    assert sorted(w[:3] for w in workers(cp.stdout)) == [(0, 2, 0), (1, 2, 0)]


def test_a_relative_spawned_program_is_found_in_the_working_directory(big):
    cp = big.run(["-n", 1, "./spawn.openmpi", "prog", "./spawn_other.openmpi", 1], timeout=60, cwd=PROGS)
    assert cp.returncode == 0, cp.stderr
    assert "spawned 1 ok" in lines(cp.stdout)
    # the same from elsewhere, with the job's -wdir
    cp = big.run(["-wdir", str(PROGS), "-n", 1, "./spawn.openmpi", "prog", "./spawn_other.openmpi", 1],
                 timeout=60, cwd="/")
    assert cp.returncode == 0, cp.stderr
    assert "spawned 1 ok" in lines(cp.stdout)


def test_the_wdir_info_names_where_a_relative_program_is(big):
    cp = big.run(["-n", 1, str(PROGS / "spawn.openmpi"), "prog", "./spawn_other.openmpi", 1, str(PROGS)],
                 timeout=60, cwd="/")
    assert cp.returncode == 0, cp.stderr
    assert "spawned 1 ok" in lines(cp.stdout)


def test_a_bare_name_is_not_looked_up_in_the_working_directory(big):
    # As jiffy (and hydra) find their own programs; mpirun would find it.
    cp = big.run(["-n", 1, "./spawn.openmpi", "prog", "spawn_other.openmpi", 1], timeout=60, cwd=PROGS)
    assert cp.returncode == 50, cp.stderr  # MPI_ERR_SPAWN, fatal: the parent aborts with the class
    assert "MPI_Comm_spawn from rank 0 failed: spawn_other.openmpi: command not found" in cp.stderr


def test_a_spawned_program_that_cannot_be_executed_fails_the_spawn(big, tmp_path):
    (tmp_path / "noexec").write_text("not a program\n")
    cp = big.run(["-n", 1, str(PROGS / "spawn.openmpi"), "prog", "./noexec", 1], timeout=60, cwd=tmp_path)
    assert cp.returncode == 50, cp.stderr
    assert "MPI_Comm_spawn from rank 0 failed: ./noexec: permission denied" in cp.stderr
