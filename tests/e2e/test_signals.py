"""Signals to the launcher: forwarding, second Ctrl-C, SIGKILL of a running or
a queued launcher."""

import os
import signal
import subprocess
import time

import pytest

from conftest import parse_cpu_list, pid_alive, read_records, wait_until


def wait_records(directory, tag, n, timeout=10, key="pid"):
    def ready():
        try:
            recs = read_records(directory, tag).get(tag, {})
        except FileNotFoundError:
            return None
        if len(recs) == n and all(key in r for r in recs.values()):
            return recs
        return None
    return wait_until(ready, timeout, 0.02, f"{n} ranks of {tag} to start")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_forwarded_to_ranks(jx, probe_bin, tmp_path, sig):
    p = jx.popen(["-n", 2, probe_bin, f"out={tmp_path}", "tag=s", "trap=exit", "sleep=100000"])
    wait_records(tmp_path, "s", 2)
    p.send_signal(sig)
    try:
        p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"jiffy did not end after {sig.name}")
    assert p.returncode != 0
    recs = read_records(tmp_path)["s"]
    for r in (0, 1):
        # (a rank may also see the SIGTERM that follows its peer's exit)
        assert int(sig) in recs[r].get("signals", []), f"rank {r} did not get {sig.name}: {recs[r]}"


def test_second_sigint_kills(jx, probe_bin, tmp_path):
    p = jx.popen(["-n", 2, probe_bin, f"out={tmp_path}", "tag=i", "trap=stay", "sleep=100000"])
    recs = wait_records(tmp_path, "i", 2)
    p.send_signal(signal.SIGINT)
    wait_records(tmp_path, "i", 2, key="signal")
    time.sleep(0.3)
    assert p.poll() is None, "ranks that survive the first SIGINT keep the job running"
    p.send_signal(signal.SIGINT)
    try:
        p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("a second SIGINT should kill the ranks")
    assert p.returncode != 0
    for r in recs.values():
        wait_until(lambda: not pid_alive(int(r["pid"])), 5, what="rank to die")


def test_sigkill_running_launcher_kills_ranks_and_frees_cores(jx, probe_bin, tmp_path):
    # A holds every core; its ranks each spawn a child
    jx.run(["-n", 1, "true"])
    ncores = len(jx.status()["resources"]["cores"])
    a = jx.popen(["-n", ncores, probe_bin, f"out={tmp_path}", "tag=A", "spawn=1", "sleep=100000"])
    recs = wait_records(tmp_path, "A", ncores, key="child")
    # B waits for the cores
    b = jx.popen(["-n", ncores, probe_bin, f"out={tmp_path}", "tag=B"])
    jx.wait_queued(b.pid)
    a.kill()
    a.wait()
    t0 = time.monotonic()
    for r in recs.values():
        for key in ("pid", "child"):
            pid = int(r[key])
            wait_until(lambda: not pid_alive(pid), 3, what=f"rank {r['rank']}'s {key} {pid} to die")
    out, err = b.communicate(timeout=10)
    assert b.returncode == 0, err
    brecs = read_records(tmp_path)["B"]
    acores = set().union(*(parse_cpu_list(r["cores"]) for r in recs.values()))
    bcores = set().union(*(parse_cpu_list(r["cores"]) for r in brecs.values()))
    assert bcores == acores
    assert min(int(r["start_ns"]) for r in brecs.values()) > max(int(r["start_ns"]) for r in recs.values())


def test_sigkill_running_launcher_kills_shell_children(jx, tmp_path):
    a = jx.popen(["-n", 2, "sh", "-c",
                  f'sleep 100 & echo $! > {tmp_path}/child.$JIFFY_RANK; echo $$ > {tmp_path}/sh.$JIFFY_RANK; '
                  'sleep 100'])
    pids = []
    for r in (0, 1):
        for k in ("child", "sh"):
            f = tmp_path / f"{k}.{r}"
            wait_until(lambda: f.exists() and f.read_text().strip(), 10, what=str(f))
            pids.append(int(f.read_text()))
    a.kill()
    a.wait()
    for pid in pids:
        wait_until(lambda: not pid_alive(pid), 3, what=f"pid {pid} to die after launcher SIGKILL")
    # the grant came back
    cp = jx.run(["-n", 2, "true"], timeout=15)
    assert cp.returncode == 0, cp.stderr


def test_sigkill_queued_launcher_drops_request(jx, fake_daemon, probe_bin):
    fake_daemon(cores=2)
    busy = jx.popen(["-n", 2, probe_bin, "sleep=60000"])
    jx.wait_running(busy.pid)
    q = jx.popen(["-n", 1, "true"])
    q2 = jx.popen(["-n", 2, "true"])
    jx.wait_queued(q.pid)
    jx.wait_queued(q2.pid)
    q.kill()
    q.wait()
    wait_until(lambda: all(j["pid"] != q.pid for j in jx.status()["queued"]), 3,
               what="the killed launcher's request to leave the queue")
    assert [j["pid"] for j in jx.status()["queued"]] == [q2.pid]
    busy.terminate()
    busy.communicate(timeout=15)
    q2.communicate(timeout=15)
    assert q2.returncode == 0


def test_sigint_queued_launcher(jx, fake_daemon, probe_bin):
    fake_daemon(cores=2)
    busy = jx.popen(["-n", 2, probe_bin, "sleep=60000"])
    jx.wait_running(busy.pid)
    q = jx.popen(["-n", 1, "true"])
    jx.wait_queued(q.pid)
    q.send_signal(signal.SIGINT)
    try:
        q.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail("Ctrl-C of a waiting launcher should end it")
    assert q.returncode != 0
    wait_until(lambda: jx.status()["queued"] == [], 3, what="queue to empty")
    busy.terminate()
    busy.communicate(timeout=15)
