"""History, the daemon's side (issue 9, docs/history.md): records in the
journal reach the database exactly once, however the daemon is
interrupted; a missing, corrupt or full database never fails a launch, is
reported once and heals; the daemon writes rows for launchers that vanished
(lost) or went away while queued (cancelled).

The journal's records are written here by Python (the layout of
src/proto/history.h), the database read with Python's sqlite3, read-only.
Every daemon gets its own XDG_STATE_HOME."""

import errno
import fcntl
import json
import os
import random
import signal
import socket
import sqlite3
import struct
import subprocess
import threading
import time

import pytest

from conftest import PROGRAMS, wait_until

MAGIC = 0x31747369686a7966
RECORD = struct.Struct("<QIIIiiiiiiiIiQqqqqqq4q40s128s256s1024s1536s256s256s456s")
assert RECORD.size == 4096
FROM_DAEMON, FROM_LAUNCHER = 1, 2
EXITED, SIGNALED, TIMED_OUT, REFUSED, LOST, CANCELLED = 1, 2, 3, 4, 5, 6


def fnv1a(data: bytes) -> int:
    h = 2166136261
    for c in data:
        h = ((h ^ c) * 16777619) & 0xFFFFFFFF
    return h


def new_tag():
    return "%032x" % random.getrandbits(128)


def record(tag, source=FROM_LAUNCHER, outcome=EXITED, exit_code=0, pid=4242, ntasks=1, job=0,
           command="python record", cores="0", end_ns=None):
    now = time.time_ns() if end_ns is None else end_ns
    fields = [MAGIC, 4096, 0, 1, source, outcome, exit_code, 0, pid, ntasks, 1, 0, 0, job,
              now - 2_000_000_000, now - 1_000_000_000, now, 10, 20, 30, 0, 0, 0, 0,
              tag.encode(), b"label", command.encode(), b"/tmp", cores.encode(), b"", b"", b""]
    raw = bytearray(RECORD.pack(*fields))
    struct.pack_into("<I", raw, 12, fnv1a(bytes(raw)))  # the checksum, taken over the record with it 0
    return bytes(raw)


def many_records(n, seed):
    """n records as one bytes object, from tests/programs/history_records.c; their tags."""
    out = subprocess.run([str(PROGRAMS / "history_records"), str(n), str(seed)], capture_output=True,
                         check=True, timeout=120).stdout
    assert len(out) == n * 4096
    return out, {"%016x%016x" % (seed, i) for i in range(n)}


def journal(jx):
    (sock,) = jx.sockets()
    return sock[:-len(".sock")] + ".history"


def append(jx, *records):
    with open(journal(jx), "ab") as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        for r in records:
            f.write(r)


def frame(msg):
    data = json.dumps(msg).encode()
    return struct.pack(">I", len(data)) + data


def read_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("daemon hung up")
        buf += chunk
    return buf


def request(jx, msg, timeout=60):
    (path,) = jx.sockets()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    try:
        s.sendall(frame(msg))
        (n,) = struct.unpack(">I", read_exact(s, 4))
        return json.loads(read_exact(s, n))
    finally:
        s.close()


def history(jx, timeout=60):
    r = request(jx, {"type": "history", "v": 1}, timeout)
    assert r["type"] == "history_reply", r
    return r


def db_path(state):
    return os.path.join(state, "jiffy", "history.db")


def rows(state, where="1=1", args=()):
    """The rows of jobs matching where; none while the daemon's writer has
    created the file but not yet committed its schema (it opens the file,
    then creates the tables: a reader in between sees an empty database,
    as jiffy history does, src/history/query.cc)."""
    con = sqlite3.connect(f"file:{db_path(state)}?mode=ro", uri=True, timeout=5)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute(f"SELECT * FROM jobs WHERE {where} ORDER BY id", args)]
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return []
        raise
    finally:
        con.close()


def daemon_log(jx, i=0):
    with open(os.path.join(jx.runtime_dir, f"fg-daemon-{i}.log")) as f:
        return f.read()


@pytest.fixture
def state(jx, tmp_path):
    d = str(tmp_path / "state")
    jx.env["XDG_STATE_HOME"] = d
    return d


def test_journal_records_reach_the_database_exactly_once(jx, fake_daemon, state):
    fake_daemon(cores=2)
    tags = [new_tag() for _ in range(5)]
    recs = [record(t, pid=1000 + i) for i, t in enumerate(tags)]
    append(jx, recs[0], recs[1], b"\x17" * 24, recs[2], recs[2], recs[3], recs[4][:1000])
    r = history(jx)
    assert r["error"] == "" and r["db"] == db_path(state) and r["pending"] == 0, r
    assert sorted(x["tag"] for x in rows(state)) == sorted(tags[:4])
    assert os.path.getsize(journal(jx)) == 0
    append(jx, *recs)  # the same records again: nothing changes but the new one
    history(jx)
    got = rows(state)
    assert sorted(x["tag"] for x in got) == sorted(tags)
    assert {x["pid"] for x in got} == {1000, 1001, 1002, 1003, 1004}
    con = sqlite3.connect(f"file:{db_path(state)}?mode=ro", uri=True)
    assert con.execute("PRAGMA user_version").fetchone()[0] == 2
    assert con.execute("SELECT cores FROM machines").fetchall() == [(2,)]
    con.close()
    st = jx.status()
    assert st["history"]["error"] == "" and st["totals"]["jobs"] == 5
    assert [x["tag"] for x in st["recent"]][-1] in tags
    assert all(x["outcome"] == "ok" for x in st["recent"])


def test_records_arrive_without_asking(jx, fake_daemon, state):
    fake_daemon(cores=2)
    t = new_tag()
    append(jx, record(t))
    wait_until(lambda: os.path.exists(db_path(state)) and rows(state, "tag = ?", (t,)), 10, 0.05,
               "the record to be ingested unasked")


def test_the_launchers_record_wins_over_the_daemons(jx, fake_daemon, state):
    fake_daemon(cores=2)
    t = new_tag()
    append(jx, record(t, source=FROM_DAEMON, outcome=LOST))
    history(jx)
    append(jx, record(t, exit_code=3), record(t, source=FROM_DAEMON, outcome=LOST))
    history(jx)
    (row,) = rows(state)
    assert row["source"] == FROM_LAUNCHER and row["exit_code"] == 3


def journal_locked(path):
    with open(path, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return True
            raise
    return False


@pytest.mark.slow
def test_a_daemon_killed_while_ingesting_loses_and_duplicates_nothing(jx, fake_daemon, state):
    n = 50_000
    d = fake_daemon(cores=2)
    data, tags = many_records(n, random.getrandbits(63))
    path = journal(jx)
    # Written while the daemon's thread cannot take the journal (we hold it).
    with open(path, "ab") as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        f.write(data)
    del data
    def ask():
        try:
            request(jx, {"type": "history", "v": 1})
        except (OSError, EOFError):
            pass  # killed before it answered: the point

    def wal_size():
        try:
            return os.path.getsize(db_path(state) + "-wal")
        except OSError:
            return 0

    def staged():
        try:
            return os.path.getsize(path + ".ingest")
        except OSError:
            return 0

    def kill(when):
        nonlocal d
        d.kill()
        d.wait()
        left = os.path.getsize(path)
        stored = len(rows(state)) if os.path.exists(db_path(state)) else 0
        assert left == n * 4096 or left == 0, left  # moved whole, or not at all
        print(f"killed while {when}: journal {left} bytes, staging {staged()} bytes, {stored} rows stored")
        d = fake_daemon(cores=2)

    # Killed while it copies the journal to its staging file (the only time
    # it holds the journal's lock)...
    threading.Thread(target=ask, daemon=True).start()
    wait_until(lambda: journal_locked(path), 30, 0.001, "the daemon to be taking the journal")
    kill("copying")
    # ...then, its successor (which ingests as it starts, unasked), once its
    # transaction spills into the WAL, or it is done.
    threading.Thread(target=ask, daemon=True).start()
    wait_until(lambda: wal_size() > (1 << 20) or (os.path.getsize(path) == 0 and staged() == 0), 120, 0.001,
               "the transaction to be written")
    kill("writing")
    r = history(jx, timeout=120)
    assert r["error"] == "" and r["pending"] == 0, r
    con = sqlite3.connect(f"file:{db_path(state)}?mode=ro", uri=True)
    total, distinct = con.execute("SELECT count(*), count(DISTINCT tag) FROM jobs").fetchone()
    got = {t for (t,) in con.execute("SELECT tag FROM jobs")}
    con.close()
    assert total == distinct == n, (total, distinct, stored)
    assert got == tags
    assert os.path.getsize(path) == 0


def corrupt_state(state):
    os.makedirs(os.path.dirname(db_path(state)), mode=0o700)
    with open(db_path(state), "wb") as f:
        f.write(os.urandom(64 * 1024))


def assert_launches_work(jx):
    """A launch (its own record joins the journal's) works, and promptly."""
    t0 = time.monotonic()
    cp = jx.run(["-n", 1, "true"], timeout=30, env={"JIFFY_LABEL": "launch-while-broken"})
    assert cp.returncode == 0, cp.stderr
    assert time.monotonic() - t0 < 10


def written(state):
    """The tags of the rows our Python records made (the launches' own rows left out)."""
    return [x["tag"] for x in rows(state) if x["label"] != "launch-while-broken"]


def launched(state):
    return sum(x["label"] == "launch-while-broken" for x in rows(state))


def waiting(jx):
    """Bytes of records not in the database: the journal and the daemon's staging copy."""
    return sum(os.path.getsize(p) for p in (journal(jx), journal(jx) + ".ingest") if os.path.exists(p))


def test_a_corrupt_database_fails_no_launch_is_said_once_and_heals(jx, fake_daemon, state):
    corrupt_state(state)
    fake_daemon(cores=2)
    t = new_tag()
    append(jx, record(t))
    for _ in range(3):
        assert_launches_work(jx)
        r = history(jx)
        assert "not a database" in r["error"], r
        assert r["pending"] >= 1
    assert "not a database" in jx.status()["history"]["error"]
    text = jx.run(["status"])
    assert text.returncode == 0 and "not a database" in text.stdout, text
    assert waiting(jx) >= 4096  # kept for later
    assert daemon_log(jx).count("not a database") == 1, daemon_log(jx)
    os.unlink(db_path(state))
    r = history(jx)  # asking retries at once
    assert r["error"] == "" and r["pending"] == 0, r
    assert written(state) == [t] and launched(state) == 3


def test_an_uncreatable_state_directory_fails_no_launch(jx, fake_daemon, state):
    with open(state, "w") as f:
        f.write("a file where the directory should be")
    fake_daemon(cores=2)
    assert_launches_work(jx)
    r = history(jx)
    assert r["error"] and r["db"] == db_path(state), r


@pytest.fixture
def small_tmpfs(state):
    os.makedirs(state, mode=0o700)
    cp = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", state],
                        capture_output=True, text=True)
    if cp.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {cp.stderr.strip()}")
    yield state
    subprocess.run(["umount", "-l", state], capture_output=True)


def fill(path):
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    # one more shot at the last partial block
    try:
        with open(path, "ab") as f:
            while True:
                f.write(b"\0" * 512)
                f.flush()
    except OSError:
        pass


def test_a_full_disk_fails_no_launch_is_said_once_and_heals(jx, fake_daemon, small_tmpfs):
    state = small_tmpfs
    fake_daemon(cores=2)
    history(jx)  # the database exists, nearly empty
    filler = os.path.join(state, "filler")
    fill(filler)
    tags = [new_tag() for _ in range(400)]  # ~ more than a WAL page's worth of rows
    append(jx, *[record(t, command="x" * 200) for t in tags])
    r = history(jx)
    assert r["error"] and r["pending"] >= len(tags), r
    print("full disk:", r)
    assert_launches_work(jx)
    r2 = history(jx)
    assert r2["error"] == r["error"]
    log = daemon_log(jx)
    assert log.count(r["error"]) == 1, log
    os.unlink(filler)
    r = history(jx)
    assert r["error"] == "" and r["pending"] == 0, r
    assert sorted(written(state)) == sorted(tags) and launched(state) == 1


def test_a_reader_in_a_loop_gets_no_errors(jx, fake_daemon, state):
    fake_daemon(cores=2)
    history(jx)
    errors, reads = [], [0]
    stop = threading.Event()

    def reader():
        con = sqlite3.connect(f"file:{db_path(state)}?mode=ro", uri=True, timeout=5)
        while not stop.is_set():
            try:
                con.execute("SELECT count(*), max(end_ns) FROM jobs").fetchone()
                list(con.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT 50"))
                reads[0] += 1
            except sqlite3.Error as e:  # noqa: PERF203
                errors.append(repr(e))
        con.close()

    th = threading.Thread(target=reader)
    th.start()
    try:
        for _ in range(20):
            append(jx, *[record(new_tag()) for _ in range(50)])
            r = history(jx)
            assert r["error"] == "", r
    finally:
        stop.set()
        th.join()
    assert not errors, errors[:3]
    assert reads[0] > 0
    assert len(rows(state)) == 1000


def lost_rows(state, pid):
    if not os.path.exists(db_path(state)):
        return []
    return rows(state, "pid = ?", (pid,))


@pytest.mark.parametrize("lane", ["1", "0"])
def test_a_killed_launcher_leaves_a_lost_row(jx, fake_daemon, state, tmp_path, lane):
    fake_daemon(cores=2)
    p = jx.popen(["-n", 1, "sleep", 100], env={"JIFFY_LANE": lane}, cwd=str(tmp_path))
    j = jx.wait_running(p.pid)
    assert j["lane"] == (lane == "1")
    assert j["rank_cores"] and len(j["rank_cores"]) == 1
    assert j["start"] > 1e9 and j["submit"] > 1e9
    p.kill()
    p.wait()

    def lost():
        history(jx)
        return lost_rows(state, p.pid)

    (row,) = wait_until(lost, 20, 0.1, "the lost row")
    assert row["outcome"] == LOST and row["source"] == FROM_DAEMON, row
    assert "sleep" in row["command"] and row["tag"] and row["ntasks"] == 1
    assert row["start_ns"] > 0 and row["end_ns"] >= row["start_ns"]
    assert row["cores"] in ("0", "1") and row["reason"]
    assert history(jx)["pending"] == 0
    st = jx.status()
    assert any(r["outcome"] == "lost" for r in st["recent"])
    assert st["totals"]["failed"] >= 1


def test_a_killed_queued_launcher_leaves_a_cancelled_row(jx, fake_daemon, state):
    fake_daemon(cores=1)
    a = jx.popen(["-n", 1, "sleep", 100])
    jx.wait_running(a.pid)
    b = jx.popen(["-n", 1, "sleep", 100])
    q = jx.wait_queued(b.pid)
    assert q["submit"] > 1e9 and q["wait_s"] >= 0
    st = jx.status()
    assert set(st["totals"]) == {"since", "jobs", "failed", "timed_out", "core_seconds"}
    assert set(st["history"]) == {"db", "error", "pending"}
    b.kill()
    b.wait()

    def cancelled():
        history(jx)
        return lost_rows(state, b.pid)

    (row,) = wait_until(cancelled, 20, 0.1, "the cancelled row")
    assert row["outcome"] == CANCELLED and row["start_ns"] == 0 and row["cores"] == "", row
    a.kill()
    a.wait()
    (row,) = wait_until(lambda: (history(jx), lost_rows(state, a.pid))[1], 20, 0.1, "the lost row")
    assert row["outcome"] == LOST


def test_history_off_empties_the_journal(jx, fake_daemon, state):
    fake_daemon(cores=2, extra=["--history=off"])
    append(jx, record(new_tag()))
    r = history(jx)
    assert r["error"] and r["pending"] == 0, r
    assert os.path.getsize(journal(jx)) == 0
    assert not os.path.exists(db_path(state))


@pytest.mark.parametrize("how", ["option", "env"])
def test_retention_keeps_the_newest_jobs(jx, fake_daemon, state, how):
    if how == "option":
        fake_daemon(cores=2, extra=["--history-keep-jobs", "3"])
    else:
        fake_daemon(cores=2, env={"JIFFY_HISTORY_KEEP_JOBS": "3"})
    tags = [new_tag() for _ in range(10)]
    append(jx, *[record(t) for t in tags])
    history(jx)
    assert [x["tag"] for x in rows(state)] == tags[-3:]
    old = new_tag()
    append(jx, record(old, end_ns=time.time_ns() - 100 * 86400 * 10**9))  # beyond 90 days
    history(jx)  # stored; pruned within a minute, not at once
    assert old in [x["tag"] for x in rows(state)]


def test_a_lane_job_never_announced_whose_launcher_died_is_lost(jx, fake_daemon, state):
    """A lane launcher that dies before saying `lane` (within its job's first
    2 ms) leaves only its slot's record: the daemon's row comes from it."""
    import sys
    from test_lane import FAKE_LAUNCHER, lane_path
    fake_daemon(cores=2)
    tag = new_tag()
    p = subprocess.Popen([sys.executable, "-c", FAKE_LAUNCHER, lane_path(jx), tag],
                         stdout=subprocess.PIPE, text=True, env=jx.env)
    jx.popens.append(p)
    job = int(p.stdout.readline())
    j = wait_until(lambda: [j for j in jx.status()["running"] if j["job"] == job], 10, 0.05,
                   "the lane job in status")[0]
    assert j["lane"] is True and j["rank_cores"] == [[0]] and j["start"] > 1e9
    p.kill()
    p.wait()

    def lost():
        history(jx)
        return rows(state, "tag = ?", (tag,)) if os.path.exists(db_path(state)) else []

    (row,) = wait_until(lost, 20, 0.1, "the lost lane row")
    assert row["outcome"] == LOST and row["job"] == job and row["pid"] == p.pid, row
    assert row["command"] == "fake launcher" and row["cores"] == "0" and row["flags"] & 1


def test_a_database_locked_by_someone_else_fails_no_launch_and_heals(jx, fake_daemon, state):
    fake_daemon(cores=2)
    history(jx)  # made
    other = sqlite3.connect(db_path(state), isolation_level=None, timeout=0)
    other.execute("BEGIN EXCLUSIVE")
    t = new_tag()
    append(jx, record(t))
    t0 = time.monotonic()
    r = history(jx)
    assert time.monotonic() - t0 < 5
    assert "locked" in r["error"] and r["pending"] == 1, r
    assert_launches_work(jx)
    other.execute("ROLLBACK")
    other.close()
    r = history(jx)
    assert r["error"] == "" and r["pending"] == 0, r
    assert written(state) == [t] and launched(state) == 1
    assert daemon_log(jx).count("database is locked") == 1


def test_a_launcher_that_withdraws_and_lives_on_leaves_no_cancelled_row(jx, fake_daemon, state):
    """A front handing over before its grant closes its connection and lives
    on as jiffy-launch, which asks anew and reports the launch itself: no
    row from the daemon for the withdrawn request."""
    fake_daemon(cores=1)
    a = jx.popen(["-n", 1, "sleep", 100])
    jx.wait_running(a.pid)
    tag = new_tag()
    (path,) = jx.sockets()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(path)
    s.sendall(frame({"type": "submit", "v": 1, "ntasks": 1, "cores_per_task": 1, "gpus_per_task": 0,
                     "gpus_per_job": 0, "allow_oversubscribe": True, "bind": "core", "pid": os.getpid(),
                     "command": "withdrawn", "progress": False, "tag": tag, "cwd": "/somewhere",
                     "label": "runex1"}))
    (n,) = struct.unpack(">I", read_exact(s, 4))
    assert json.loads(read_exact(s, n))["type"] == "queued"
    (q,) = [j for j in jx.status()["queued"] if j["command"] == "withdrawn"]
    assert q["cwd"] == "/somewhere" and q["label"] == "runex1"
    s.close()
    wait_until(lambda: not jx.status()["queued"], 10, 0.05, "the request withdrawn")
    history(jx)
    assert not rows(state, "tag = ?", (tag,)) if os.path.exists(db_path(state)) else True
    a.kill()
    a.wait()
