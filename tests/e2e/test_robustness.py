"""Bad input of every kind: command line, environment, runtime directory,
stale or unresponsive daemon, malformed traffic on the daemon socket."""

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time

import pytest

from conftest import make_runtime_dir, one_line_error, pid_alive, process_gone, procs_with_marker, wait_until

BAD_COMMAND_LINES = [
    ["--frobnicate", "-n", 1, "true"],
    ["-n", 0, "true"],
    ["-n", "abc", "true"],
    ["-n", "-2", "true"],
    ["-n", "2x", "true"],
    ["-n", "99999999999999999999", "true"],
    ["-n"],
    ["-n", 2],
    ["-c", 0, "-n", 1, "true"],
    ["-bind-to", "sideways", "-n", 1, "true"],
    ["-timeout", "soon", "-n", 1, "true"],
    ["-g", "-1", "-n", 1, "true"],
    ["-genv", "ONLYNAME"],
    ["-n", 1, "true", ":"],
    ["-n", 1, "true", ":", ":", "-n", 1, "true"],
]


@pytest.mark.parametrize("args", BAD_COMMAND_LINES, ids=lambda a: " ".join(map(str, a)))
def test_bad_command_line(jx, args):
    cp = jx.run(args, timeout=10)
    one_line_error(cp, " ".join(map(str, args)))
    assert cp.elapsed < 2
    assert jx.sockets() == [], "bad input must not start a daemon"


def test_no_arguments(jx):
    cp = jx.run([], timeout=10)
    assert cp.returncode != 0
    assert jx.sockets() == []


def test_bad_mpiexec_timeout_env(jx):
    cp = jx.run(["-n", 1, "true"], env={"MPIEXEC_TIMEOUT": "abc"}, timeout=10)
    one_line_error(cp, "MPIEXEC_TIMEOUT=abc")


def test_too_many_ranks_default_daemon(jx):
    cp = jx.run(["-n", 1000, "true"], timeout=20)
    one_line_error(cp, "-n 1000")
    assert cp.elapsed < 5
    assert jx.status().get("queued", []) == []


def test_oversubscribe_limit(jx, fake_daemon):
    fake_daemon(cores=2, max_oversubscribe=8)
    cp = jx.run(["-n", 17, "true"], timeout=10)
    one_line_error(cp, "-n 17 on 2 cores x 8")
    assert cp.elapsed < 3
    cp = jx.run(["-n", 1000, "true"], timeout=10)
    one_line_error(cp, "-n 1000 on 2 cores")
    cp = jx.run(["-n", 16, "true"], timeout=30)
    assert cp.returncode == 0, cp.stderr
    st = jx.status()
    assert st["queued"] == [] and st["running"] == []


def test_no_oversubscribe(jx, fake_daemon):
    fake_daemon(cores=2)
    cp = jx.run(["--no-oversubscribe", "-n", 3, "true"], timeout=10)
    one_line_error(cp, "--no-oversubscribe -n 3 on 2 cores")
    cp = jx.run(["--no-oversubscribe", "-n", 2, "true"], timeout=10)
    assert cp.returncode == 0, cp.stderr


# ---------------------------------------------------------------- runtime dir


def test_runtime_dir_symlink_refused(jx, tmp_path):
    real = make_runtime_dir()
    try:
        link = tmp_path / "link"
        os.symlink(real, link)
        cp = jx.run(["-n", 1, "true"], env={"JIFFY_RUNTIME_DIR": str(link)}, timeout=10)
        msg = one_line_error(cp, "symlinked runtime dir")
        assert "link" in msg, msg
        assert os.listdir(real) == []
    finally:
        shutil.rmtree(real, ignore_errors=True)


def test_runtime_dir_wrong_mode_refused(jx, tmp_path):
    d = tmp_path / "rt"
    d.mkdir()
    d.chmod(0o755)
    cp = jx.run(["-n", 1, "true"], env={"JIFFY_RUNTIME_DIR": str(d)}, timeout=10)
    one_line_error(cp, "mode 0755 runtime dir")
    assert os.listdir(d) == []


def test_runtime_dir_other_owner_refused(jx, tmp_path):
    d = tmp_path / "rt"
    d.mkdir()
    d.chmod(0o700)
    os.chown(d, 65534, 65534)
    cp = jx.run(["-n", 1, "true"], env={"JIFFY_RUNTIME_DIR": str(d)}, timeout=10)
    one_line_error(cp, "runtime dir owned by nobody")
    assert os.listdir(d) == []


def test_runtime_dir_regular_file_refused(jx, tmp_path):
    f = tmp_path / "rt"
    f.write_text("")
    cp = jx.run(["-n", 1, "true"], env={"JIFFY_RUNTIME_DIR": str(f)}, timeout=10)
    one_line_error(cp, "runtime dir is a file")


def test_runtime_dir_created_private(jx):
    d = os.path.join(jx.runtime_dir, "sub")
    jx.env["JIFFY_RUNTIME_DIR"] = d
    cp = jx.run(["-n", 1, "true"], timeout=20)
    assert cp.returncode == 0, cp.stderr
    st = os.lstat(d)
    assert st.st_mode & 0o777 == 0o700


# ---------------------------------------------------------------- stale / dead daemon


def _socket_path(jx):
    socks = jx.sockets()
    assert len(socks) == 1, socks
    return socks[0]


def test_sigkilled_daemon_leaves_no_trouble(jx):
    assert jx.run(["-n", 1, "true"]).returncode == 0
    sock = _socket_path(jx)
    pid = jx.daemon_pid()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), 5)
    st = jx.run(["status", "--json"], timeout=10)
    assert st.returncode == 0 and json.loads(st.stdout) == {"daemon": None}, st.stdout + st.stderr
    cp = jx.run(["-n", 2, "true"], timeout=20)
    assert cp.returncode == 0, cp.stderr
    assert cp.elapsed < 5
    assert jx.daemon_pid() not in (None, pid)
    assert jx.sockets() == [sock]


@pytest.mark.parametrize("kind", ["regular-file", "dead-socket"])
def test_stale_socket_file(jx, kind):
    assert jx.run(["-n", 1, "true"]).returncode == 0
    sock = _socket_path(jx)
    pid = jx.daemon_pid()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: process_gone(pid), 5)  # its lane lock too (a dying daemon's lane still lends)
    if os.path.exists(sock):
        os.unlink(sock)
    if kind == "regular-file":
        with open(sock, "w") as f:
            f.write("stale")
    else:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(sock)
        s.close()
    cp = jx.run(["-n", 1, "true"], timeout=20)
    assert cp.returncode == 0, cp.stderr
    assert cp.elapsed < 5
    assert jx.daemon_pid() not in (None, pid)


@pytest.mark.slow
def test_unresponsive_daemon(jx):
    """A daemon that accepts but never answers (SIGSTOPped): a launcher that
    must ask gives up with a clear error instead of hanging forever. One that
    takes lent slots from the lane never needed the daemon's answer."""
    assert jx.run(["-n", 1, "true"]).returncode == 0
    pid = jx.daemon_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        assert jx.run(["-n", 1, "true"], timeout=60).returncode == 0
        # JIFFY_DAEMON_TIMEOUT shortens the launcher's wait for an answer (default 10 s)
        cp = jx.run(["-n", 1, "true"], timeout=60, env={"JIFFY_DAEMON_TIMEOUT": "2", "JIFFY_LANE": "0"})
        one_line_error(cp, "launch against a stopped daemon")
        st = jx.run(["status"], timeout=60, env={"JIFFY_DAEMON_TIMEOUT": "2"})
        assert st.returncode != 0 and st.stderr.startswith("jiffy: "), (st.returncode, st.stdout, st.stderr)
    finally:
        os.kill(pid, signal.SIGCONT)


# ---------------------------------------------------------------- the daemon socket


def frame(payload) -> bytes:
    if not isinstance(payload, (bytes, bytearray)):
        payload = json.dumps(payload).encode()
    return struct.pack(">I", len(payload)) + payload


def connect(path, timeout=5):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def read_frame(s):
    """The next frame as a dict, 'eof' when the daemon closed, 'timeout'."""
    buf = b""
    try:
        while len(buf) < 4:
            chunk = s.recv(4 - len(buf))
            if not chunk:
                return "eof"
            buf += chunk
        n = struct.unpack(">I", buf)[0]
        assert n <= 64 * 1024 * 1024, f"daemon sent a frame of {n} bytes"
        body = b""
        while len(body) < n:
            chunk = s.recv(n - len(body))
            if not chunk:
                return "eof"
            body += chunk
        return json.loads(body)
    except socket.timeout:
        return "timeout"
    except ConnectionResetError:
        return "eof"


def assert_serving(jx, daemon):
    assert daemon.poll() is None, f"daemon died: {jx.daemon_log()}"
    cp = jx.run(["-n", 1, "true"], timeout=10)
    assert cp.returncode == 0, cp.stderr
    assert cp.elapsed < 5


def test_protocol_positive_control(jx, fake_daemon):
    fake_daemon(cores=4)
    s = connect(_socket_path(jx))
    # byte by byte, to check the daemon reassembles frames
    for b in frame({"type": "status", "v": 1}):
        s.send(bytes([b]))
    reply = read_frame(s)
    assert isinstance(reply, dict) and reply.get("type") == "status_reply", reply
    s.close()


MALFORMED = {
    "http-garbage": b"GET / HTTP/1.0\r\n\r\n",
    "100MB-length": struct.pack(">I", 100 * 1024 * 1024) + b"{",
    "4GB-length": b"\xff\xff\xff\xff" + b"x" * 100,
    "zero-length": b"\0\0\0\0",
    "invalid-json": frame(b"not json at all"),
    "truncated-json": frame(b'{"type": "submit", '),
    "json-array": frame(b"[1, 2, 3]"),
    "json-string": frame(b'"submit"'),
    "no-type": frame({"v": 1, "ntasks": 1}),
    "type-not-string": frame({"type": 42, "v": 1}),
    "unknown-type": frame({"type": "launch-the-missiles", "v": 1}),
    "submit-wrong-version": frame({"type": "submit", "v": 999, "ntasks": 1, "cores_per_task": 1,
                                   "gpus_per_task": 0, "gpus_per_job": 0, "bind": "core", "pid": 1,
                                   "command": "x"}),
    "submit-no-version": frame({"type": "submit", "ntasks": 1, "cores_per_task": 1, "gpus_per_task": 0,
                                "gpus_per_job": 0, "bind": "core", "pid": 1, "command": "x"}),
    "submit-empty": frame({"type": "submit", "v": 1}),
    "submit-negative": frame({"type": "submit", "v": 1, "ntasks": -5, "cores_per_task": -1}),
    "submit-huge": frame(b'{"type":"submit","v":1,"ntasks":100000000000000000000000000000,'
                         b'"cores_per_task":1}'),
    "submit-strings": frame({"type": "submit", "v": 1, "ntasks": "many", "cores_per_task": "x"}),
    "invalid-utf8": frame(b'{"type":"\xff\xfe","v":1}'),
    "deep-nesting": frame(b'{"type":"submit","v":1,"x":' + b"[" * 30000 + b"]" * 30000 + b"}"),
    "deep-nesting-bare": frame(b"[" * 60000 + b"]" * 5000),
    "nul-bytes": frame(b'{"type":"st\0atus","v":1}'),
    "finished-unsolicited": frame({"type": "finished", "v": 1, "job": 1, "exit": 0}),
    "started-unsolicited": frame({"type": "started", "v": 1, "job": 1, "pgid": 1}),
    "submit-bad-bind": frame({"type": "submit", "v": 1, "ntasks": 1, "cores_per_task": 1, "gpus_per_task": 0,
                              "gpus_per_job": 0, "bind": "x" * 1000, "pid": 1, "command": "x"}),
    "submit-command-huge": frame({"type": "submit", "v": 1, "ntasks": 1, "cores_per_task": 1,
                                  "gpus_per_task": 0, "gpus_per_job": 0, "bind": "core", "pid": 1,
                                  "command": "x" * 60000}),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_message(jx, fake_daemon, name):
    d = fake_daemon(cores=4)
    s = connect(_socket_path(jx))
    try:
        s.sendall(MALFORMED[name])
    except (BrokenPipeError, ConnectionResetError):
        pass
    reply = read_frame(s)
    assert reply == "eof" or (isinstance(reply, dict) and reply.get("type") == "error"), \
        f"daemon should answer an error or drop the client, got {reply!r}"
    if isinstance(reply, dict):
        assert isinstance(reply.get("message"), str) and reply["message"]
    s.close()
    assert_serving(jx, d)


def test_half_message_and_idle_clients_do_not_block(jx, fake_daemon):
    d = fake_daemon(cores=4)
    path = _socket_path(jx)
    stalled = connect(path)
    stalled.sendall(struct.pack(">I", 100) + b'{"type":')
    idle = [connect(path) for _ in range(100)]
    try:
        procs = [jx.popen(["-n", 1, "true"]) for _ in range(4)]
        for p in procs:
            p.communicate(timeout=10)
            assert p.returncode == 0
        assert_serving(jx, d)
        st = jx.run(["status", "--json"], timeout=10)
        assert st.returncode == 0
    finally:
        stalled.close()
        for s in idle:
            s.close()
    assert_serving(jx, d)


def test_client_that_never_reads(jx, fake_daemon):
    """A client pipelining status requests without reading the replies must
    not block the daemon."""
    d = fake_daemon(cores=64)
    s = connect(_socket_path(jx))
    s.setblocking(False)
    req = frame({"type": "status", "v": 1})
    sent = 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and sent < 20000:
        try:
            s.send(req)
            sent += 1
        except BlockingIOError:
            time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            break
    try:
        assert_serving(jx, d)
    finally:
        s.close()
    assert_serving(jx, d)


def test_disconnect_after_submit_frees_nothing_twice(jx, fake_daemon):
    """Clients vanishing mid-conversation (partial frames, right after
    connect) leave the ledger clean."""
    d = fake_daemon(cores=2)
    path = _socket_path(jx)
    for i in range(50):
        s = connect(path)
        if i % 2:
            s.sendall(frame({"type": "status", "v": 1})[:7])
        s.close()
    assert_serving(jx, d)
    st = jx.status()
    assert st["running"] == [] and st["queued"] == []
    assert procs_with_marker(jx.marker)  # the daemon is still there


# ---------------------------------------------------------------- a reader that stops reading


def stalled_pipe():
    """A pipe whose reader never reads: (read end kept open, write end)."""
    r, w = os.pipe()
    return r, w


@pytest.mark.parametrize("label", ["-l", "--tag-output"])
def test_labelled_output_to_a_stalled_reader_still_times_out(jx, label):
    """The launcher forwards labelled output without ever blocking its loop:
    with nobody reading its stdout, the job's timeout still fires."""
    r, w = stalled_pipe()
    try:
        t0 = time.monotonic()
        p = jx.popen([label, "-timeout", 2, "-n", 2, "sh", "-c", "yes 0123456789012345678901234567890123456789"],
                     stdout=w, stderr=subprocess.PIPE)
        os.close(w)
        w = -1
        _, err = p.communicate(timeout=30)
        assert p.returncode == 255, err
        assert "APPLICATION TIMED OUT" in err
        assert time.monotonic() - t0 < 15
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_labelled_output_to_a_stalled_reader_forwards_signals(jx, tmp_path):
    r, w = stalled_pipe()
    flag = tmp_path / "up"
    try:
        # (no trap: a shell blocked writing runs its traps only once the write returns)
        p = jx.popen(["-l", "-n", 1, "sh", "-c", f'touch {flag}; while :; do echo spam; done'],
                     stdout=w, stderr=subprocess.PIPE)
        os.close(w)
        w = -1
        wait_until(flag.exists, 10, what="rank up")
        time.sleep(0.5)  # the pipe and the launcher's buffer fill up
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
        assert p.returncode == 143, err
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_labelled_output_is_complete_through_a_slow_reader(jx):
    """Backpressure loses nothing: every line arrives, labelled, in order per rank."""
    p = jx.popen(["-l", "-n", 2, "sh", "-c", 'i=0; while [ $i -lt 20000 ]; do echo "line $i"; i=$((i+1)); done'])
    lines = []
    for line in p.stdout:
        lines.append(line)
        if len(lines) % 2000 == 0:
            time.sleep(0.05)
    p.wait(timeout=60)
    assert p.returncode == 0
    for rank in (0, 1):
        mine = [l for l in lines if l.startswith(f"[{rank}] ")]
        assert mine == [f"[{rank}] line {i}\n" for i in range(20000)]
