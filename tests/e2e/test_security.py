"""Security (issue 4, item 4): another uid is refused (by the private runtime
directory and, behind it, by the daemon's SO_PEERCRED check) and gets its own
daemon; planted runtime directories (symlinks, wrong owner or mode) are
refused, for JIFFY_RUNTIME_DIR and for the default /tmp/jiffy-<uid>; frames
are bounded; nothing from a message or an argument reaches a shell; a message
cannot make the daemon kill or remove what is not its job's.

Needs root (to create a second user and to run as it); skips otherwise.
"""

import json
import os
import pwd
import random
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import (JIFFY, MARKER_VAR, PROBE, make_runtime_dir, pid_alive, procs_with_marker, read_records,
                      wait_until)


def frame(payload) -> bytes:
    if not isinstance(payload, (bytes, bytearray)):
        payload = json.dumps(payload).encode()
    return struct.pack(">I", len(payload)) + payload


def connect(path, timeout=10):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def read_frame(s, timeout=10):
    """The next frame as a dict, 'eof' when the daemon closed, 'timeout'."""
    s.settimeout(timeout)
    buf = b""
    try:
        while len(buf) < 4:
            c = s.recv(4 - len(buf))
            if not c:
                return "eof"
            buf += c
        n = struct.unpack(">I", buf)[0]
        body = b""
        while len(body) < n:
            c = s.recv(min(n - len(body), 1 << 20))
            if not c:
                return "eof"
            body += c
        return json.loads(body)
    except socket.timeout:
        return "timeout"
    except (ConnectionResetError, BrokenPipeError):
        return "eof"


def the_socket(jx):
    socks = jx.sockets()
    assert len(socks) == 1, socks
    return socks[0]


def daemon_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def assert_serving(jx, daemon=None):
    if daemon is not None:
        assert daemon.poll() is None, f"the daemon died: {jx.daemon_log()}"
    cp = jx.run(["-n", 1, "true"], timeout=30)
    assert cp.returncode == 0, cp.stderr


# --------------------------------------------------------------------------
# a second user


class OtherUser:
    def __init__(self, name, uid, gid, created):
        self.name, self.uid, self.gid, self.created = name, uid, gid, created

    def argv(self, cmd):
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--"] + \
            [str(c) for c in cmd]

    def run(self, cmd, env, timeout=60, cwd="/", **kw):
        try:
            cp = subprocess.run(self.argv(cmd), env=env, capture_output=True, text=True, timeout=timeout,
                                cwd=cwd, stdin=subprocess.DEVNULL, **kw)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"as {self.name}: `{' '.join(map(str, cmd))}` did not finish within {timeout}s: "
                        f"{e.stderr!r}")
        return cp

    def default_dir(self):
        return f"/tmp/jiffy-{self.uid}"


@pytest.fixture
def other_user(jx):
    if os.geteuid() != 0:
        pytest.skip("needs root to create and become a second user")
    if not shutil.which("setpriv"):
        pytest.skip("setpriv not found")
    name = f"jiffytest{random.randrange(10**6)}"
    cp = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                        capture_output=True, text=True)
    if cp.returncode == 0:
        pw = pwd.getpwnam(name)
        user = OtherUser(name, pw.pw_uid, pw.pw_gid, True)
    else:
        pw = pwd.getpwnam("nobody")
        user = OtherUser("nobody", pw.pw_uid, pw.pw_gid, False)
    shutil.rmtree(user.default_dir(), ignore_errors=True)
    if os.path.islink(user.default_dir()) or os.path.isfile(user.default_dir()):
        os.unlink(user.default_dir())
    yield user
    # stop its daemon, then kill whatever of ours still runs as that user
    subprocess.run(user.argv([JIFFY, "stop"]), env=user_env(jx), capture_output=True, timeout=20, cwd="/")
    for pid, _, _ in procs_with_marker(jx.marker):
        try:
            if os.stat(f"/proc/{pid}").st_uid == user.uid:
                os.kill(pid, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            pass
    for p in (user.default_dir(),):
        if os.path.islink(p) or os.path.isfile(p):
            os.unlink(p)
        else:
            shutil.rmtree(p, ignore_errors=True)
    if user.created:
        subprocess.run(["userdel", user.name], capture_output=True)


@pytest.fixture
def public_dir():
    """A scratch directory in /tmp that the other user can reach (pytest's
    tmp_path lies under a 0700 directory)."""
    d = tempfile.mkdtemp(prefix="jfe2e-pub-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def user_env(jx, **extra):
    """A clean environment for the other user: no runtime dir of ours, the
    test's marker (so that the teardown sees its strays)."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", MARKER_VAR: jx.marker}
    env.update(extra)
    return env


CLIENT = r"""
import json, socket, struct, sys
path, kind = sys.argv[1], sys.argv[2]
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
except OSError as e:
    print("CONNECT", type(e).__name__, e.errno); sys.exit(0)
if kind == "status":
    msg = {"type": "status", "v": 1}
else:
    msg = {"type": "submit", "v": 1, "ntasks": 1, "cores_per_task": 1, "gpus_per_task": 0,
           "gpus_per_job": 0, "bind": "core", "pid": 1, "command": "intruder"}
b = json.dumps(msg).encode()
try:
    s.sendall(struct.pack(">I", len(b)) + b)
    h = b""
    while len(h) < 4:
        c = s.recv(4 - len(h))
        if not c:
            print("EOF"); sys.exit(0)
        h += c
    n = struct.unpack(">I", h)[0]
    d = b""
    while len(d) < n:
        c = s.recv(n - len(d))
        if not c:
            break
        d += c
    print("REPLY", json.loads(d).get("type"))
except socket.timeout:
    print("TIMEOUT")
except OSError as e:
    print("EXC", type(e).__name__)
"""


def test_other_uid_cannot_reach_private_socket(jx, fake_daemon, other_user):
    """As is (runtime directory 0700), another user cannot even reach the
    socket path."""
    d = fake_daemon(cores=2)
    sock = the_socket(jx)
    assert os.stat(jx.runtime_dir).st_mode & 0o777 == 0o700
    for kind in ("status", "submit"):
        cp = other_user.run(["/usr/bin/python3", "-c", CLIENT, sock, kind], env=user_env(jx))
        assert cp.stdout.strip().startswith("CONNECT PermissionError"), (cp.stdout, cp.stderr)
    assert_serving(jx, d)


@pytest.mark.parametrize("socket_mode", ["as-created", "0666"])
def test_other_uid_refused_by_peer_credentials(jx, fake_daemon, other_user, socket_mode):
    """With the directory loosened to 0711 (and the socket made writable for
    all), the daemon itself refuses the other uid (SO_PEERCRED): no reply,
    no job, a log line; our own clients are still served."""
    d = fake_daemon(cores=2)
    sock = the_socket(jx)
    created_mode = os.stat(sock).st_mode & 0o777
    os.chmod(jx.runtime_dir, 0o711)
    try:
        if socket_mode == "0666":
            os.chmod(sock, 0o666)
        results = {}
        for kind in ("status", "submit"):
            cp = other_user.run(["/usr/bin/python3", "-c", CLIENT, sock, kind], env=user_env(jx))
            results[kind] = cp.stdout.strip() or cp.stderr.strip()
    finally:
        os.chmod(sock, created_mode)
        os.chmod(jx.runtime_dir, 0o700)
    st = jx.status()
    assert st["queued"] == [] and st["running"] == [], "the intruder's submit was taken"
    assert all(h is None for c in st["resources"]["cores"] for h in c["holders"])
    for kind, r in results.items():
        if socket_mode == "as-created" and r.startswith("CONNECT PermissionError"):
            continue  # the socket file's own mode keeps others out too
        assert r in ("EOF", "EXC ConnectionResetError", "EXC BrokenPipeError"), \
            f"{kind} from uid {other_user.uid} should be refused, got {r!r}"
    if socket_mode == "0666":
        log = jx.daemon_log()
        assert f"refused a connection from uid {other_user.uid}" in log, log
    assert_serving(jx, d)


def test_other_user_gets_its_own_daemon(jx, other_user, public_dir):
    """A launcher run by another user (default runtime directory) starts and
    uses its own daemon: it neither waits for our jobs nor sees them, and we
    do not see its jobs."""
    assert jx.run(["-n", 1, "true"]).returncode == 0
    ours = jx.status()
    n = len(ours["resources"]["cores"])
    out = os.path.join(public_dir, "rec")
    os.mkdir(out)
    os.chmod(out, 0o777)
    busy = jx.popen(["-n", n, PROBE, f"out={out}", "tag=ours", "sleep=8000"])
    jx.wait_running(busy.pid)
    env = user_env(jx)
    t0 = time.monotonic()
    cp = other_user.run([JIFFY, "-n", n, PROBE, f"out={out}", "tag=theirs"], env=env, timeout=60)
    took = time.monotonic() - t0
    assert cp.returncode == 0, cp.stderr
    assert took < 6, f"the other user's job waited {took:.1f}s: it shares our ledger?"
    theirs_rec = read_records(out)["theirs"]
    assert len(theirs_rec) == n
    st = other_user.run([JIFFY, "status", "--json"], env=env)
    assert st.returncode == 0, st.stderr
    theirs = json.loads(st.stdout)
    assert theirs["daemon"] and theirs["daemon"]["pid"] != ours["daemon"]["pid"]
    assert theirs["daemon"]["socket"].startswith(other_user.default_dir() + "/"), theirs["daemon"]
    assert os.stat(f"/proc/{theirs['daemon']['pid']}").st_uid == other_user.uid
    assert busy.pid not in [j["pid"] for j in theirs["running"] + theirs["queued"]], "they see our job"
    assert [j["pid"] for j in jx.status()["running"]] == [busy.pid], "we see their job"
    dstat = os.lstat(other_user.default_dir())
    assert stat.S_ISDIR(dstat.st_mode) and dstat.st_uid == other_user.uid and dstat.st_mode & 0o777 == 0o700
    other_user.run([JIFFY, "stop"], env=env)
    wait_until(lambda: not pid_alive(theirs["daemon"]["pid"]), 10, what="their daemon to stop")
    busy.terminate()
    busy.communicate(timeout=20)


# --------------------------------------------------------------------------
# planted runtime directories


def assert_refused(cp, path, what):
    assert cp.returncode != 0, f"{what}: accepted ({cp.stdout!r})"
    lines = [l for l in cp.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("jiffy: "), f"{what}: not a one-line error: {cp.stderr!r}"
    assert path in lines[0], f"{what}: the error should name {path}: {lines[0]!r}"


PLANTS = ["symlink-to-own-private-dir", "dangling-symlink", "dir-owned-by-root", "dir-owned-by-root-0777",
          "own-dir-0777", "own-dir-0711", "own-dir-0750", "regular-file", "fifo"]


def plant(path, kind, owner_uid, owner_gid, scratch):
    """Creates at path what an attacker (root here) leaves there."""
    if kind == "symlink-to-own-private-dir":
        target = os.path.join(scratch, "target")
        os.mkdir(target, 0o700)
        os.chown(target, owner_uid, owner_gid)
        os.symlink(target, path)
        return target
    if kind == "dangling-symlink":
        target = os.path.join(scratch, "nowhere")
        os.symlink(target, path)
        return target
    if kind.startswith("dir-owned-by-root"):
        os.mkdir(path)
        os.chmod(path, 0o777 if kind.endswith("0777") else 0o700)
        return path
    if kind.startswith("own-dir-"):
        os.mkdir(path)
        os.chown(path, owner_uid, owner_gid)
        os.chmod(path, int(kind.rsplit("-", 1)[1], 8))
        return path
    if kind == "regular-file":
        with open(path, "w") as f:
            f.write("x")
        os.chown(path, owner_uid, owner_gid)
        return path
    if kind == "fifo":
        os.mkfifo(path, 0o600)
        os.chown(path, owner_uid, owner_gid)
        return path
    raise ValueError(kind)


def nothing_created(target):
    if os.path.isdir(target) and not os.path.islink(target):
        return os.listdir(target) == []
    return not os.path.exists(target) or os.path.isfile(target) or stat.S_ISFIFO(os.stat(target).st_mode)


# What another user can plant at /tmp/jiffy-<uid> (lstat says it is theirs):
# the victim cannot remove it (sticky /tmp), so jiffy moves aside.
FOREIGN_PLANTS = {"symlink-to-own-private-dir", "dangling-symlink", "dir-owned-by-root", "dir-owned-by-root-0777"}


@pytest.fixture
def other_home(other_user):
    """The second user's home directory (useradd --no-create-home names one
    it does not make): where jiffy keeps the name of its alternative."""
    home = pwd.getpwuid(other_user.uid).pw_dir
    made = not os.path.exists(home)
    if made:
        os.makedirs(home, mode=0o700)
        os.chown(home, other_user.uid, other_user.gid)
    yield home
    if made:
        shutil.rmtree(home, ignore_errors=True)
    else:
        shutil.rmtree(os.path.join(home, ".cache", "jiffy"), ignore_errors=True)


def alternative_dirs(uid):
    return [p for p in Path("/tmp").glob(f"jiffy-{uid}-*") if p.is_dir()]


@pytest.mark.parametrize("kind", PLANTS)
def test_planted_default_runtime_dir(jx, other_user, other_home, kind, public_dir):
    """What another user plants at /tmp/jiffy-<uid> before the user's first
    launch does not stop the user: jiffy moves to /tmp/jiffy-<uid>-<suffix>,
    a name nobody can know beforehand (kept in ~/.cache/jiffy), and launches,
    status and the daemon work. Nothing is created in what was planted. One
    of the user's own that is unsafe (wrong mode, not a directory) is refused
    with a clear one-line error instead: its owner can fix it."""
    path = other_user.default_dir()
    target = plant(path, kind, other_user.uid, other_user.gid, public_dir)
    try:
        if kind in FOREIGN_PLANTS:
            cp = other_user.run([JIFFY, "-n", 1, "true"], env=user_env(jx), timeout=30)
            assert cp.returncode == 0, f"{kind}: {cp.stderr!r}"
            st = other_user.run([JIFFY, "status", "--json"], env=user_env(jx))
            assert st.returncode == 0, st.stderr
            sock = json.loads(st.stdout)["daemon"]["socket"]
            alt = alternative_dirs(other_user.uid)
            assert len(alt) == 1 and sock.startswith(str(alt[0]) + "/"), (sock, alt)
            dstat = os.lstat(alt[0])
            assert dstat.st_uid == other_user.uid and dstat.st_mode & 0o777 == 0o700
            with open(os.path.join(other_home, ".cache", "jiffy", "runtime-suffix")) as f:
                assert str(alt[0]).endswith("-" + f.read().strip())
            # the same directory next time, whatever the environment says
            cp = other_user.run([JIFFY, "status", "--json"], env=user_env(jx, HOME="/", XDG_RUNTIME_DIR="/tmp"))
            assert json.loads(cp.stdout)["daemon"]["socket"] == sock
            # and launches keep the fast path: the front finds the
            # alternative too, and runs the rank itself (its parent).
            for env in (user_env(jx), user_env(jx, HOME="/")):
                cp = other_user.run([JIFFY, "-n", 1, "sh", "-c", "readlink /proc/$PPID/exe"], env=env, timeout=30)
                assert cp.returncode == 0 and cp.stdout.strip() == str(JIFFY), (kind, cp.stdout, cp.stderr)
            other_user.run([JIFFY, "stop"], env=user_env(jx))
        else:
            for args in (["-n", 1, "true"], ["status"], ["daemon"]):
                cp = other_user.run([JIFFY] + args, env=user_env(jx), timeout=30)
                assert_refused(cp, path, f"{kind}: jiffy {' '.join(map(str, args))}")
            assert not [p for p in procs_with_marker(jx.marker)
                        if os.stat(f"/proc/{p[0]}").st_uid == other_user.uid], "a daemon started"
        assert nothing_created(target), os.listdir(target)
    finally:
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
        else:
            shutil.rmtree(path)
        for alt in alternative_dirs(other_user.uid):
            shutil.rmtree(alt, ignore_errors=True)


def test_planted_default_runtime_dir_without_a_home(jx, other_user, public_dir):
    """With nowhere to keep the alternative's name (no home directory), a
    planted /tmp/jiffy-<uid> gets a one-line error that says what to do."""
    path = other_user.default_dir()
    plant(path, "dir-owned-by-root", other_user.uid, other_user.gid, public_dir)
    try:
        assert not os.path.exists(pwd.getpwuid(other_user.uid).pw_dir)
        cp = other_user.run([JIFFY, "-n", 1, "true"], env=user_env(jx), timeout=30)
        assert_refused(cp, path, "planted, no home")
        assert "JIFFY_RUNTIME_DIR" in cp.stderr and "another user" in cp.stderr, cp.stderr
    finally:
        shutil.rmtree(path)


@pytest.mark.parametrize("kind", PLANTS)
def test_planted_jiffy_runtime_dir_refused(jx, kind, tmp_path, other_user):
    """The same for JIFFY_RUNTIME_DIR (run as ourselves; 'own' is us, the
    other owner is the second user)."""
    me, my_gid = os.geteuid(), os.getegid()
    path = str(tmp_path / "rt")
    # 'dir-owned-by-root' means 'owned by someone else' when we are root
    if kind.startswith("dir-owned-by-root"):
        os.mkdir(path)
        os.chown(path, other_user.uid, other_user.gid)
        os.chmod(path, 0o777 if kind.endswith("0777") else 0o700)
        target = path
    else:
        target = plant(path, kind, me, my_gid, str(tmp_path))
    for args in (["-n", 1, "true"], ["status"], ["daemon"]):
        cp = jx.run(args, env={"JIFFY_RUNTIME_DIR": path}, timeout=30)
        assert_refused(cp, path, f"JIFFY_RUNTIME_DIR {kind}: jiffy {' '.join(map(str, args))}")
    assert nothing_created(target)
    assert not [p for p in procs_with_marker(jx.marker) if p[1] == "jiffyd"], "a daemon started"


# --------------------------------------------------------------------------
# message sizes


def test_frame_size_limit(jx, fake_daemon):
    """Client frames are limited to 64 KiB: one byte more is refused (error or
    hang-up) as soon as the header arrives, whatever length it claims; the
    daemon's memory does not grow; a frame at the limit is served."""
    d = fake_daemon(cores=2)
    sock = the_socket(jx)

    def padded(n):  # a valid status request of exactly n bytes
        head = b'{"type":"status","v":1,"pad":"'
        return head + b"x" * (n - len(head) - 2) + b'"}'

    s = connect(sock)
    s.sendall(frame(padded(64 * 1024)))
    reply = read_frame(s)
    assert isinstance(reply, dict) and reply.get("type") == "status_reply", f"64 KiB frame: {reply!r}"
    s.close()
    rss0 = daemon_rss_kb(d.pid)
    for claimed in (64 * 1024 + 1, 1 << 20, 16 << 20, (1 << 32) - 1):
        s = connect(sock)
        t0 = time.monotonic()
        s.sendall(struct.pack(">I", claimed) + b'{"type":"status","v":1,"pad":"' + b"x" * 1000)
        reply = read_frame(s, timeout=5)
        took = time.monotonic() - t0
        assert reply == "eof" or (isinstance(reply, dict) and reply.get("type") == "error"), \
            f"a frame claiming {claimed} bytes: {reply!r}"
        assert took < 3, f"a frame claiming {claimed} bytes was refused only after {took:.1f}s"
        s.close()
    # many clients each holding an almost-full frame: bounded memory
    held = []
    for _ in range(100):
        s = connect(sock)
        s.sendall(struct.pack(">I", 64 * 1024) + b"{" + b" " * (63 * 1024))
        held.append(s)
    time.sleep(0.5)
    for s in held:
        s.close()
    s = connect(sock)  # a 64 KiB + 1 frame sent whole
    try:
        s.sendall(frame(padded(64 * 1024 + 1)))
    except (BrokenPipeError, ConnectionResetError):
        pass
    reply = read_frame(s)
    assert reply == "eof" or (isinstance(reply, dict) and reply.get("type") == "error"), reply
    s.close()
    grew = daemon_rss_kb(d.pid) - rss0
    assert grew < 32 * 1024, f"the daemon's RSS grew by {grew} KiB"
    assert_serving(jx, d)


# --------------------------------------------------------------------------
# nothing reaches a shell


NASTY = [
    "$(touch {f}.dollar)",
    "`touch {f}.backtick`",
    "; touch {f}.semicolon",
    "| touch {f}.pipe",
    "&& touch {f}.and",
    "\n touch {f}.newline",
    "' \"; touch {f}.quotes",
    "${{IFS}}touch${{IFS}}{f}.ifs",
]


def pwned_files(base):
    d = os.path.dirname(base)
    return [n for n in os.listdir(d) if n.startswith(os.path.basename(base))]


@pytest.fixture
def pwn_base():
    base = f"/tmp/jfe2e-pwned-{uuid.uuid4().hex[:10]}"
    yield base
    for n in pwned_files(base):
        os.unlink(os.path.join("/tmp", n))


def test_no_shell_for_arguments(jx, fake_daemon, pwn_base, tmp_path):
    """Shell syntax in the program's arguments, the program name, -genv
    values, -wdir and the output pattern is passed on literally."""
    fake_daemon(cores=2)
    args = [s.format(f=pwn_base) for s in NASTY]
    cp = jx.run(["-n", 2, "/usr/bin/printf", "%s\\0"] + args, timeout=30)
    assert cp.returncode == 0, cp.stderr
    got = cp.stdout.split("\0")[:-1]
    assert got == args * 2, got
    cp = jx.run(["-n", 1, args[0]], timeout=30)
    assert cp.returncode == 127, (cp.returncode, cp.stderr)
    cp = jx.run(["-genv", "NASTY", args[0], "-n", 1, "/usr/bin/printenv", "NASTY"], timeout=30)
    assert cp.returncode == 0 and cp.stdout == args[0] + "\n", (cp.stdout, cp.stderr)
    cp = jx.run(["-wdir", args[2], "-n", 1, "true"], timeout=30)
    assert cp.returncode != 0
    pattern = str(tmp_path / "out.$(id -u);`id -u`.%r")
    cp = jx.run(["-outfile-pattern", pattern, "-n", 1, "/bin/echo", "hi"], timeout=30)
    assert cp.returncode == 0, cp.stderr
    assert (tmp_path / "out.$(id -u);`id -u`.0").read_text() == "hi\n", os.listdir(tmp_path)
    # the status listing shows the command; printing it runs nothing
    p = jx.popen(["-n", 1, PROBE, "sleep=30000", args[0], args[1]])
    jx.wait_running(p.pid)
    text = jx.run(["status"], timeout=30)
    assert text.returncode == 0
    assert any(args[0] in j["command"] for j in jx.status()["running"])
    p.kill()
    p.wait()
    time.sleep(0.3)
    assert pwned_files(pwn_base) == [], "a shell ran something"


def test_no_shell_for_message_fields(jx, fake_daemon, pwn_base):
    """Shell syntax in a submit's command, bind and a started message's
    jobdir is data, never run; status echoes it verbatim."""
    d = fake_daemon(cores=2)
    sock = the_socket(jx)
    nasty = " ".join(s.format(f=pwn_base) for s in NASTY)[:4000]
    s = connect(sock)
    s.sendall(frame({"type": "submit", "v": 1, "ntasks": 1, "cores_per_task": 1, "gpus_per_task": 0,
                     "gpus_per_job": 0, "bind": "core", "pid": os.getpid(), "command": nasty}))
    grant = read_frame(s)
    assert isinstance(grant, dict) and grant.get("type") == "grant", grant
    running = jx.status()["running"]
    assert [j["command"] for j in running] == [nasty]
    assert jx.run(["status"]).returncode == 0
    s.sendall(frame({"type": "finished", "code": 0}))
    wait_until(lambda: jx.status()["running"] == [], 5, what="the job to be released")
    s.close()
    # bind with shell syntax is refused
    s = connect(sock)
    s.sendall(frame({"type": "submit", "v": 1, "ntasks": 1, "cores_per_task": 1, "gpus_per_task": 0,
                     "gpus_per_job": 0, "bind": f"core; touch {pwn_base}.bind", "pid": 1, "command": "x"}))
    r = read_frame(s)
    assert r == "eof" or (isinstance(r, dict) and r.get("type") == "error"), r
    s.close()
    # a jobdir with shell syntax, then a lost job: the daemon cleans up without a shell
    s = connect(sock)
    s.sendall(frame({"type": "submit", "v": 1, "ntasks": 1, "cores_per_task": 1, "gpus_per_task": 0,
                     "gpus_per_job": 0, "bind": "core", "pid": os.getpid(), "command": "x"}))
    grant = read_frame(s)
    assert grant.get("type") == "grant", grant
    job = grant["job"]
    s.sendall(frame({"type": "started", "pgid": unused_pgid(),
                     "jobdir": f"/tmp/jiffy-{os.geteuid()}-job{job}-$(touch {pwn_base}.jobdir)"}))
    time.sleep(0.2)
    s.close()
    wait_until(lambda: jx.status()["running"] == [], 10, what="the lost job to be released")
    time.sleep(0.3)
    assert pwned_files(pwn_base) == [], "a shell ran something"
    assert_serving(jx, d)


def unused_pgid():
    """A process group id no process has."""
    used = set()
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    s = f.read()
                used.add(int(s[s.rindex(")") + 2:].split()[2]))
                used.add(int(p))
            except (OSError, ValueError, IndexError):
                pass
    pid_max = int(open("/proc/sys/kernel/pid_max").read())
    for cand in range(pid_max - 1, 1, -1):
        if cand not in used:
            return cand
    raise AssertionError("no unused pid")


# --------------------------------------------------------------------------
# a message cannot turn the daemon against processes or files outside its job


def test_lost_job_cleanup_removes_only_its_own_job_dir(jx, fake_daemon, tmp_path):
    """A started message's jobdir naming another directory, or a symlink
    dressed up as a job directory, is never removed when the job is lost."""
    d = fake_daemon(cores=2)
    sock = the_socket(jx)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    tmpdir = os.environ.get("TMPDIR", "/tmp")
    made = []
    try:
        for variant in ("plain-dir", "symlink-named-like-a-job-dir", "dotdot", "other-job-id"):
            s = connect(sock)
            s.sendall(frame({"type": "submit", "v": 1, "ntasks": 1, "cores_per_task": 1, "gpus_per_task": 0,
                             "gpus_per_job": 0, "bind": "core", "pid": os.getpid(), "command": variant}))
            grant = read_frame(s)
            assert grant.get("type") == "grant", grant
            job = grant["job"]
            prefix = os.path.join(tmpdir, f"jiffy-{os.geteuid()}-job{job}-")
            if variant == "plain-dir":
                jobdir = str(victim)
            elif variant == "symlink-named-like-a-job-dir":
                jobdir = prefix + "abcdef"
                os.symlink(victim, jobdir)
                made.append(jobdir)
            elif variant == "dotdot":
                jobdir = prefix + "ab/../" + os.path.relpath(victim, tmpdir)
            else:
                other = os.path.join(tmpdir, f"jiffy-{os.geteuid()}-job{job + 1000}-zzzzzz")
                os.mkdir(other)
                made.append(other)
                jobdir = other
            s.sendall(frame({"type": "started", "pgid": unused_pgid(), "jobdir": jobdir}))
            time.sleep(0.1)
            s.close()
            wait_until(lambda: jx.status()["running"] == [], 10, what=f"{variant}: the lost job's release")
            assert (victim / "precious").read_text() == "keep me", f"{variant}: the victim was removed"
            for m in made:
                assert os.path.lexists(m), f"{variant}: {m} was removed"
    finally:
        for m in made:
            if os.path.islink(m):
                os.unlink(m)
            else:
                shutil.rmtree(m, ignore_errors=True)
    assert_serving(jx, d)


def test_started_message_cannot_kill_a_foreign_process_group(jx, fake_daemon):
    """A client that names some other process group of ours in `started` and
    hangs up must not make the daemon SIGKILL that group: the group is not
    the client's job (its leader is no child of the client)."""
    d = fake_daemon(cores=2)
    sock = the_socket(jx)
    # The bystander must not be the client's own child (a client may well
    # name its own children's group): start it through a shell that exits.
    out = subprocess.run(["sh", "-c", "setsid sleep 60 </dev/null >/dev/null 2>&1 & echo $!"],
                         env=jx.env, capture_output=True, text=True, check=True)
    bystander_pid = int(out.stdout.strip())

    class Bystander:
        pid = bystander_pid

        def poll(self):
            try:
                os.kill(bystander_pid, 0)
                with open(f"/proc/{bystander_pid}/stat") as fh:
                    return -9 if fh.read().rsplit(")", 1)[1].split()[0] == "Z" else None
            except OSError:
                return -9

        def kill(self):
            try:
                os.kill(bystander_pid, 9)
            except OSError:
                pass

        def wait(self, timeout=None):
            return 0

    bystander = Bystander()
    try:
        s = connect(sock)
        s.sendall(frame({"type": "submit", "v": 1, "ntasks": 1, "cores_per_task": 1, "gpus_per_task": 0,
                         "gpus_per_job": 0, "bind": "core", "pid": os.getpid(), "command": "x"}))
        assert read_frame(s).get("type") == "grant"
        s.sendall(frame({"type": "started", "pgid": bystander.pid}))
        time.sleep(0.2)
        s.close()
        wait_until(lambda: jx.status()["running"] == [], 10, what="the lost job's release")
        time.sleep(0.3)
        assert bystander.poll() is None, \
            f"the daemon killed process group {bystander.pid}, which a message merely named"
    finally:
        bystander.kill()
        bystander.wait()
    assert_serving(jx, d)


def test_started_pgid_1_does_not_kill_everything(jx, jiffy_bin, tmp_path):
    """`started` with pgid 1 followed by a hang-up must not make the daemon
    call kill(-1, SIGKILL) (every process the user may signal). Run inside a
    fresh PID namespace, where pid 1 leads process group 1, so that the
    damage, if any, stays there."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare")
    script = tmp_path / "inside.sh"
    client = tmp_path / "client.py"
    client.write_text(
        "import json, socket, struct, sys, time\n"
        "def frame(o):\n"
        "    b = json.dumps(o).encode(); return struct.pack('>I', len(b)) + b\n"
        "s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])\n"
        "s.sendall(frame({'type':'submit','v':1,'ntasks':1,'cores_per_task':1,'gpus_per_task':0,"
        "'gpus_per_job':0,'bind':'core','pid':1,'command':'x'}))\n"
        "h = s.recv(4); n = struct.unpack('>I', h)[0]; b = b''\n"
        "while len(b) < n: b += s.recv(n - len(b))\n"
        "print('GOT', json.loads(b)['type'], flush=True)\n"
        "s.sendall(frame({'type':'started','pgid':1})); time.sleep(0.3); s.close()\n")
    rt = make_runtime_dir()
    script.write_text(
        "#!/bin/sh\n"
        f"export JIFFY_RUNTIME_DIR={rt}\n"
        "sleep 60 & BYSTANDER=$!\n"
        f"{jiffy_bin} daemon --cores 2 --idle-timeout 0 || exit 3\n"
        f"SOCK=$(ls {rt}/*.sock)\n"
        f"/usr/bin/python3 {client} $SOCK || echo CLIENT-RC=$?\n"
        "sleep 1\n"
        "if kill -0 $BYSTANDER 2>/dev/null; then echo BYSTANDER-ALIVE; else echo BYSTANDER-KILLED; fi\n"
        f"{jiffy_bin} stop\n"
        f"cat {rt}/*.log >&2\n"
        "kill $BYSTANDER 2>/dev/null\n")
    script.chmod(0o755)
    try:
        cp = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "setsid", str(script)],
                            capture_output=True, text=True, timeout=60, env=jx.env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the namespace run hung: {e.stdout!r} {e.stderr!r}")
    finally:
        shutil.rmtree(rt, ignore_errors=True)
    if "BYSTANDER" not in cp.stdout:
        pytest.skip(f"cannot run in a PID namespace: rc={cp.returncode} {cp.stderr.strip()[:300]}")
    assert "GOT grant" in cp.stdout, f"the client got no grant: {cp.stdout!r} {cp.stderr!r}"
    assert "BYSTANDER-ALIVE" in cp.stdout, \
        f"the daemon killed every process in the namespace (kill(-1)): {cp.stdout!r} {cp.stderr!r}"


def abstract_names(prefix):
    """Bound abstract Unix socket names starting with prefix (without the @)."""
    names = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            parts = line.split()
            if len(parts) >= 8 and parts[7].startswith("@" + prefix):
                names.add(parts[7][1:])
    return names


def daemon_identity(pid):
    """The rendezvous name a daemon runs under (its argv[0] is jiffyd:<name>)."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv0 = f.read().split(b"\0")[0].decode()
    assert argv0.startswith("jiffyd:"), argv0
    return argv0[len("jiffyd:"):]


def test_other_user_cannot_squat_the_daemon_lock(jx, other_user):
    """The daemon's lifetime lock is an abstract socket name, which any local
    user can bind. Another user binding our lock's name first must not keep
    our daemon from starting (a local denial of service)."""
    assert jx.run(["-n", 1, "true"]).returncode == 0
    prefix = f"jiffy/{os.geteuid()}/"
    pid = jx.daemon_pid()
    name = daemon_identity(pid)
    assert name in abstract_names(prefix), f"cannot find our daemon's lock among {abstract_names(prefix)}"
    jx.stop()
    wait_until(lambda: not pid_alive(pid) and name not in abstract_names(prefix), 10,
               what="our daemon and its lock to go")
    squat = ("import socket, sys, time\n"
             "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
             "s.bind(b'\\0' + sys.argv[1].encode())\n"
             "print('bound', flush=True)\n"
             "time.sleep(120)\n")
    squatter = subprocess.Popen(other_user.argv(["/usr/bin/python3", "-c", squat, name]), env=user_env(jx),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    jx.popens.append(squatter)
    try:
        assert squatter.stdout.readline().strip() == "bound", squatter.stderr.read()
        cp = jx.run(["-n", 1, "true"], timeout=60)
        assert cp.returncode == 0, \
            f"uid {other_user.uid} holding our lock name kept our daemon from starting: {cp.stderr.strip()!r}"
    finally:
        squatter.kill()
        squatter.wait()


SUBMIT = {"type": "submit", "v": 1, "ntasks": 1, "cores_per_task": 1, "gpus_per_task": 0,
          "gpus_per_job": 0, "bind": "core", "command": "x"}


def test_launcher_lost_before_started_is_cleaned_up_by_its_tag(jx, fake_daemon):
    """The tag comes with `submit`: a launcher that dies before `started`
    (the front names its group only once a job has run 2 ms) still has every
    process carrying its tag killed, and the cores come back after."""
    fake_daemon(cores=2)
    tag = os.urandom(16).hex()
    s = connect(the_socket(jx))
    s.sendall(frame(dict(SUBMIT, pid=os.getpid(), tag=tag)))
    assert read_frame(s).get("type") == "grant"
    out = subprocess.run(["sh", "-c", "setsid sleep 60 </dev/null >/dev/null 2>&1 & echo $!"],
                         env=dict(jx.env, JIFFY_JOB_TAG=tag), capture_output=True, text=True, check=True)
    helper = int(out.stdout.strip())
    assert pid_alive(helper)
    s.close()  # no `started`, no `finished`
    wait_until(lambda: not pid_alive(helper), 10, what="the tagged helper killed")
    wait_until(lambda: jx.status()["running"] == [], 10, what="the lost job's release")


@pytest.mark.parametrize("tag", ["0123", "0123456789ABCDEF", "0123456789abcdef;x", 7])
def test_submit_with_a_malformed_tag_is_refused(jx, fake_daemon, tag):
    fake_daemon(cores=2)
    s = connect(the_socket(jx))
    s.sendall(frame(dict(SUBMIT, pid=os.getpid(), tag=tag)))
    reply = read_frame(s)
    assert isinstance(reply, dict) and reply.get("type") == "error" and "tag" in reply["message"], reply
    assert read_frame(s) == "eof"
    assert jx.status()["running"] == [] and jx.status()["queued"] == []


# A library planted in the directory a user launches from. jiffy's dynamic
# executables (jiffy-pmix, jiffyd, jiffy-history) must find their libraries
# where the system keeps them, never in the working directory: CMake's
# build-tree RPATH once ended in an empty entry (the working directory), so
# a user running build/jiffy in a shared directory ran whatever libhwloc.so.15
# another user had left there.
PLANTED_LIB = r"""
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
__attribute__((constructor)) static void planted(void) {
  const char* marker = getenv("JIFFY_TEST_PLANTED");
  char who[64] = "?";
  int fd = open("/proc/self/comm", O_RDONLY);
  if (fd >= 0) { ssize_t n = read(fd, who, sizeof who - 1); who[n > 0 ? n : 0] = 0; close(fd); }
  if (!marker) return;
  fd = open(marker, O_WRONLY | O_CREAT | O_APPEND, 0600);
  if (fd >= 0) { (void)!write(fd, who, strlen(who)); close(fd); }
}
"""

# The direct dependencies of jiffy's dynamic executables (a search path only
# ever applies to an object's own DT_NEEDED): jiffy-pmix, jiffyd, jiffy-history.
PLANTED_NAMES = ("libhwloc.so.15", "libpmix.so.2", "libsqlite3.so.0", "libstdc++.so.6", "libgcc_s.so.1")


def test_no_library_is_loaded_from_the_working_directory(jx, tmp_path):
    from conftest import BUILD
    hello = BUILD / "mpi" / "hello.openmpi"
    if not hello.exists():
        pytest.skip(f"not built: {hello}")
    src = tmp_path / "planted.c"
    src.write_text(PLANTED_LIB)
    shared = tmp_path / "shared"
    shared.mkdir()
    for name in PLANTED_NAMES:
        subprocess.run(["cc", "-shared", "-fPIC", "-o", str(shared / name), str(src)], check=True)
    marker = tmp_path / "loaded"
    env = {"JIFFY_TEST_PLANTED": str(marker)}
    # An Open MPI program runs in jiffy-pmix; the first launch starts jiffyd
    # from here too; `jiffy history` runs jiffy-history.
    for args in (["-n", "2", str(hello)], ["history", "--limit", "1"]):
        cp = jx.run(args, cwd=shared, env=env, timeout=60)
        assert cp.returncode == 0, f"jiffy {' '.join(args)}: rc={cp.returncode} {cp.stderr!r}"
    assert not marker.exists(), f"a library planted in the working directory was loaded by: {marker.read_text()!r}"


# Another user impersonating a rank of our Open MPI job. libpmix serves on
# loopback TCP, where anyone can connect, and over TCP a client states its
# own uid: a client that names a registered namespace and rank, and claims
# our uid (an LD_PRELOAD'ed geteuid is enough), is taken for that rank, and
# may then ask our launcher to spawn processes, as us. The namespace is the
# only credential, so nothing another user can see may reveal it: the
# launcher's pid (ps) and job id (the job directories in /tmp) once made it
# up, and the hand-over's state and the rendezvous helper's arguments
# (world-readable command lines) once carried the tag that makes it up now.
PMIX_CLIENT = r"""
#include <pmix.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char** argv) {
  pmix_proc_t me;
  if (PMIx_Init(&me, NULL, 0) != PMIX_SUCCESS) { puts("refused"); return 0; }
  printf("INIT %s.%u\n", me.nspace, me.rank);
  fflush(stdout);
  if (argc > 2) {
    pmix_app_t app;
    PMIX_APP_CONSTRUCT(&app);
    char* av[] = {argv[1], argv[2], NULL};
    app.cmd = argv[1];
    app.argv = av;
    app.maxprocs = 1;
    char ns[PMIX_MAX_NSLEN + 1];
    printf("SPAWN %d\n", (int)PMIx_Spawn(NULL, 0, &app, 1, ns));
    fflush(stdout);
  }
  _exit(0);
}
"""

CLAIM_UID = r"""
#include <stdlib.h>
#include <sys/types.h>
uid_t geteuid(void) { return (uid_t)atoi(getenv("CLAIM_UID")); }
uid_t getuid(void) { return (uid_t)atoi(getenv("CLAIM_UID")); }
gid_t getegid(void) { return (gid_t)atoi(getenv("CLAIM_GID")); }
gid_t getgid(void) { return (gid_t)atoi(getenv("CLAIM_GID")); }
"""

# Run as the other user: every namespace that public information suggests
# (jiffy.<job id>.<pid> for every jiffy process and every job id seen in /tmp
# or below 9;
# jiffy.<hex> for every 32-hex-digit word of any command line), tried as
# rank 0 on every loopback listener, claiming uid/gid CLAIM_UID/CLAIM_GID,
# spawning `touch TARGET` where it gets in. Given namespaces, only those,
# spawning nothing (the check that the harness can get in at all).
IMPERSONATE = r"""
import os, re, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
client, preload, target, extra = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
pids = [p for p in os.listdir("/proc") if p.isdigit()]
ids = {str(i) for i in range(1, 9)}  # a daemon numbers its jobs from 1
for d in os.listdir("/tmp"):
    m = re.search(r"job(\d+)", d)
    if m: ids.add(m.group(1))
cands = set(extra)
for p in pids if not extra else []:
    try:
        words = open(f"/proc/{p}/cmdline").read().replace("\0", " ")
    except OSError:
        continue
    for h in re.findall(r"[0-9a-f]{32}", words): cands.add("jiffy." + h)
    for n in re.findall(r"jiffy\.[0-9a-z.]+", words): cands.add(n)
    comm = open(f"/proc/{p}/comm").read().strip() if os.path.exists(f"/proc/{p}/comm") else ""
    if comm.startswith("jiffy"):
        for i in ids: cands.add(f"jiffy.{i}.{p}")
ports = []
for line in open("/proc/net/tcp").read().splitlines()[1:]:
    f = line.split()
    if f[3] == "0A" and f[1].startswith("0100007F:"): ports.append(int(f[1].split(":")[1], 16))
print(f"tried {len(cands)} namespaces on {len(ports)} listeners", flush=True)


def attempt(ns, port):
    uri = f"pmix-server.0;tcp4://127.0.0.1:{port}"
    env = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": preload, "CLAIM_UID": os.environ["CLAIM_UID"],
           "CLAIM_GID": os.environ["CLAIM_GID"], "PMIX_NAMESPACE": ns, "PMIX_RANK": "0",
           "PMIX_SERVER_URI4": uri, "PMIX_SERVER_URI41": uri, "PMIX_SECURITY_MODE": "native",
           "PMIX_GDS_MODULE": "hash"}
    argv = [client] + (["/usr/bin/touch", target] if not extra else [])
    try:
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10).stdout
    except subprocess.TimeoutExpired:
        out = "timeout"
    if "INIT" in out:
        print(f"IMPERSONATED {ns} on {port}: {out.strip()}", flush=True)


# A refused client takes seconds to give up: try them side by side.
with ThreadPoolExecutor(8) as pool:
    list(pool.map(lambda a: attempt(*a), [(ns, port) for ns in sorted(cands) for port in ports]))
"""


def first_line(p, timeout=60):
    """The first line p writes on stdout, or the test fails (never hangs)."""
    import select
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    if not ready:
        p.kill()
        pytest.fail(f"no output within {timeout}s: {p.args}")
    return p.stdout.readline().strip()


def test_another_user_cannot_impersonate_a_rank_of_our_pmix_server(jx, other_user, public_dir):
    from conftest import BUILD, allowed_cpus
    if len(allowed_cpus()) < 2:
        pytest.skip("needs two cores: two jobs run side by side")
    hold = BUILD / "mpi" / "hold.openmpi"
    if not hold.exists():
        pytest.skip(f"not built: {hold}")
    pmix = subprocess.run(["pkg-config", "--cflags", "--libs", "pmix"], capture_output=True, text=True)
    if pmix.returncode != 0:
        pytest.skip("pkg-config cannot find pmix")
    pub = Path(public_dir)
    (pub / "client.c").write_text(PMIX_CLIENT)
    (pub / "claim.c").write_text(CLAIM_UID)
    subprocess.run(["cc", "-o", pub / "client", pub / "client.c", *pmix.stdout.split()], check=True)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", pub / "claim.so", pub / "claim.c"], check=True)
    (pub / "impersonate.py").write_text(IMPERSONATE)
    for f in pub.iterdir():
        f.chmod(0o755)
    release, pwned = pub / "release", pub / "pwned"
    # A job the front hands straight to jiffy-pmix, and one behind a wrapper:
    # the front hands it over with its state once the rank connects to the
    # rendezvous, and a helper (jiffy-pmix --jiffy-pmix-host) serves it.
    # Getting in at all is the breach (what a rank may do, spawning as us
    # included, follows).
    jobs = [jx.popen(["-n", 1, hold, release]), jx.popen(["-n", 1, "sh", "-c", f'exec "{hold}" "{release}"'])]
    env = user_env(jx, CLAIM_UID=str(os.geteuid()), CLAIM_GID=str(os.getegid()))
    harness = ["/usr/bin/python3", pub / "impersonate.py", pub / "client", pub / "claim.so", pwned]
    try:
        for p in jobs:
            assert first_line(p) == "up", p.stderr.read() if p.poll() is not None else "no 'up'"
        cp = other_user.run(harness, env=env, timeout=300)
        assert cp.returncode == 0, cp.stderr
        tried = re.search(r"tried (\d+) namespaces on (\d+) listeners", cp.stdout)
        # Both servers' listeners, and for each launcher at least its job's
        # jiffy.<job id>.<pid> (the namespace's old form).
        assert tried and int(tried[1]) >= 2 and int(tried[2]) >= 2, cp.stdout
        assert "IMPERSONATED" not in cp.stdout, cp.stdout
        assert not pwned.exists(), "another user's client made our launcher spawn a process"
    finally:
        release.touch()
        for p in jobs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    assert [p.returncode for p in jobs] == [0, 0], [p.stderr.read() for p in jobs]
    # The harness does get in with the namespace (read from a rank's
    # environment, as only our uid can): what the secrecy above protects.
    release.unlink()
    victim = jx.popen(["-n", 1, hold, release])
    try:
        assert first_line(victim) == "up", victim.stderr.read()
        rank = next(pid for pid, _, _ in procs_with_marker(jx.marker)
                    if open(f"/proc/{pid}/comm").read().strip() == "hold.openmpi")
        environ = open(f"/proc/{rank}/environ").read().split("\0")
        nspace = next(kv.split("=", 1)[1] for kv in environ if kv.startswith("PMIX_NAMESPACE="))
        assert re.fullmatch(r"jiffy\.[0-9a-f]{32}", nspace), nspace
        cp = other_user.run(harness + [nspace], env=env, timeout=120)
        assert f"IMPERSONATED {nspace} " in cp.stdout, (cp.stdout, cp.stderr)
    finally:
        victim.terminate()
        victim.wait(timeout=60)
