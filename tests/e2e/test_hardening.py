"""Hardening (issue 15): ids, tags, the state file and re-attaching are
checked wherever they come from, so that no message or file can crash the
daemon, jump the queue or get another job's processes killed; the daemon's
memory and message rate stay bounded whatever its clients do.

Raw protocol clients speak to a hand-started daemon; victims are processes
carrying a job's tag (JIFFY_JOB_TAG) in their environment."""

import json
import mmap
import os
import random
import socket
import struct
import subprocess
import time

import pytest

from conftest import needs_plain_build, pid_alive, wait_until
from test_security import connect, frame, other_user, read_frame  # noqa: F401 (fixture)

MAX_JOB_ID = (1 << 50) - 1
LENT_BASE = 1 << 60
HEADER_SIZE, SLOT_SIZE, RECORD_SIZE = 64, 144, 312


def new_tag():
    return "%032x" % random.getrandbits(128)


def submit(tag=None, ntasks=1, progress=False, **extra):
    m = {"type": "submit", "v": 1, "ntasks": ntasks, "cores_per_task": 1, "gpus_per_task": 0,
         "gpus_per_job": 0, "allow_oversubscribe": True, "bind": "core", "pid": os.getpid(),
         "command": "hardening", "progress": progress}
    if tag:
        m["tag"] = tag
    m.update(extra)
    return m


def ask(sock_path, msg):
    """Sends msg on a new connection; returns (socket, first answer)."""
    s = connect(sock_path)
    s.sendall(frame(msg))
    return s, read_frame(s)


def refused(s, first, what):
    assert isinstance(first, dict) and first.get("type") == "error", f"{what}: {first!r}"
    assert read_frame(s) == "eof", f"{what}: the daemon should hang up"
    s.close()
    return first["message"]


def victim(jx, tag):
    """A process in a session of its own carrying tag, as a rank would."""
    p = subprocess.Popen(["sleep", "300"], env=dict(jx.env, JIFFY_JOB_TAG=tag), start_new_session=True,
                         stdin=subprocess.DEVNULL)
    jx.popens.append(p)
    return p


def start_time(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    return int(s[s.rindex(")") + 2:].split()[19])


def daemon_log(jx, i):
    with open(os.path.join(jx.runtime_dir, f"fg-daemon-{i}.log")) as f:
        return f.read()


def the_socket(jx):
    (s,) = jx.sockets()
    return s


def key_path(jx, ext):
    return os.path.join(jx.runtime_dir, jx.status()["daemon"]["key"] + ext)


def assert_serving(jx, d):
    assert d.poll() is None, "the daemon died"
    cp = jx.run(["-n", 1, "true"], timeout=30)
    assert cp.returncode == 0, cp.stderr
    jx.status()


# --------------------------------------------------------------------------
# item 6: job ids


@pytest.mark.parametrize("msg", [
    submit(arrival=LENT_BASE), submit(arrival=MAX_JOB_ID + 1), submit(arrival=(1 << 64) - 1),
    {"type": "reattach", "v": 1, "job": LENT_BASE, "pgid": 0, "ntasks": 1, "command": "x",
     "slots": [[0, 0]], "gpu_ids": [], "exclusive": False},
    {"type": "lane", "v": 1, "job": LENT_BASE, "first": 1, "count": 1, "pid": 1, "command": "x",
     "tag": "0123456789abcdef"},
], ids=["arrival 2^60", "arrival beyond max", "arrival 2^64-1", "reattach 2^60", "lane 2^60"])
def test_job_ids_beyond_the_range_are_refused(jx, fake_daemon, msg):
    d = fake_daemon(cores=4)
    s, first = ask(the_socket(jx), msg)
    assert "out of range" in refused(s, first, "an id beyond the range")
    st = jx.status()  # the status that segfaulted
    assert all(j["job"] <= MAX_JOB_ID for j in st["running"] + st["queued"])
    assert_serving(jx, d)


def test_a_corrupt_lane_counter_hands_out_no_stand_in_id(jx, fake_daemon):
    d = fake_daemon(cores=4)
    path = key_path(jx, ".lane")
    with open(path, "r+b") as f:
        m = mmap.mmap(f.fileno(), HEADER_SIZE)
        struct.pack_into("<Q", m, 16, LENT_BASE)
        m.close()
    holders = []
    for _ in range(3):  # the lane's stand-ins must survive real ids, and status must too
        s, first = ask(the_socket(jx), submit(tag=new_tag()))
        assert first["type"] == "grant" and 1 <= first["job"] <= MAX_JOB_ID, first
        holders.append(s)
        jx.status()
    for s in holders:
        s.sendall(frame({"type": "finished", "code": 0}))
        s.close()
    assert_serving(jx, d)
    # said once: as a damaged lane file (the lane's own check) or an id counter out of range
    log = daemon_log(jx, 0)
    said = log.count("job counter was out of range"), log.count("is damaged")
    assert 1 <= sum(said) and max(said) == 1, log


# --------------------------------------------------------------------------
# item 7: a tag is one job's


def test_another_jobs_tag_is_refused_and_never_killed(jx, fake_daemon):
    d = fake_daemon(cores=4)
    assert jx.run(["-n", 1, "true"]).returncode == 0  # job 1, from the lane
    sock = the_socket(jx)
    tag_a = new_tag()
    a, grant_a = ask(sock, submit(tag=tag_a))
    assert grant_a["type"] == "grant", grant_a
    v = victim(jx, tag_a)
    b, grant_b = ask(sock, submit(tag=new_tag()))
    assert grant_b["type"] == "grant", grant_b
    b.sendall(frame({"type": "started", "pgid": (1 << 30) - 1, "jobdir": "", "tag": tag_a}))
    assert "another job" in refused(b, read_frame(b), "started with A's tag")
    s, first = ask(sock, submit(tag=tag_a))
    assert "another job" in refused(s, first, "submit with A's tag")
    st = jx.status()
    free = [c["id"] for c in st["resources"]["cores"] if c["holders"] == [None]]
    s, first = ask(sock, {"type": "lane", "v": 1, "job": 1, "first": free[0], "count": 1,
                          "pid": os.getpid(), "command": "x", "tag": tag_a})
    assert "another job" in refused(s, first, "lane with A's tag")
    # B's job was lost (its group and tag killed): A's ranks are untouched
    wait_until(lambda: not [j for j in jx.status()["running"] if j["job"] == grant_b["job"]], 10, 0.05,
               "B released")
    assert pid_alive(v.pid), "a message naming A's tag got A's rank killed"
    a.close()  # A's own launcher gone: now its tag is killed
    wait_until(lambda: not pid_alive(v.pid), 10, 0.05, "A's rank killed with A")
    assert_serving(jx, d)


def test_a_forged_lane_record_does_not_kill_another_jobs_ranks(jx, fake_daemon):
    """A record on a lent slot nobody holds, naming a dead launcher and A's
    tag: the daemon clears it but kills nothing by A's tag."""
    d = fake_daemon(cores=4)
    sock = the_socket(jx)
    tag_a = new_tag()
    a, grant_a = ask(sock, submit(tag=tag_a))
    assert grant_a["type"] == "grant", grant_a
    v = victim(jx, tag_a)
    st = jx.status()
    u = [c["id"] for c in st["resources"]["cores"] if c["holders"] == [None]][0]
    path = key_path(jx, ".lane")
    with open(path, "r+b") as f:
        m = mmap.mmap(f.fileno(), os.fstat(f.fileno()).st_size)
        nslots = struct.unpack_from("<I", m, 8)[0]
        rec = HEADER_SIZE + nslots * SLOT_SIZE + u * RECORD_SIZE
        struct.pack_into("<QiiiiQ72s208s", m, rec, 0, 0x3fffffff, 0, u, 1,
                         time.clock_gettime_ns(time.CLOCK_BOOTTIME), tag_a.encode(), b"forged")
        struct.pack_into("<Q", m, rec, grant_a["job"] + 1000)
        m.close()
    wait_until(lambda: "names the tag of another job" in daemon_log(jx, 0), 10, 0.05,
               "the daemon to find the forged record")
    assert pid_alive(v.pid), "a forged lane record got A's rank killed"
    a.sendall(frame({"type": "finished", "code": 0}))
    a.close()
    assert_serving(jx, d)


def stop_and_plant_state(jx, d, text, owner=None, mode=0o600, symlink=False):
    state = key_path(jx, ".state")
    jx.stop()
    d.wait(timeout=15)
    os.unlink(state)
    target = state + ".elsewhere" if symlink else state
    with open(target, "w") as f:
        f.write(text)
    os.chmod(target, mode)
    if owner is not None:
        os.chown(target, owner, owner)
    if symlink:
        os.symlink(target, state)
    return state


@pytest.mark.parametrize("kind", ["ours", "other owner", "mode 0644", "symlink", "wrong start time"])
def test_state_file_kills_only_with_proof(jx, fake_daemon, other_user, kind):  # noqa: F811
    """A state file naming a live process group as a lost job's: the daemon
    kills it only from a file of its own (regular, its euid, 0600) and only
    with the recorded leader's start time matching; anything else is ignored
    with one warning, and nothing is killed."""
    d = fake_daemon(cores=4)
    v = victim(jx, new_tag())
    leader_start = start_time(v.pid) + (7 if kind == "wrong start time" else 0)
    job = {"job": 3, "slots": [[0, 0]], "gpus": [], "exclusive": False, "pid": 0, "pid_start": 1,
           "pgid": v.pid, "sid": v.pid, "leader_start": leader_start, "tag": "", "ntasks": 1,
           "command": "planted", "jobdir": ""}
    text = json.dumps({"v": 1, "next_job": 5, "jobs": [job]}) + "\n"
    stop_and_plant_state(jx, d, text, owner=other_user.uid if kind == "other owner" else None,
                         mode=0o644 if kind == "mode 0644" else 0o600, symlink=kind == "symlink")
    d2 = fake_daemon(cores=4)
    if kind == "ours":
        wait_until(lambda: not pid_alive(v.pid), 10, 0.05, "the recorded group killed")
    else:
        assert pid_alive(v.pid), f"a state file ({kind}) got an unproven group killed"
        log = daemon_log(jx, 1)
        if kind != "wrong start time":
            assert log.count("the state file") == 1, log
    assert_serving(jx, d2)
    if pid_alive(v.pid):
        v.kill()


def test_a_fifo_at_the_state_path_does_not_block_the_daemon(jx, fake_daemon):
    d = fake_daemon(cores=2)
    state = key_path(jx, ".state")
    jx.stop()
    d.wait(timeout=15)
    os.unlink(state)
    os.mkfifo(state, 0o600)
    d2 = fake_daemon(cores=2, timeout=15)  # starts and answers
    assert_serving(jx, d2)
    log = daemon_log(jx, 1)
    assert log.count("not a regular file") == 1, log
    assert os.path.isfile(state) and not os.path.islink(state), "the ledger was not written anew"


# --------------------------------------------------------------------------
# item 8: re-attaching, ranges, tags


def test_reattach_only_for_what_the_daemon_recovered(jx, fake_daemon):
    d = fake_daemon(cores=4)
    sock = the_socket(jx)
    msg = {"type": "reattach", "v": 1, "job": 77, "pgid": 0, "ntasks": 1, "command": "x",
           "slots": [[1, 0]], "gpu_ids": [], "exclusive": False}
    s, first = ask(sock, msg)
    assert "not granted by this daemon's predecessor" in refused(s, first, "an unknown job")
    for bad in ({"slots": [[4294967296, 0]]}, {"slots": [[0, 4294967296]]}, {"gpu_ids": [4294967296]},
                {"tag": "not hex at all, no"}, {"tag": "0123456789ABCDEF"}):
        s, first = ask(sock, dict(msg, **bad))
        refused(s, first, f"reattach with {bad}")
    st = jx.status()
    assert st["running"] == [], st["running"]
    assert all(c["holders"] == [None] for c in st["resources"]["cores"])
    assert_serving(jx, d)


# --------------------------------------------------------------------------
# item 10: queue positions


def drain(jx, n, progress):
    """n clients queue behind a job holding both cores, then are granted
    one by one (each finishes at once). Returns (queued messages received,
    clients granted)."""
    import selectors
    sock = the_socket(jx)
    holder, g = ask(sock, submit(ntasks=2))
    assert g["type"] == "grant", g
    sel = selectors.DefaultSelector()
    clients = []
    for _ in range(n):
        s, first = ask(sock, submit(progress=progress))
        assert first["type"] == "queued", first
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, [b"", None])
        clients.append(s)
    holder.sendall(frame({"type": "finished", "code": 0}))
    holder.close()
    queued = granted = 0
    deadline = time.monotonic() + 120
    while granted < n:
        assert time.monotonic() < deadline, f"only {granted} of {n} granted"
        for key, _ in sel.select(timeout=1):
            s, state = key.fileobj, key.data
            try:
                chunk = s.recv(1 << 16)
            except BlockingIOError:
                continue
            assert chunk, "the daemon hung up"
            state[0] += chunk
            while len(state[0]) >= 4:
                size = struct.unpack(">I", state[0][:4])[0]
                if len(state[0]) < 4 + size:
                    break
                msg = json.loads(state[0][4:4 + size])
                state[0] = state[0][4 + size:]
                if msg["type"] == "queued":
                    assert state[1] is None or msg["position"] < state[1], "a position went back"
                    state[1] = msg["position"]
                    queued += 1
                elif msg["type"] == "grant":
                    granted += 1
                    s.setblocking(True)
                    s.sendall(frame({"type": "finished", "code": 0}))
                    sel.unregister(s)
                    s.close()
                    break
    return queued, granted


def test_queue_positions_do_not_flood_waiting_clients(jx, fake_daemon):
    """300 waiting clients that asked for progress drain with a bounded
    number of position updates (each grant moves every waiting request: one
    message per move was n^2/2, 45,000 here). Counted, not timed: at most
    one update per client per second of draining, which is far below."""
    d = fake_daemon(cores=2)
    n = 300
    t0 = time.monotonic()
    queued, granted = drain(jx, n, progress=True)
    took = time.monotonic() - t0
    print(f"{queued} position updates for {n} clients in {took:.2f}s")
    assert granted == n
    assert queued <= n * (2 + int(took)), f"{queued} position updates for {n} clients in {took:.1f}s"
    assert queued < n * n / 20, queued
    assert d.poll() is None


# --------------------------------------------------------------------------
# item 11: clients that never read


def vm_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


@needs_plain_build
def test_clients_that_never_read_cannot_grow_the_daemon(jx, fake_daemon):
    """16 clients ask for status over and over and never read: each would
    have 100 MB of replies waiting. They are dropped (each beyond its share,
    the largest backlog beyond the total budget), the daemon's peak memory
    stays within the budget, and other clients are served meanwhile."""
    import threading
    d = fake_daemon(cores=64)
    pid = d.pid
    base = vm_kb(pid, "VmRSS")
    sock = the_socket(jx)
    reply = len(json.dumps(jx.status()))
    per_client = (100 << 20) // reply  # requests worth 100 MB of replies
    request = frame({"type": "status", "v": 1}) * 100
    dropped = []

    def abuse():
        s = connect(sock)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            for _ in range(per_client // 100):
                s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            dropped.append(s)
            return
        s.close()

    threads = [threading.Thread(target=abuse) for _ in range(16)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        assert jx.run(["status", "--json"], timeout=30).returncode == 0  # others are served
    for t in threads:
        t.join()
    assert len(dropped) == 16, f"only {len(dropped)} of 16 clients that never read were dropped"
    for s in dropped:
        s.close()
    peak = vm_kb(pid, "VmHWM")
    print(f"daemon RSS {base} kB, peak {peak} kB")
    assert peak - base < 64 * 1024, f"the daemon grew from {base} kB to {peak} kB"
    assert_serving(jx, d)
    log = open(os.path.join(jx.runtime_dir, "fg-daemon-0.log")).read()
    assert "does not read" in log
