"""The shared PMIx server of a resource set (launch/pmix_shared.h): one
`jiffy-pmix --jiffy-pmix-serve` serves the Open MPI jobs of every launcher of
the set, each job a namespace of its own.

Covers: launches racing to start it get exactly one; a server killed
mid-job fails that job with a clear message, leaves no rank, and the next
launch starts a successor; a launcher killed mid-job ends only its own job
(the server serves the others, and the next); `jiffy status` shows it and
the jobs it serves; `jiffy stop` lets running jobs finish, then the server
goes; with no job for JIFFY_PMIX_IDLE_TIMEOUT
seconds it exits and removes its socket and directory.
"""

import os
import select
import signal
from pathlib import Path

import pytest

from conftest import pid_alive, procs_with_marker, wait_until
from test_mpi import assert_no_ranks_left, mx, prog, shared_pmix_servers  # noqa: F401  (mx: fixture)


def hold(jx, n, release: Path, env=None):
    """A job of n ranks of hold.openmpi, up (past MPI_Init, its first line
    read) when this returns; it finishes once `release` exists."""
    p = jx.popen(["-n", n, prog("hold", "openmpi"), str(release)], env=env)
    ready, _, _ = select.select([p.stdout], [], [], 60)
    assert ready, "the job did not come up within 60 s"
    line = p.stdout.readline()
    assert line.strip() == "up", (line, p.poll(), p.stderr.read() if p.poll() is not None else "")
    return p


def finish(p, timeout=60):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, err


def one_server(jx) -> int:
    servers = shared_pmix_servers(jx)
    assert len(servers) == 1, servers
    return servers[0]


def test_launches_racing_to_start_it_get_one_server(mx):
    assert shared_pmix_servers(mx) == []
    procs = [mx.popen(["-n", 1, prog("hello", "openmpi")]) for _ in range(6)]
    results = [finish(p, 120) for p in procs]
    assert all(rc == 0 for rc, _ in results), results
    one_server(mx)


def test_a_killed_server_fails_its_job_clearly_and_a_successor_serves(mx, tmp_path):
    job = hold(mx, 2, tmp_path / "release")
    server = one_server(mx)
    os.kill(server, signal.SIGKILL)
    rc, err = finish(job)
    assert rc != 0, err
    assert "shared PMIx server" in err, err
    assert_no_ranks_left(mx, "after the PMIx server was killed")
    cp = mx.run(["-n", 2, prog("hello", "openmpi")], timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert one_server(mx) != server


def test_a_killed_launcher_ends_only_its_own_job(mx, tmp_path):
    a = hold(mx, 1, tmp_path / "a")
    b = hold(mx, 1, tmp_path / "b")
    server = one_server(mx)
    os.kill(a.pid, signal.SIGKILL)
    a.wait(timeout=10)
    (tmp_path / "b").touch()
    rc, err = finish(b)
    assert rc == 0, err
    cp = mx.run(["-n", 2, prog("hello", "openmpi")], timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert one_server(mx) == server
    # the killed launcher's rank is ended by the daemon
    wait_until(lambda: not [p for p in procs_with_marker(mx.marker) if p[1] == "hold.openmpi"], 15,
               what="the killed launcher's rank gone")


def test_status_shows_the_server_and_the_jobs_it_serves(mx, tmp_path):
    job = hold(mx, 1, tmp_path / "release")
    server = one_server(mx)
    assert mx.status()["pmix_server"] == {"pid": server, "jobs": 1, "served": 1, "stopping": False}
    text = mx.run(["status"]).stdout
    assert f"pmix    pid {server}, serving 1 job (1 since it started)" in text, text
    (tmp_path / "release").touch()
    assert finish(job)[0] == 0
    wait_until(lambda: mx.status()["pmix_server"]["jobs"] == 0, 10, what="the finished job gone from the server")


def test_stop_lets_running_jobs_finish_then_the_server_goes(mx, tmp_path):
    job = hold(mx, 2, tmp_path / "release")
    server = one_server(mx)
    assert mx.stop().returncode == 0
    assert pid_alive(server), "the server serves its running job to the end"
    (tmp_path / "release").touch()
    rc, err = finish(job)
    assert rc == 0, err
    wait_until(lambda: not pid_alive(server), 10, what="the shared PMIx server gone after its last job")


def test_an_idle_server_exits_and_leaves_nothing(mx):
    mx.env["JIFFY_PMIX_IDLE_TIMEOUT"] = "0.5"
    cp = mx.run(["-n", 1, prog("hello", "openmpi")], timeout=60)
    assert cp.returncode == 0, cp.stderr
    rt = Path(mx.runtime_dir)
    assert list(rt.glob("*.pmix.sock")) and list(rt.glob("pmix-*"))
    wait_until(lambda: shared_pmix_servers(mx) == [], 15, what="the idle shared PMIx server gone")
    assert list(rt.glob("*.pmix.sock")) == [] and list(rt.glob("pmix-*")) == []
    cp = mx.run(["-n", 1, prog("hello", "openmpi")], timeout=60)
    assert cp.returncode == 0, cp.stderr
