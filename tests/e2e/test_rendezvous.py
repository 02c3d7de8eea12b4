"""One daemon per user and resource set, whatever the environment, and
nothing another user does with names or directories breaks that or stops
our launches (issue 15, items 1-3, 9 and 12).

The rendezvous is three checks (src/daemon/rendezvous.h): an flock in the
runtime directory, an abstract socket name, and the process table. These
tests defeat one or two of them at a time and check that no core is ever
granted twice and that launches go on."""

import errno
import json
import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import JIFFY, PROBE, find_overlaps, pid_alive, procs_with_marker, read_records, wait_until, JobTrace
from test_security import (OtherUser, abstract_names, daemon_identity, other_user, public_dir,  # noqa: F401
                           user_env)


def their_status(user, env):
    cp = user.run([JIFFY, "status", "--json"], env=env)
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def our_daemons(uid):
    """Live jiffyd processes of uid."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if os.stat(f"/proc/{d}").st_uid != uid:
                continue
            with open(f"/proc/{d}/comm") as f:
                if f.read().strip() != "jiffyd":
                    continue
            if pid_alive(int(d)):
                out.append(int(d))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


# Environments a user's launches come from: a desktop session, cron, su,
# ssh, sudo -u, a CI shell. None may lead to a second daemon.
ENVIRONMENTS = [
    {},
    {"XDG_RUNTIME_DIR": "{xdg}"},
    {"XDG_RUNTIME_DIR": "{xdg}", "HOME": "/"},
    {"HOME": "/nonexistent", "TMPDIR": "/var/tmp"},
]


def test_every_environment_reaches_one_daemon(jx, other_user, public_dir):
    """A job started from a desktop session ($XDG_RUNTIME_DIR set) and jobs
    from cron-like environments (unset, other HOME/TMPDIR) meet one daemon:
    while the first holds every core, the others wait for it instead of
    running beside it."""
    xdg = Path(public_dir) / "xdg"
    xdg.mkdir(mode=0o700)
    os.chown(xdg, other_user.uid, other_user.gid)
    envs = [user_env(jx, **{k: v.format(xdg=xdg) for k, v in e.items()}) for e in ENVIRONMENTS]
    out = Path(public_dir) / "rec"
    out.mkdir()
    os.chmod(out, 0o777)
    pids = set()
    for env in envs:
        st = their_status(other_user, env)
        if st["daemon"] is None:
            assert other_user.run([JIFFY, "-n", 1, "true"], env=env).returncode == 0
            st = their_status(other_user, env)
        pids.add(st["daemon"]["pid"])
    assert len(pids) == 1, f"environments reached different daemons: {pids}"
    n = len(their_status(other_user, envs[0])["resources"]["cores"])
    procs = []
    for i, env in enumerate(envs):
        procs.append(subprocess.Popen(other_user.argv([JIFFY, "-n", n, PROBE, f"out={out}", f"tag=env{i}",
                                                       "sleep=300"]),
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      cwd="/"))
    jx.popens.extend(procs)
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    traces = [JobTrace(t, r) for t, r in read_records(out).items()]
    assert len(traces) == len(envs)
    assert not find_overlaps(traces), f"jobs from different environments shared cores: {find_overlaps(traces)}"
    assert len(our_daemons(other_user.uid)) == 1, our_daemons(other_user.uid)
    other_user.run([JIFFY, "stop"], env=envs[0])


def squat(user, name, jx, backlog=None, fill=False):
    """Binds the abstract name as user (listening with backlog, and filling
    it with connections nobody accepts, when asked); returns the process."""
    code = ("import socket, sys, time\n"
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            "s.bind(b'\\0' + sys.argv[1].encode())\n"
            f"backlog = {backlog!r}\n"
            "if backlog is not None: s.listen(backlog)\n"
            "keep = []\n"
            f"if {fill!r}:\n"
            "    while True:\n"
            "        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            "        c.setblocking(False)\n"
            "        try: c.connect(b'\\0' + sys.argv[1].encode())\n"
            "        except BlockingIOError: break\n"
            "        keep.append(c)\n"
            "print('bound', flush=True)\n"
            "time.sleep(600)\n")
    p = subprocess.Popen(user.argv(["/usr/bin/python3", "-c", code, name]), env=user_env(jx),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    jx.popens.append(p)
    assert p.stdout.readline().strip() == "bound", p.stderr.read()
    return p


def stopped_identity(jx):
    """Starts our daemon once to learn its rendezvous name and its number of
    cores, then stops it."""
    assert jx.run(["-n", 1, "true"]).returncode == 0
    st = jx.status()
    pid = st["daemon"]["pid"]
    name = daemon_identity(pid)
    jx.stop()
    wait_until(lambda: not pid_alive(pid), 10, what="our daemon to stop")
    return name, len(st["resources"]["cores"])


@pytest.mark.parametrize("how", ["bound", "listening-full-backlog"])
def test_squatted_name_does_not_stop_launches(jx, other_user, how):
    """Another user holding our daemon's abstract name (bound only, or
    listening with a backlog it keeps full, so that a connect would block)
    neither stops our daemon from starting nor makes launches wait for a
    daemon that is not there."""
    name, _ = stopped_identity(jx)
    squat(other_user, name, jx, backlog=0 if how != "bound" else None, fill=how != "bound")
    t0 = time.monotonic()
    cp = jx.run(["-n", 1, "true"], timeout=30)
    assert cp.returncode == 0, cp.stderr
    assert time.monotonic() - t0 < 10, "the launch waited for a daemon that was not ours"
    assert jx.run(["-n", 1, "true"], timeout=30).returncode == 0


def remove_under_a_live_daemon(path):
    """rm -rf path as a tmp cleaner does, under a running daemon. Every 0.5 s
    the daemon checks its socket and, once rm has unlinked it, makes its
    files anew (Server::heal), possibly in the directory rm is about to
    remove: ENOTEMPTY then, and rm goes again, as `rm -rf` run twice would."""
    for _ in range(50):
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.ENOTEMPTY:
                raise
    raise AssertionError(f"{path} could not be removed: something keeps filling it")


def test_squatted_name_and_removed_dir_do_not_make_a_second_daemon(jx, public_dir, other_user):
    """The worst case for the first two checks: another user holds our
    abstract name and our runtime directory is removed under a running job.
    A launch then starts a daemon in the re-made directory, which must find
    the live one in the process table and leave it the work: the new job
    waits for the cores the running job holds, and one daemon remains."""
    name, n = stopped_identity(jx)
    squat(other_user, name, jx)
    out = Path(public_dir) / "rec"
    out.mkdir()
    first = jx.popen(["-n", n, PROBE, f"out={out}", "tag=first", "sleep=1500"])
    jx.wait_running(first.pid)
    old = jx.daemon_pid()
    remove_under_a_live_daemon(jx.runtime_dir)
    second = jx.run(["-n", n, PROBE, f"out={out}", "tag=second"], timeout=60)
    assert second.returncode == 0, second.stderr
    first.communicate(timeout=30)
    assert first.returncode == 0
    traces = [JobTrace(t, r) for t, r in read_records(out).items()]
    assert len(traces) == 2
    assert not find_overlaps(traces), f"two daemons granted the same cores: {find_overlaps(traces)}"
    assert jx.daemon_pid() == old
    assert our_daemons(os.geteuid()).count(old) == 1
    assert [p for p in our_daemons(os.geteuid()) if daemon_identity(p) == name] == [old]


def test_launcher_refuses_a_daemon_socket_of_another_uid(jx, other_user, public_dir):
    """A socket in our runtime directory that another user serves (it cannot
    get there by itself: root moves it here, standing for any way a path can
    lead elsewhere) is refused by SO_PEERCRED before anything is sent: the
    other user receives no command, no tag."""
    name, _ = stopped_identity(jx)
    key = name.split("/")[2]
    listener = (
        "import socket, sys, os\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "s.bind(sys.argv[1]); s.listen(64)\n"
        "print('bound', flush=True)\n"
        "got = 0\n"
        "s.settimeout(20)\n"
        "try:\n"
        "    while True:\n"
        "        c, _ = s.accept(); c.settimeout(2)\n"
        "        try:\n"
        "            while True:\n"
        "                b = c.recv(65536)\n"
        "                if not b: break\n"
        "                got += len(b)\n"
        "        except OSError: pass\n"
        "        print('got', got, flush=True)\n"
        "except OSError: pass\n")
    theirs = os.path.join(public_dir, "theirs")
    os.mkdir(theirs)
    os.chown(theirs, other_user.uid, other_user.gid)
    path = os.path.join(theirs, "d.sock")
    p = subprocess.Popen(other_user.argv(["/usr/bin/python3", "-c", listener, path]), env=user_env(jx),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    jx.popens.append(p)
    assert p.stdout.readline().strip() == "bound", p.stderr.read()
    os.rename(path, os.path.join(jx.runtime_dir, f"{key}.sock"))
    for args, env in ((["-n", 1, "true"], {}), (["-n", 1, "true"], {"JIFFY_FAST": "0"}), (["status"], {})):
        cp = jx.run(args, env=env, timeout=30)
        assert cp.returncode != 0, f"{args} {env}: used a daemon of uid {other_user.uid}"
        assert f"uid {other_user.uid}" in cp.stderr, cp.stderr
    p.kill()
    lines = p.communicate(timeout=10)[0].split("\n")
    assert not [l for l in lines if l.startswith("got") and l != "got 0"], f"they received our bytes: {lines}"


def test_swapped_runtime_dir_never_receives_our_messages(jx, other_user, public_dir):
    """Our runtime directory below a parent the other user may write (a
    group project directory): while launches run, the other user keeps
    swapping our directory for one of theirs that has a socket of the same
    name. Each launch either runs or fails with a clear error; none ever
    sends the other user a byte."""
    parent = Path(public_dir) / "project"
    parent.mkdir()
    os.chmod(parent, 0o777)  # not sticky: anyone may rename what is in it
    ours = parent / "rt"
    ours.mkdir(mode=0o700)
    env = {"JIFFY_RUNTIME_DIR": str(ours)}
    assert jx.run(["-n", 1, "true"], env=env).returncode == 0
    key = next(ours.glob("*.sock")).name[:-len(".sock")]
    # The swapper keeps each directory in place about half the time (so a
    # launch has a fair chance to run even on a loaded machine under ASan),
    # and swaps until its stdin closes: the launches go on until at least one
    # ran, so the test never passes without a launch having run mid-swap.
    swapper = (
        "import os, select, socket, sys, time\n"
        "parent, key = sys.argv[1], sys.argv[2]\n"
        "evil = os.path.join(parent, 'evil'); os.mkdir(evil, 0o700)\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "s.bind(os.path.join(evil, key + '.sock')); s.listen(128); s.setblocking(False)\n"
        "rt, aside = os.path.join(parent, 'rt'), os.path.join(parent, 'aside')\n"
        "print('ready', flush=True)\n"
        "got = 0\n"
        "while not select.select([sys.stdin], [], [], 0)[0]:\n"
        "    try:\n"
        "        os.rename(rt, aside); os.rename(evil, rt)\n"
        "        time.sleep(0.0005)\n"
        "        os.rename(rt, evil); os.rename(aside, rt)\n"
        "        time.sleep(0.0005)\n"
        "    except OSError: pass\n"
        "    try:\n"
        "        c, _ = s.accept(); c.settimeout(0.2)\n"
        "        try: got += len(c.recv(65536))\n"
        "        except OSError: pass\n"
        "    except BlockingIOError: pass\n"
        "print('got', got, flush=True)\n")
    p = subprocess.Popen(other_user.argv(["/usr/bin/python3", "-c", swapper, str(parent), key]),
                         env=user_env(jx), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd="/")
    jx.popens.append(p)
    try:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        ran = failed = 0
        start = time.monotonic()
        while (time.monotonic() < start + 3 or ran == 0) and time.monotonic() < start + 120:
            for extra in ({}, {"JIFFY_LANE": "0"}, {"JIFFY_FAST": "0"}):
                cp = jx.run(["-n", 1, "true"], env={**env, **extra}, timeout=30)
                if cp.returncode == 0:
                    ran += 1
                else:
                    failed += 1
                    assert cp.stderr.startswith("jiffy: "), cp.stderr
        out, err = p.communicate(input="stop\n", timeout=30)
        assert out.strip().endswith("got 0"), f"the other user received our messages: {out!r} {err!r}"
        assert ran > 0, f"no launch ran in 120 s of swapping ({failed} failed)"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        # stop whatever daemon of ours runs in what is left of our directories
        for d in (ours, parent / "aside"):
            if d.is_dir() and d.stat().st_uid == os.geteuid():
                jx.run(["stop"], env={"JIFFY_RUNTIME_DIR": str(d)})
        wait_until(lambda: [p for p in procs_with_marker(jx.marker) if p[1] == "jiffyd"] == [], 10,
                   what="our daemons to stop")


def test_relative_runtime_dir_is_resolved_where_the_launcher_runs(jx, tmp_path):
    """A relative JIFFY_RUNTIME_DIR names a directory below the launcher's
    working directory, for the daemon too (it works from /)."""
    cp = jx.run(["-n", 1, "true"], env={"JIFFY_RUNTIME_DIR": "rel"}, cwd=tmp_path)
    assert cp.returncode == 0, cp.stderr
    st = jx.run(["status", "--json"], env={"JIFFY_RUNTIME_DIR": "rel"}, cwd=tmp_path)
    sock = json.loads(st.stdout)["daemon"]["socket"]
    assert sock.startswith(str(tmp_path / "rel") + "/"), sock
    assert not os.path.exists("/rel")
    jx.run(["stop"], env={"JIFFY_RUNTIME_DIR": "rel"}, cwd=tmp_path)
