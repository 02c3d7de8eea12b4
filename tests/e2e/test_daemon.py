"""The daemon: one per resource set, FIFO order, the queue's status line on a
terminal, the peer uid check, a daemon crash while jobs run."""

import json
import os
import pty
import select
import signal
import socket
import struct
import subprocess
import time

import pytest

from conftest import JobTrace, find_overlaps, pid_alive, read_records, wait_until


def test_restricted_cpuset_reaches_another_daemon(jx, probe_bin, tmp_path):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs")
    cpu = min(os.sched_getaffinity(0))

    def pin():
        os.sched_setaffinity(0, {cpu})

    assert jx.run(["-n", 1, "true"]).returncode == 0
    full = jx.status()
    p = subprocess.run([jx.bin, "-n", "1", probe_bin, f"out={tmp_path}", "tag=r"], env=jx.env,
                       preexec_fn=pin, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    rec = read_records(tmp_path)["r"][0]
    assert rec["cpus"] == str(cpu), "a rank stays inside the caller's cpuset"
    st = subprocess.run([jx.bin, "status", "--json"], env=jx.env, preexec_fn=pin, capture_output=True,
                        text=True, timeout=10)
    restricted = json.loads(st.stdout)
    assert restricted["daemon"]["pid"] != full["daemon"]["pid"]
    assert restricted["daemon"]["key"] != full["daemon"]["key"]
    assert len(restricted["resources"]["cores"]) == 1
    assert len(jx.sockets()) == 2
    # `jiffy stop` stops the caller's own daemon only; the fixture stops the
    # unrestricted one, so stop the restricted one here
    subprocess.run([jx.bin, "stop"], env=jx.env, preexec_fn=pin, timeout=10, capture_output=True)
    wait_until(lambda: not pid_alive(restricted["daemon"]["pid"]), 5, what="restricted daemon to stop")
    assert pid_alive(full["daemon"]["pid"])


def test_gpu_visibility_reaches_another_daemon(jx):
    assert jx.run(["-n", 1, "true"]).returncode == 0
    a = jx.status()["daemon"]
    env = {"CUDA_VISIBLE_DEVICES": "1"}
    assert jx.run(["-n", 1, "true"], env=env).returncode == 0
    b = json.loads(jx.run(["status", "--json"], env=env).stdout)["daemon"]
    assert a["key"] != b["key"] and a["pid"] != b["pid"]
    jx.run(["stop"], env=env)
    wait_until(lambda: not pid_alive(b["pid"]), 5, what="second daemon to stop")


def test_fifo_order_for_equal_jobs(jx, fake_daemon, probe_bin, tmp_path):
    fake_daemon(cores=2)
    busy = jx.popen(["-n", 2, probe_bin, "sleep=60000"])
    jx.wait_running(busy.pid)
    waiting = []
    for i in range(5):
        p = jx.popen(["-n", 2, probe_bin, f"out={tmp_path}", f"tag=f{i}", "sleep=20"])
        q = jx.wait_queued(p.pid)
        assert q["position"] == i or q["position"] == i + 1, q  # 0- or 1-based
        waiting.append(p)
    busy.terminate()
    busy.communicate(timeout=15)
    for p in waiting:
        p.communicate(timeout=30)
        assert p.returncode == 0
    recs = read_records(tmp_path)
    starts = [JobTrace(f"f{i}", recs[f"f{i}"]).start for i in range(5)]
    assert starts == sorted(starts), "equal jobs start in arrival order"


def test_queue_status_line_on_a_terminal(jx, fake_daemon, probe_bin):
    fake_daemon(cores=2)
    busy = jx.popen(["-n", 2, probe_bin, "sleep=60000"])
    jx.wait_running(busy.pid)
    # not a terminal: nothing on stderr while waiting
    quiet = jx.popen(["-n", 1, "true"])
    jx.wait_queued(quiet.pid)
    # a terminal: one status line after about a second
    master, slave = pty.openpty()
    tty = jx.popen(["-n", 1, "true"], stderr=slave, stdout=subprocess.PIPE)
    os.close(slave)
    jx.wait_queued(tty.pid)
    seen = b""
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline and b"position" not in seen:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                seen += os.read(master, 4096)
            except OSError:
                break
    busy.terminate()
    busy.communicate(timeout=15)
    _, qerr = quiet.communicate(timeout=15)
    tty.communicate(timeout=15)
    os.close(master)
    assert quiet.returncode == 0 and tty.returncode == 0
    assert qerr == "", f"no status line when stderr is not a terminal: {qerr!r}"
    text = seen.decode(errors="replace")
    assert "position" in text and "wait" in text, f"expected a queue status line, got {text!r}"


def test_peer_uid_checked(jx, fake_daemon):
    """A client of another uid that gets at the socket is refused."""
    fake_daemon(cores=2)
    sock = jx.sockets()[0]
    os.chmod(jx.runtime_dir, 0o711)
    mode = os.stat(sock).st_mode & 0o777
    os.chmod(sock, 0o666)
    try:
        code = (
            "import socket,struct,json,sys\n"
            "s=socket.socket(socket.AF_UNIX);s.settimeout(5);s.connect(sys.argv[1])\n"
            "b=json.dumps({'type':'status','v':1}).encode()\n"
            "try:\n"
            "  s.sendall(struct.pack('>I',len(b))+b)\n"
            "  h=s.recv(4)\n"
            "except Exception as e:\n"
            "  print('EXC',e);sys.exit(0)\n"
            "if not h: print('EOF');sys.exit(0)\n"
            "n=struct.unpack('>I',h)[0];d=b''\n"
            "while len(d)<n:\n"
            "  c=s.recv(n-len(d))\n"
            "  if not c: break\n"
            "  d+=c\n"
            "print('REPLY',json.loads(d).get('type'))\n")

        def drop():
            os.setgid(65534)
            os.setuid(65534)

        r = subprocess.run(["/usr/bin/python3", "-c", code, sock], preexec_fn=drop, capture_output=True,
                           text=True, timeout=20)
        out = r.stdout.strip()
        assert out in ("EOF", "REPLY error") or out.startswith("EXC"), \
            f"a foreign uid must be refused, got {out!r} {r.stderr!r}"
    finally:
        os.chmod(sock, mode)
        os.chmod(jx.runtime_dir, 0o700)
    assert jx.run(["-n", 1, "true"]).returncode == 0


def test_daemon_crash_never_double_books(jx, probe_bin, tmp_path):
    """DESIGN invariant 3: grants held by running launchers survive a daemon
    crash; a new daemon learns about them before it grants anything."""
    assert jx.run(["-n", 1, "true"]).returncode == 0
    ncores = len(jx.status()["resources"]["cores"])
    a = jx.popen(["-n", ncores, probe_bin, f"out={tmp_path}", "tag=A", "sleep=2500"])
    jx.wait_running(a.pid)
    dpid = jx.daemon_pid()
    os.kill(dpid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(dpid), 5)
    b = jx.run(["-n", ncores, probe_bin, f"out={tmp_path}", "tag=B"], timeout=60)
    assert b.returncode == 0, b.stderr
    a.communicate(timeout=30)
    assert a.returncode == 0
    recs = read_records(tmp_path)
    ta, tb = JobTrace("A", recs["A"]), JobTrace("B", recs["B"])
    assert not find_overlaps([ta, tb]), "B was granted cores that A still held"
