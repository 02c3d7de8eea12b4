"""`jiffy top`: the live view, driven in a real terminal (tmux, 80x24) and in
batch mode (stdout a pipe).

Each tmux test runs its own tmux server (a private socket, killed at
teardown) whose one pane runs a wrapper script: it records `stty -a` before
and after `jiffy top`, top's pid and its exit status, so that a test can
check the terminal came back exactly as it was, whichever way top ended."""

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import MARKER_VAR, one_line_error, wait_until

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    """A private tmux server with one 80x24 pane running `jiffy top args`."""

    def __init__(self, jx, tmp_path: Path):
        self.jx = jx
        self.dir = tmp_path
        self.sock = f"jiffy-top-{uuid.uuid4().hex[:12]}"
        self.conf = tmp_path / "tmux.conf"
        # No status line: the pane is the whole 80x24.
        self.conf.write_text("set -g status off\n")
        self.started = False

    def tmux(self, *args, check=True):
        return subprocess.run(["tmux", "-L", self.sock, "-f", str(self.conf), *args], env=self.jx.env,
                              capture_output=True, text=True, timeout=10, check=check)

    def start(self, *top_args, cols=80, rows=24):
        exports = "".join(f"export {k}={shlex.quote(self.jx.env[k])}\n"
                          for k in ("JIFFY_RUNTIME_DIR", MARKER_VAR, "PATH") if k in self.jx.env)
        d = shlex.quote(str(self.dir))
        argv = " ".join(shlex.quote(a) for a in [self.jx.bin, "top", *map(str, top_args)])
        script = self.dir / "run-top.sh"
        # The inner sh execs top, so the pid it writes is top's. The outer
        # shell traps the signals a test sends (a trapped signal is reset to
        # its default in children, unlike an ignored one) so that it lives
        # on to record how top ended.
        script.write_text(
            "#!/bin/sh\n" + exports +
            f"trap : INT TERM HUP QUIT\n"
            f"stty -a > {d}/before\n"
            f"sh -c 'echo $$ > {d}/pid; exec \"$@\"' sh {argv}\n"
            f"rc=$?\n"
            f"stty -a > {d}/after\n"
            f"echo $rc > {d}/rc.tmp && mv {d}/rc.tmp {d}/rc\n"
            # Alive, so that the pane's cursor and screen can be looked at
            # (tmux hides the cursor of a dead pane).
            f"exec sleep 120\n")
        script.chmod(0o755)
        self.tmux("new-session", "-d", "-x", str(cols), "-y", str(rows), "-s", "top", str(script))
        self.started = True
        return wait_until(lambda: self.pid(), 10, 0.02, "jiffy top to start")

    def pid(self):
        try:
            return int((self.dir / "pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def screen(self):
        # -J joins a line the terminal wrapped, so a too-long line shows as one.
        return self.tmux("capture-pane", "-p", "-J", "-t", "top").stdout.split("\n")

    def wait_screen(self, pred, what, timeout=15):
        last = []

        def check():
            last[:] = self.screen()
            return pred(last)

        try:
            wait_until(check, timeout, 0.05, what)
            return last
        except AssertionError as e:
            raise AssertionError(f"{e}; the screen:\n" + "\n".join(last)) from None

    def fmt(self, f):
        return self.tmux("display-message", "-p", "-t", "top", f).stdout.strip()

    def keys(self, *keys):
        self.tmux("send-keys", "-t", "top", *keys)

    def wait_exit(self, timeout=10):
        """top's exit status, once it has ended."""
        rc = self.dir / "rc"
        wait_until(rc.exists, timeout, 0.05, "jiffy top to end")
        return int(rc.read_text())

    def pane_tty_modes(self):
        tty = self.fmt("#{pane_tty}")
        return subprocess.run(["stty", "-a", "-F", tty], capture_output=True, text=True, timeout=10).stdout

    def kill(self):
        if self.started:
            self.tmux("kill-server", check=False)


@pytest.fixture
def tmux(jx, tmp_path):
    t = Tmux(jx, tmp_path)
    yield t
    t.kill()


def job_cores(job):
    """The cores of a running job in `jiffy status --json`: a flat list
    today, per rank with the history fields (docs/history.md)."""
    out = set()
    for c in job["cores"]:
        out |= set(c) if isinstance(c, list) else {c}
    return sorted(out)


def cpu_list(ids):
    """[0, 1, 2, 5] -> "0-2,5", as jiffy prints core lists."""
    parts, i = [], 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(parts)


def line_with(lines, pattern):
    return next((l for l in lines if re.search(pattern, l)), None)


def assert_restored(t: Tmux):
    """The terminal is as it was before top: modes, primary screen, cursor."""
    def modes(name):  # the size may have changed meanwhile; the modes may not
        return re.sub(r"rows \d+; columns \d+;", "", (t.dir / name).read_text())

    assert modes("after") == modes("before"), "stty modes not restored"
    assert t.fmt("#{alternate_on}") == "0", "still on the alternate screen"
    assert t.fmt("#{cursor_flag}") == "1", "the cursor is still hidden"
    assert not any("jiffy top" in l for l in t.screen()), "top's screen is left on the terminal"


def assert_fits(lines, cols=80, rows=24):
    assert len([l for l in lines if l.strip()]) <= rows
    for l in lines:
        assert len(l.rstrip()) <= cols, f"line longer than {cols}: {l!r}"


def test_top_shows_the_job_on_its_core_and_q_restores_the_terminal(jx, fake_daemon, tmux):
    fake_daemon(cores=4)
    p = jx.popen(["-n", "1", "sleep", "30"], env={"JIFFY_LABEL": "mylabel"})
    job = jx.wait_running(p.pid)
    core = job_cores(job)[0]
    tmux.start()
    lines = tmux.wait_screen(lambda s: line_with(s, rf"^core {core}\s+job {job['job']}\s"),
                             f"job {job['job']} shown on core {core}")
    # Raw-ish while it runs: no echo, no line buffering.
    modes = tmux.pane_tty_modes().split()
    assert "-icanon" in modes and "-echo" in modes, modes
    if job.get("label"):  # the daemon reports labels (docs/history.md)
        assert "mylabel" in line_with(lines, rf"^core {core}\s+job {job['job']}\s")
    assert line_with(lines, r"^jiffy top  pid \d+  up .*cores 1/4")
    assert line_with(lines, r"^running 1")
    assert_fits(lines)
    tmux.keys("q")
    assert tmux.wait_exit() == 0
    assert_restored(tmux)


def test_top_fits_80x24_with_64_cores_and_shows_the_queue(jx, fake_daemon, tmux):
    fake_daemon(cores=64)
    big = jx.popen(["-n", "60", "sleep", "30"])
    running = jx.wait_running(big.pid)
    waiting = jx.popen(["-n", "8", "sleep", "30"])
    queued = jx.wait_queued(waiting.pid)
    tmux.start()
    lines = tmux.wait_screen(
        lambda s: line_with(s, rf"^\s+#\d+\s+job {queued['job']}\s+-n 8\s+waiting ") and line_with(s, "cores 60/64"),
        "the queued job and the 60 busy cores")
    assert line_with(lines, r"^queued 1")
    held = job_cores(running)
    assert len(held) == 60
    assert line_with(lines, rf"^\s+A\s+job {running['job']}\s+-n 60\s+cores {cpu_list(held)}\s")
    # The grid: every core a cell, the job's held by A, the others free.
    free = sorted(set(range(64)) - set(held))
    assert line_with(lines, rf"(^|\s){held[0]}A(\s|$)") and line_with(lines, rf"(^|\s){free[-1]}\.(\s|$)")
    assert_fits(lines)
    tmux.keys("q")
    assert tmux.wait_exit() == 0
    assert_restored(tmux)


def test_top_waits_for_a_daemon_to_start_and_sees_it_go(jx, fake_daemon, tmux):
    tmux.start()
    tmux.wait_screen(lambda s: line_with(s, "no daemon running"), "'no daemon running'")
    d = fake_daemon(cores=2)
    pid = d.status_at_start["daemon"]["pid"]
    lines = tmux.wait_screen(lambda s: line_with(s, rf"^jiffy top  pid {pid}\s"), "the daemon's pid")
    assert not line_with(lines, "no daemon running")
    # And when it goes, nothing of it stays on the screen.
    assert jx.stop().returncode == 0
    lines = tmux.wait_screen(lambda s: line_with(s, "no daemon running"), "'no daemon running' again")
    assert not line_with(lines, rf"pid {pid}")
    tmux.keys("q")
    assert tmux.wait_exit() == 0
    assert_restored(tmux)


def test_top_follows_the_terminal_size(jx, fake_daemon, tmux):
    fake_daemon(cores=16)
    tmux.start()
    tmux.wait_screen(lambda s: line_with(s, r"^jiffy top  pid \d+.*queued 0\s+\d\d:\d\d:\d\d$"), "a full header")
    tmux.tmux("resize-window", "-t", "top", "-x", "50", "-y", "12")
    lines = tmux.wait_screen(lambda s: len(s) <= 13 and line_with(s, r"^ 0\.  1\.  2\."), "a redraw at 50x12")
    assert_fits(lines, cols=50, rows=12)
    assert line_with(lines, r"cores 0/16")
    tmux.keys("q")
    assert tmux.wait_exit() == 0
    assert_restored(tmux)


def test_top_shows_a_stuck_daemon_and_still_quits(jx, fake_daemon, tmux):
    d = fake_daemon(cores=2)
    tmux.start("-d", "0.2")
    pid = d.status_at_start["daemon"]["pid"]
    tmux.wait_screen(lambda s: line_with(s, rf"^jiffy top  pid {pid}\s"), "the daemon's pid")
    os.kill(pid, signal.SIGSTOP)
    try:
        lines = tmux.wait_screen(lambda s: line_with(s, r"^the daemon has not answered for "), "the stuck daemon")
        assert line_with(lines, rf"^jiffy top  pid {pid}\s"), "the last answer stays on screen"
        tmux.keys("q")
        assert tmux.wait_exit() == 0
    finally:
        os.kill(pid, signal.SIGCONT)
    assert_restored(tmux)


@pytest.mark.parametrize("how,rc", [("C-c", 0), ("TERM", 128 + signal.SIGTERM), ("HUP", 128 + signal.SIGHUP)])
def test_top_restores_the_terminal_when_interrupted(jx, tmux, how, rc):
    pid = tmux.start("-d", "0.2")
    tmux.wait_screen(lambda s: line_with(s, "no daemon running"), "the first frame")
    if how.startswith("C-"):
        tmux.keys(how)
    else:
        os.kill(pid, getattr(signal, "SIG" + how))
    assert tmux.wait_exit() == rc
    assert_restored(tmux)


def test_top_iterations_on_a_terminal_end_by_themselves(jx, tmux):
    tmux.start("-n", "3", "-d", "0.2")
    assert tmux.wait_exit() == 0
    assert_restored(tmux)


def frames_of(out):
    frames = [f for f in out.split("\n\n") if f.strip()]
    for f in frames:
        assert f.startswith("jiffy top"), f
    return frames


def test_batch_frames_come_at_least_twice_a_second(jx, fake_daemon):
    fake_daemon(cores=4)
    n = 9
    cp = jx.run(["top", "-n", n], env={"COLUMNS": "80"}, timeout=30)  # stdout a pipe: batch
    assert cp.returncode == 0, cp.stderr
    frames = frames_of(cp.stdout)
    assert len(frames) == n
    assert all("cores 0/4" in f.splitlines()[0] for f in frames)
    # n frames at 0.5 s: (n - 1) intervals. Never faster than asked (one
    # request per refresh), and at least 2 per second, generously.
    assert (n - 1) * 0.5 * 0.9 <= cp.elapsed <= (n - 1) * 0.5 + 2.5, cp.elapsed
    assert_fits([l for f in frames for l in f.splitlines()], rows=10**6)


def test_batch_without_a_daemon_keeps_polling(jx):
    cp = jx.run(["top", "-b", "-n", "5", "-d", "0.2"], timeout=30)
    assert cp.returncode == 0, cp.stderr
    frames = frames_of(cp.stdout)
    assert len(frames) == 5 and all("no daemon running" in f for f in frames)
    assert 4 * 0.2 * 0.9 <= cp.elapsed <= 4 * 0.2 + 2.5, cp.elapsed
    assert not jx.sockets(), "top must not start a daemon"


@pytest.mark.parametrize("args", [["-d", "0"], ["-n", "0"], ["--interval", "x"], ["--bogus"], ["now"]])
def test_top_bad_options_are_one_line_errors(jx, args):
    cp = jx.run(["top", *args], timeout=10)
    one_line_error(cp, " ".join(args))
    assert cp.returncode == 1
