"""Output as mpiexec delivers it (issue 16): labelled output (-l) whole
through a slow reader with the launcher's memory bounded, a reader that goes
away ends the job with 141, an unfinished line (a 50 MB one, a progress bar)
is delivered whole and seen before the rank exits, and a stdout someone else
made non-blocking loses nothing. Each test runs the same command under
mpiexec.hydra too where that is installed (the hydra half is skipped when it
is not), so that a difference from hydra shows as one.

Readers here are slow on purpose (they read a little, then sleep); nothing
asserts on wall time: every wait has a deadline that only catches hangs.
"""

import fcntl
import re
import os
import shutil
import signal
import subprocess
import termios
import threading
import time
import array

import pytest

from conftest import PROGRAMS, SANITIZED, procs_with_marker, wait_until

GEN = PROGRAMS / "gen"
HYDRA = shutil.which("mpiexec.hydra")
LAUNCHERS = ["jiffy", "hydra"]
MB = 1 << 20


@pytest.fixture
def gen(jiffy_bin):
    if not GEN.is_file():
        pytest.skip(f"test program not built: {GEN}")
    return str(GEN)


def argv_of(jx, launcher, args):
    """The command line of `launcher args...` (jiffy, or hydra when installed)."""
    if launcher == "hydra":
        if not HYDRA:
            pytest.skip("mpiexec.hydra is not installed")
        return [HYDRA] + [str(a) for a in args]
    return [jx.bin] + [str(a) for a in args]


def start(jx, launcher, args, **kw):
    """Popen of the command in the test's world (its marker in every process)."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    p = subprocess.Popen(argv_of(jx, launcher, args), env=jx._env(), **kw)
    jx.popens.append(p)
    return p


def vm_hwm_kb(pid):
    """The peak RSS of pid's current program (VmHWM, KB), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def wait4(p, timeout):
    """Reaps p (a direct child): (exit code as a shell shows it, its peak RSS
    in KB). The peak is VmHWM read while it runs (monotonic: the last reading
    is the peak so far), not ru_maxrss, which counts the fork of this Python
    and p's reaped children (a daemon it started). jiffy's front execs into
    jiffy-launch in the same process, so this is the launcher's peak. Fails
    the test when p runs past timeout."""
    deadline = time.monotonic() + timeout
    peak = 0
    while True:
        peak = max(peak, vm_hwm_kb(p.pid))
        pid, status = os.waitpid(p.pid, os.WNOHANG)
        if pid == p.pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            code = p.returncode if p.returncode >= 0 else 128 - p.returncode
            return code, peak
        if time.monotonic() > deadline:
            p.kill()
            pytest.fail(f"{p.args[0]} did not finish within {timeout}s")
        time.sleep(0.01)


def queued_bytes(fd):
    """Bytes waiting in the pipe whose read end is fd (FIONREAD)."""
    n = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, n)
    return n[0]


def slow_reader(fd, sink, chunk=4096, pause=0.01):
    """Reads fd to EOF, chunk bytes at a time with a pause after each read
    (at most ~400 KB/s): a reader slower than any rank here."""
    while True:
        b = os.read(fd, chunk)
        if not b:
            return
        sink.append(b)
        time.sleep(pause)


def read_all(fd, sink):
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            return
        sink.append(b)


def reader_thread(target, *args):
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


def assert_lines(out: bytes, ranks, nlines, width, label=True, pieces=False):
    """Every rank's nlines lines of gen N width, in order, whole, each
    labelled "[r] " (label), else told apart by their first field (unlabelled
    lines are whole when width divides the ranks' 4 KB stdio writes).
    pieces: the label starts any piece the launcher forwarded, not just
    lines (hydra's -l), so each rank's pieces are joined before comparing."""
    per = {r: [] for r in ranks}
    if pieces:
        streams = {r: [] for r in ranks}
        for m in re.finditer(rb"\[(\d+)\] ([^[]*)", out):
            streams[int(m.group(1))].append(m.group(2))
        per = {r: b"".join(v).split(b"\n") for r, v in streams.items()}
        for r in ranks:
            assert per[r][-1] == b"", f"rank {r}'s output does not end with a newline"
            per[r].pop()
    else:
        lines = out.split(b"\n")
        assert lines[-1] == b"", "output ends with a newline"
        for line in lines[:-1]:
            if label:
                assert line[:1] == b"[", f"unlabelled line {line[:80]!r}"
                lab, _, line = line.partition(b"] ")
                r = int(lab[1:])
            else:
                r = int(line.split(b" ", 1)[0])
            per[r].append(line)
    for r in ranks:
        got = per[r]
        assert len(got) == nlines, f"rank {r}: {len(got)} of {nlines} lines"
        for i, line in enumerate(got):
            head = f"{r} {i} ".encode()
            if line != head + b"x" * (width - len(head) - 1):
                pytest.fail(f"rank {r} line {i} is {line[:80]!r}: cut, mixed or out of order")


def marked(jx, names):
    """Live processes of this test whose name is in names."""
    return [p for p in procs_with_marker(jx.marker) if p[1] in names]


# ---------------------------------------------------------------- 1. a slow reader


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_labelled_output_whole_through_a_slow_reader(jx, gen, launcher):
    """-l -n 2 gen 30000 64 into a pipe nobody reads until it is full, then
    read at ~400 KB/s (4 MB: ten seconds behind the ranks, which wait in
    write()). Every line arrives, labelled, in order per rank, exit 0, and
    the launcher's peak memory stays bounded (it holds at most ~1 MB)."""
    r, w = os.pipe()
    try:
        p = start(jx, launcher, ["-l", "-n", 2, gen, 30000, 64], stdout=w, stderr=subprocess.PIPE)
        os.close(w)
        w = -1
        wait_until(lambda: queued_bytes(r) >= 32768, 30, what="the pipe to fill")
        out = []
        t = reader_thread(slow_reader, r, out)
        code, maxrss_kb = wait4(p, 300)
        t.join(60)
        err = p.stderr.read().decode(errors="replace")
        assert code == 0, err
        assert_lines(b"".join(out), (0, 1), 30000, 64, pieces=launcher == "hydra")
        if launcher == "jiffy":
            if not SANITIZED:  # the sanitizer's own memory would count
                assert maxrss_kb < 16 * 1024, f"jiffy's peak RSS {maxrss_kb} KB: output was not held back"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


# ---------------------------------------------------------------- 2. a reader that goes away


@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.parametrize("prog", ["yes", "gen"])
def test_labelled_reader_gone_ends_the_job_with_141(jx, gen, launcher, prog):
    """`-l -n 2 yes | head -1`: the reader goes after one line; the job ends
    with 141 (128+SIGPIPE) and no rank is left, as without -l."""
    cmd = ["yes"] if prog == "yes" else [gen, 100000]
    p = start(jx, launcher, ["-l", "-n", 2] + cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = p.stdout.readline()
    assert first.startswith(b"[0] ") or first.startswith(b"[1] "), first
    p.stdout.close()
    code, _ = wait4(p, 60)
    p.stderr.read()
    assert code == 128 + signal.SIGPIPE
    if launcher == "jiffy":  # it reaps its ranks before it exits
        assert marked(jx, {"yes", "gen"}) == [], "ranks outlived the launcher"
    else:  # hydra's ranks may go a moment after it
        wait_until(lambda: not marked(jx, {"yes", "gen"}), 30, what="hydra's ranks to go")


# ---------------------------------------------------------------- 5. unfinished lines


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_unterminated_50mb_line_whole_with_bounded_memory(jx, gen, launcher):
    """-l -n 1 gen -u 50MB: one line without a newline. It arrives whole (jiffy:
    one label, and the newline that ends the rank's output), and the launcher
    does not hold it (peak RSS far below 50 MB)."""
    size = 50 * MB
    p = start(jx, launcher, ["-l", "-n", 1, gen, "-u", size], stdout=subprocess.PIPE,
              stderr=subprocess.PIPE)
    out = []
    t = reader_thread(read_all, p.stdout.fileno(), out)
    code, maxrss_kb = wait4(p, 300)
    t.join(60)
    err = p.stderr.read().decode(errors="replace")
    assert code == 0, err
    got = b"".join(out)
    pattern = b"0123456789abcdefghijklmnopqrstuvwxyz"
    expected = b"0" + (pattern * (size // len(pattern) + 1))[:size - 1]
    if launcher == "jiffy":
        assert len(got) == size + 5, len(got)
        assert got == b"[0] " + expected + b"\n", "the line was cut, reordered or labelled twice"
        if not SANITIZED:  # the sanitizer's own memory would count
            assert maxrss_kb < 16 * 1024, f"jiffy's peak RSS {maxrss_kb} KB: the line was held"
    else:
        # hydra labels every piece it forwards
        assert got.replace(b"[0] ", b"").rstrip(b"\n") == expected


@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.parametrize("text", ["\\r 50%", "Continue? "], ids=["progress", "prompt"])
def test_unfinished_line_visible_before_the_rank_goes_on(jx, gen, tmp_path, launcher, text):
    """A progress bar ("\\r 50%") or a prompt without a newline is seen while
    the rank waits (it writes the newline only once the test saw the text),
    and its line is labelled once."""
    flag = tmp_path / "seen"
    shown = text.replace("\\r", "\r").encode()
    p = start(jx, launcher, ["-l", "-n", 1, gen, "-p", text, flag], stdout=subprocess.PIPE,
              stderr=subprocess.PIPE)
    out = []
    t = reader_thread(read_all, p.stdout.fileno(), out)
    try:
        wait_until(lambda: shown in b"".join(out), 30, what=f"{shown!r} on stdout before the newline")
    finally:
        flag.touch()
    code, _ = wait4(p, 60)
    t.join(30)
    assert code == 0, p.stderr.read()
    if launcher == "jiffy":
        assert b"".join(out) == b"[0] " + shown + b"\n"


# ---------------------------------------------------------------- 8. a non-blocking stdout


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.parametrize("label", [False, True], ids=["plain", "labelled"])
def test_nonblocking_stdout_delivers_every_line(jx, gen, launcher, label):
    """Our parent set O_NONBLOCK on the pipe it gave us as stdout (the flag is
    the pipe's, shared): the pipe fills up, then a slow reader gets every
    line, exit 0."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        p = start(jx, launcher, (["-l"] if label else []) + ["-n", 2, gen, 20000, 64], stdout=w,
                  stderr=subprocess.PIPE)
        os.close(w)
        w = -1
        wait_until(lambda: queued_bytes(r) >= 32768, 30, what="the pipe to fill")
        out = []
        t = reader_thread(slow_reader, r, out, 16384)
        code, _ = wait4(p, 300)
        t.join(60)
        err = p.stderr.read().decode(errors="replace")
        assert code == 0, err
        assert_lines(b"".join(out), (0, 1), 20000, 64, label=label,
                     pieces=label and launcher == "hydra")
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


@pytest.mark.parametrize("label", [False, True], ids=["plain", "labelled"])
def test_nonblocking_stderr_keeps_the_launchers_message(jx, gen, label):
    """The launcher's own message (its rank was killed) goes to a stderr
    someone made non-blocking while the rank's output fills it: the message
    and every line arrive."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    script = f'"{gen}" 5000 40 >&2; kill -KILL $$'
    try:
        p = jx.popen((["-l"] if label else []) + ["-n", 1, "sh", "-c", script],
                     stdout=subprocess.DEVNULL, stderr=w, text=False)
        os.close(w)
        w = -1
        wait_until(lambda: queued_bytes(r) >= 32768, 30, what="the pipe to fill")
        out = []
        t = reader_thread(slow_reader, r, out, 16384)
        code, _ = wait4(p, 120)
        t.join(60)
        err = b"".join(out)
        assert code == 128 + signal.SIGKILL
        # (written by the launcher itself, it may land between two pieces
        # of a line it forwards: taken out whole before the lines are read)
        m = re.search(rb"jiffy: rank 0 \(sh, pid \d+\) was killed by signal 9 \(SIGKILL\)\n", err)
        assert m, err[-300:]
        assert_lines(err[:m.start()] + err[m.end():], (0,), 5000, 40, label=label)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
