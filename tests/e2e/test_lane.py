"""The lane (src/proto/lane.h): while nothing waits, the daemon lends its
free slots, and a launcher takes them itself (an OFD lock per slot byte of
<key>.lane) without waiting for the daemon's answer. These tests check
that this changes nothing a user or the invariants can see: job ids stay
unique, lane jobs and granted jobs never share a core, a waiting request
closes the lane (FIFO holds), the daemon shows lane jobs and cleans up
after a lane job whose launcher died."""

import os
import random
import signal
import struct
import subprocess
import sys

import pytest

from conftest import (JobTrace, check_rank_affinity, core_cpu_map, find_overlaps, pid_alive,
                      procs_with_marker, read_records, run_concurrently, wait_until)

HEADER = struct.Struct("<QIIQ40x")  # magic, nslots, open, next_job, reserved
SLOT_SIZE = 144                     # struct jiffy_lane_slot
MAGIC = 0x31656E616C796A66


def lane_path(jx):
    return os.path.join(jx.runtime_dir, jx.status()["daemon"]["key"] + ".lane")


def read_header(path):
    with open(path, "rb") as f:
        return HEADER.unpack(f.read(HEADER.size))


def daemon_stopped(jx):
    """Context: the daemon SIGSTOPped (it answers nothing) for the block."""
    class Stopped:
        def __enter__(self):
            self.pid = jx.daemon_pid()
            os.kill(self.pid, signal.SIGSTOP)
            return self

        def __exit__(self, *exc):
            os.kill(self.pid, signal.SIGCONT)
    return Stopped()


def test_lane_launches_need_no_answer_and_get_unique_ids(jx, probe_bin, tmp_path):
    assert jx.run(["-n", 1, "true"]).returncode == 0
    magic, nslots, is_open, _ = read_header(lane_path(jx))
    assert magic == MAGIC and nslots == len(jx.status()["resources"]["cores"]) and is_open == 1
    with daemon_stopped(jx):
        for i in range(10):
            # sleep=5: the launcher says "lane" at 2 ms, to a daemon that reads it
            # (and "finished") only after the job is over
            cp = jx.run(["-n", 1, probe_bin, f"out={tmp_path}", f"tag=L{i}", "sleep=5"], timeout=20)
            assert cp.returncode == 0, cp.stderr
    ids = [read_records(tmp_path)[f"L{i}"][0]["job"] for i in range(10)]
    assert len(set(ids)) == 10, ids
    st = wait_until(lambda: (lambda s: s if not s["running"] else None)(jx.status()), 10, 0.05,
                    "the daemon caught up")
    assert st["queued"] == []
    log = open(os.path.join(jx.runtime_dir, st["daemon"]["key"] + ".log")).read()
    assert "dropping" not in log, log
    assert all(c["holders"] == [None] * c["slots"] for c in st["resources"]["cores"])


def test_a_waiting_request_closes_the_lane(jx, fake_daemon, probe_bin, tmp_path):
    """One core: A runs from the lane; B finds no slot and queues; C, later,
    must queue behind B instead of taking A's slot from the lane when A ends."""
    fake_daemon(cores=1)
    flag = tmp_path / "up"
    a = jx.popen(["-n", 1, "sh", "-c", f"touch {flag}; sleep 1"])
    wait_until(flag.exists, 10, what="A up")
    b = jx.popen(["-n", 1, probe_bin, f"out={tmp_path}", "tag=B", "sleep=200"])
    jx.wait_queued(b.pid)
    assert read_header(lane_path(jx))[2] == 0, "the lane closes while B waits"
    c = jx.popen(["-n", 1, probe_bin, f"out={tmp_path}", "tag=C"])
    jx.wait_queued(c.pid)
    for p in (a, b, c):
        _, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
    recs = read_records(tmp_path)
    tb, tc = JobTrace("B", recs["B"]), JobTrace("C", recs["C"])
    assert tb.end <= tc.start, "C started before B, which waited first"
    wait_until(lambda: read_header(lane_path(jx))[2] == 1, 10, 0.02,
               "the lane open again once nothing waits")


def test_lane_and_granted_jobs_never_share_a_core(jx, probe_bin, tmp_path):
    """Launches from the lane, through the daemon (JIFFY_LANE=0) and by
    jiffy-launch (-l) at once: no two overlapping jobs share a core, and
    every rank is bound to its own."""
    assert jx.run(["-n", 1, "true"]).returncode == 0
    cmap = core_cpu_map(jx.status())
    rnd = random.Random(5)
    jobs = []
    for i in range(120):
        jobs.append({"tag": f"m{i}", "n": rnd.choice([1, 1, 2] if len(cmap) >= 2 else [1]),
                     "how": rnd.choice(["lane", "lane", "ask", "launch"]), "sleep": rnd.randint(0, 15)})

    def one(j):
        opts = ["-n", j["n"]] + (["-l"] if j["how"] == "launch" else [])
        env = {"JIFFY_LANE": "0"} if j["how"] == "ask" else None
        return jx.run(opts + [probe_bin, f"out={tmp_path}", f"tag={j['tag']}", f"sleep={j['sleep']}"],
                      timeout=120, env=env)

    results = run_concurrently(12, jobs, one)
    assert all(cp.returncode == 0 for cp in results), [cp.stderr for cp in results if cp.returncode][:3]
    recs = read_records(tmp_path)
    traces = []
    for j in jobs:
        ranks = recs[j["tag"]]
        assert sorted(ranks) == list(range(j["n"])), j
        for rec in ranks.values():
            check_rank_affinity(rec, cmap, j["tag"], ranks)
        traces.append(JobTrace(j["tag"], ranks))
    bad = find_overlaps(traces)
    assert not bad, f"{len(bad)} overlapping jobs share cores, e.g. {bad[:3]}"
    ids = [next(iter(t.ranks.values()))["job"] for t in traces]
    assert len(set(ids)) == len(ids), "job ids are unique"
    st = jx.status()
    assert st["running"] == [] and st["queued"] == []


# A launcher written in Python: takes slot 0 of the lane and writes its
# record as src/front/lane.c does, then starts a "rank helper" that left
# its process group (setsid) and carries the job's tag, and waits.
FAKE_LAUNCHER = r"""
import fcntl, mmap, os, struct, sys, time
path, tag = sys.argv[1:3]
fd = os.open(path, os.O_RDWR)
m = mmap.mmap(fd, os.fstat(fd).st_size)
nslots = struct.unpack_from("<I", m, 8)[0]
fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqixxxx", fcntl.F_WRLCK, 0, 0, 1, 0))
job = struct.unpack_from("<Q", m, 16)[0]
struct.pack_into("<Q", m, 16, job + 1)
rec = 64 + nslots * 144
struct.pack_into("<QiiiiQ72s208s", m, rec, 0, os.getpid(), 0, 0, 1,
                 time.clock_gettime_ns(time.CLOCK_BOOTTIME), tag.encode(), b"fake launcher")
struct.pack_into("<Q", m, rec, job)
if os.fork() == 0:
    os.setsid()
    os.close(fd)
    os.execve("/bin/sleep", ["sleep", "300"], dict(os.environ, JIFFY_JOB_TAG=tag))
print(job, flush=True)
time.sleep(300)
"""


def record_job(path, u):
    """The job id in slot u's record of the lane file (0: none)."""
    with open(path, "rb") as f:
        nslots = read_header(path)[1]
        f.seek(64 + nslots * SLOT_SIZE + u * 304)
        return struct.unpack("<Q", f.read(8))[0]


def test_a_lane_job_is_shown_and_its_strays_die_with_its_launcher(jx, tmp_path):
    """A lane job the daemon never heard from (a launcher that dies within a
    job's first 2 ms): status reads it from the lane records; when its
    launcher dies, the record it left keeps the slot: the daemon kills what
    carries the job's tag, clears the record once nothing of the job runs,
    and the slot comes back; then the daemon idle-exits."""
    jx.start_daemon(cores=2, idle_timeout=1)
    tag = "%032x" % random.getrandbits(128)
    path = lane_path(jx)
    p = subprocess.Popen([sys.executable, "-c", FAKE_LAUNCHER, path, tag],
                         stdout=subprocess.PIPE, text=True, env=jx.env)
    jx.popens.append(p)
    job = int(p.stdout.readline())

    def shown():
        return [j for j in jx.status()["running"] if j["job"] == job]
    j = wait_until(shown, 10, 0.05, "the lane job in status")[0]
    assert j["pid"] == p.pid and j["cores"] == [0] and j["command"] == "fake launcher"
    assert jx.status()["resources"]["cores"][0]["holders"] == [job]
    strays = wait_until(lambda: [pid for pid, comm, cmd in procs_with_marker(jx.marker) if comm == "sleep"],
                        10, 0.05, "the stray up")
    stray = strays[0]
    p.kill()
    p.wait()
    wait_until(lambda: not pid_alive(stray), 10, 0.05, "the stray killed by the daemon")

    def slot_back():
        st = jx.status()
        if not st.get("daemon"):  # idle-exited already (1 s): it holds nothing then
            return True
        return not [j for j in st["running"] if j["job"] == job] and \
            st["resources"]["cores"][0]["holders"] == [None]
    wait_until(slot_back, 10, 0.05, "the slot back")
    assert record_job(path, 0) == 0, "the record cleared once nothing of the job runs"
    assert "lost its launcher" in jx.daemon_log()
    d = jx.daemons[0]
    d.wait(timeout=20)  # nothing left: the daemon's idle exit is not held up
    assert "idle for" in jx.daemon_log()


def list_rank_fds(jx, opts=(), env=None):
    """Runs one rank that lists its descriptors: {fd: target}, and PMI_FD."""
    cp = jx.run(["-n", 1, *opts, "sh", "-c", 'echo "PMI_FD=$PMI_FD"; exec ls -l /proc/self/fd'], env=env)
    assert cp.returncode == 0, cp.stderr
    fds, pmi = {}, None
    for line in cp.stdout.splitlines():
        line = line.split("] ", 1)[-1]  # -l labels lines "[0] "
        if line.startswith("PMI_FD="):
            pmi = int(line[len("PMI_FD="):])
        elif " -> " in line:
            name, target = line.split(" -> ", 1)
            fds[int(name.split()[-1])] = target
    return fds, pmi


@pytest.mark.parametrize("how", ["front", "-l", "JIFFY_FAST=0"])
def test_a_rank_gets_no_jiffy_descriptor_but_its_pmi_channel(jx, how):
    """The lane's descriptor (nor any other of jiffy's) is never a rank's:
    a rank sees its stdio and its PMI-1 channel, nothing else."""
    assert jx.run(["-n", 1, "true"]).returncode == 0
    opts = ["-l"] if how == "-l" else []
    env = {"JIFFY_FAST": "0"} if how.startswith("JIFFY_FAST") else None
    fds, pmi = list_rank_fds(jx, opts, env)
    extra = {fd: t for fd, t in fds.items() if fd > 2 and not t.startswith("/proc/")}  # ls's own
    assert pmi is not None and set(extra) == {pmi}, fds
    assert extra[pmi].startswith("socket:"), fds
    assert not any(jx.runtime_dir in t for t in fds.values()), fds


@pytest.mark.parametrize("how", ["front", "-l"])
def test_garbage_written_to_every_descriptor_cannot_hurt_the_lane(jx, probe_bin, tmp_path, how):
    """A rank that writes to every descriptor number 3..9 reaches nothing of
    the lane: the lane file is unchanged, status works, job ids stay sane and
    later launches still take lent slots."""
    assert jx.run(["-n", 1, "true"]).returncode == 0
    path = lane_path(jx)
    magic, nslots, _, before = read_header(path)
    with open(path, "rb") as f:
        table = f.read()[64:64 + nslots * SLOT_SIZE]
    opts = ["-l"] if how == "-l" else []
    script = "for fd in 3 4 5 6 7 8 9; do eval \"echo garbage >&$fd\" 2>/dev/null; done; sleep 0.01"
    for _ in range(3):
        jx.run(["-n", 1, *opts, "bash", "-c", script], timeout=30)  # its code is its own business
    m, n, is_open, after = read_header(path)
    assert (m, n) == (magic, nslots) and before < after < before + 100, (before, after)
    with open(path, "rb") as f:
        assert f.read()[64:64 + nslots * SLOT_SIZE] == table
    st = jx.status()
    assert st["running"] == [] or all(j["job"] < after for j in st["running"])
    with daemon_stopped(jx):  # lent slots still taken without asking
        cp = jx.run(["-n", 1, probe_bin, f"out={tmp_path}", "tag=G"], timeout=20)
    assert cp.returncode == 0, cp.stderr
    assert int(read_records(tmp_path)["G"][0]["job"]) < after + 10
    log = open(os.path.join(jx.runtime_dir, st["daemon"]["key"] + ".log")).read()
    assert "damaged" not in log, log


def waiting_for_the_daemon(pid):
    """Whether launcher pid sleeps in poll with no child: asking, not running."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            wchan = f.read()
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
    except OSError:
        return False
    return "poll" in wchan and not children


def test_strays_of_a_killed_lane_launcher_never_share_a_core(jx, probe_bin, tmp_path):
    """A lane launcher on every core is SIGKILLed while its job has a
    setsid'd stray: its locks go at once, but the records it left keep its
    slots. A later launch, while the daemon cannot clean up (stopped), does
    not take them from the lane: it asks, and runs only after the daemon
    has killed the stray."""
    assert jx.run(["-n", 1, "true"]).returncode == 0
    n = len(jx.status()["resources"]["cores"])
    flag = tmp_path / "up"
    a = jx.popen(["-n", n, "sh", "-c", f"setsid sleep 300 & touch {flag}.$JIFFY_RANK; sleep 300"])
    wait_until(lambda: all((tmp_path / f"up.{r}").exists() for r in range(n)), 10, what="A up")
    strays = wait_until(lambda: [pid for pid, comm, cmd in procs_with_marker(jx.marker)
                                 if comm == "sleep" and os.getsid(pid) == pid], 10, 0.05, "strays up")
    wait_until(lambda: [j for j in jx.status()["running"] if j["pid"] == a.pid], 10, 0.05, "A told the daemon")
    with daemon_stopped(jx):
        a.kill()
        a.wait()
        b = jx.popen(["-n", n, probe_bin, f"out={tmp_path}", "tag=B"], env={"JIFFY_DAEMON_TIMEOUT": "60"})
        wait_until(lambda: b.poll() is not None or waiting_for_the_daemon(b.pid), 10, 0.01, "B asking")
        assert b.poll() is None and "B" not in read_records(tmp_path), "B took a slot A's stray may hold"
        assert all(pid_alive(s) for s in strays)
    _, err = b.communicate(timeout=30)
    assert b.returncode == 0, err
    assert not any(pid_alive(s) for s in strays), "the strays killed"
    st = wait_until(lambda: (lambda s: s if not s["running"] else None)(jx.status()), 10, 0.05, "all gone")
    assert all(c["holders"] == [None] * c["slots"] for c in st["resources"]["cores"])


def test_daemon_death_leaves_lane_jobs_their_cores(jx, probe_bin, tmp_path):
    """The daemon is SIGKILLed while a lane job holds every core: the next
    launcher starts a new daemon, which grants nothing the lane job holds."""
    assert jx.run(["-n", 1, "true"]).returncode == 0
    n = len(jx.status()["resources"]["cores"])
    old = jx.daemon_pid()
    # A runs until the test has seen it re-attached (a fixed lifetime loses
    # that race on a loaded machine).
    release = tmp_path / "release"
    a = jx.popen(["-n", n, probe_bin, f"out={tmp_path}", "tag=A", f"await={release}"])
    wait_until(lambda: len(read_records(tmp_path).get("A", {})) == n, 30, what="A up")
    os.kill(old, signal.SIGKILL)
    b = jx.popen(["-n", 1, probe_bin, f"out={tmp_path}", "tag=B"])
    # A's launcher re-attaches to the new daemon, which shows it once
    shown = wait_until(lambda: [j for j in jx.status().get("running", []) if j["pid"] == a.pid], 30, 0.05,
                       "A re-attached")
    assert len(shown) == 1, shown
    release.touch()
    for p in (a, b):
        _, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
    recs = read_records(tmp_path)
    ta, tb = JobTrace("A", recs["A"]), JobTrace("B", recs["B"])
    assert not find_overlaps([ta, tb]), (ta, tb)
    assert jx.daemon_pid() not in (None, old)


def test_a_damaged_lane_file_is_not_used(jx, probe_bin, tmp_path):
    """A lane file that is not the daemon's (wrong magic, wrong mode): the
    launcher asks the daemon instead; nothing breaks."""
    assert jx.run(["-n", 1, "true"]).returncode == 0
    path = lane_path(jx)
    with open(path, "r+b") as f:
        good = f.read(8)
        f.seek(0)
        f.write(b"garbage!")
    try:
        with daemon_stopped(jx):  # asking a stopped daemon fails: so the lane is not used
            cp = jx.run(["-n", 1, "true"], timeout=60, env={"JIFFY_DAEMON_TIMEOUT": "1"})
            assert cp.returncode != 0
        assert jx.run(["-n", 1, probe_bin, f"out={tmp_path}", "tag=G"]).returncode == 0
    finally:
        with open(path, "r+b") as f:
            f.write(good)
    os.chmod(path, 0o644)
    try:
        with daemon_stopped(jx):
            cp = jx.run(["-n", 1, "true"], timeout=60, env={"JIFFY_DAEMON_TIMEOUT": "1"})
            assert cp.returncode != 0
    finally:
        os.chmod(path, 0o600)
    assert jx.run(["-n", 1, "true"]).returncode == 0


def damage(path, how):
    if how == "cut to nothing":
        os.truncate(path, 0)
    elif how == "cut to its header":
        os.truncate(path, HEADER.size)
    elif how == "counter overwritten":
        with open(path, "r+b") as f:
            f.seek(16)
            f.write(struct.pack("<Q", 7 * 10**18))
    elif how == "header overwritten":
        with open(path, "r+b") as f:
            f.write(b"progress\n")


@pytest.mark.parametrize("how", ["cut to nothing", "cut to its header", "counter overwritten",
                                 "header overwritten"])
def test_a_damaged_lane_file_closes_the_lane_and_nothing_else(jx, probe_bin, tmp_path, how):
    """The lane file is cut short or overwritten while the daemon runs and a
    lane launch is in progress: the launch ends well, the daemon lives on
    (it logs the damage once and closes the lane), launches keep working by
    asking, status works and job ids stay sane."""
    assert jx.run(["-n", 1, "true"]).returncode == 0
    path = lane_path(jx)
    daemon = jx.daemon_pid()
    before = read_header(path)[3]
    a = jx.popen(["-n", 1, probe_bin, f"out={tmp_path}", "tag=A", "sleep=300"])
    wait_until(lambda: "A" in read_records(tmp_path), 10, 0.02, "A running")
    damage(path, how)
    _, err = a.communicate(timeout=30)
    assert a.returncode == 0, err
    wait_until(lambda: "damaged" in open(os.path.join(jx.runtime_dir, jx.status()["daemon"]["key"] + ".log")).read(),
               10, 0.05, "the daemon saw the damage")
    for i in range(3):
        cp = jx.run(["-n", 1, probe_bin, f"out={tmp_path}", f"tag=B{i}"], timeout=30)
        assert cp.returncode == 0, cp.stderr
    st = jx.status()
    assert st["daemon"]["pid"] == daemon and st["running"] == []
    assert all(c["holders"] == [None] * c["slots"] for c in st["resources"]["cores"])
    ids = [int(read_records(tmp_path)[f"B{i}"][0]["job"]) for i in range(3)]
    assert len(set(ids)) == 3 and all(before < j < before + 2**21 for j in ids), ids
    log = open(os.path.join(jx.runtime_dir, st["daemon"]["key"] + ".log")).read()
    assert log.count("damaged") == 1, log
    with daemon_stopped(jx):  # the lane is closed: a launch must ask, and waits
        b = jx.popen(["-n", 1, probe_bin, f"out={tmp_path}", "tag=C"], env={"JIFFY_DAEMON_TIMEOUT": "60"})
        wait_until(lambda: b.poll() is not None or waiting_for_the_daemon(b.pid), 10, 0.01, "C asking")
        assert b.poll() is None
    _, err = b.communicate(timeout=30)
    assert b.returncode == 0, err
