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
            check_rank_affinity(rec, cmap, j["tag"])
        traces.append(JobTrace(j["tag"], ranks))
    bad = find_overlaps(traces)
    assert not bad, f"{len(bad)} overlapping jobs share cores, e.g. {bad[:3]}"
    ids = [next(iter(t.ranks.values()))["job"] for t in traces]
    assert len(set(ids)) == len(ids), "job ids are unique"
    st = jx.status()
    assert st["running"] == [] and st["queued"] == []


# A launcher written in Python: takes slot 0 of the lane and writes its
# record as src/front/lane.c does, then starts a "rank helper" that left
# its process group (setsid), keeping the lane descriptor or not, and waits.
FAKE_LAUNCHER = r"""
import fcntl, mmap, os, struct, sys, time
path, tag, marker, keep = sys.argv[1:5]
fd = os.open(path, os.O_RDWR)
os.set_inheritable(fd, True)
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
    if keep != "keep":
        os.close(fd)
    os.execve("/bin/sleep", ["sleep", "300"], dict(os.environ, JIFFY_JOB_TAG=tag))
print(job, flush=True)
time.sleep(300)
"""


@pytest.mark.parametrize("stray", ["keeps the lane descriptor", "closed it"])
def test_a_lane_job_is_shown_and_its_strays_die_with_its_launcher(jx, tmp_path, stray):
    """A lane job the daemon never heard from (a launcher that dies within a
    job's first 2 ms): status reads it from the lane records; when its
    launcher dies, the daemon kills what carries the job's tag (found by the
    slot still held, or by the record left on a slot nobody holds), and the
    slot comes back."""
    assert jx.run(["-n", 1, "true"]).returncode == 0
    tag = "%032x" % random.getrandbits(128)
    keep = "keep" if stray.startswith("keeps") else "close"
    p = subprocess.Popen([sys.executable, "-c", FAKE_LAUNCHER, lane_path(jx), tag, jx.marker, keep],
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
    wait_until(lambda: not shown() and jx.status()["resources"]["cores"][0]["holders"] == [None],
               10, 0.05, "the slot back")
    if keep == "keep":
        log = open(os.path.join(jx.runtime_dir, jx.status()["daemon"]["key"] + ".log")).read()
        assert "lost its launcher" in log


def test_daemon_death_leaves_lane_jobs_their_cores(jx, probe_bin, tmp_path):
    """The daemon is SIGKILLed while a lane job holds every core: the next
    launcher starts a new daemon, which grants nothing the lane job holds."""
    assert jx.run(["-n", 1, "true"]).returncode == 0
    n = len(jx.status()["resources"]["cores"])
    old = jx.daemon_pid()
    a = jx.popen(["-n", n, probe_bin, f"out={tmp_path}", "tag=A", "sleep=1500"])
    wait_until(lambda: len(read_records(tmp_path).get("A", {})) == n, 10, what="A up")
    os.kill(old, signal.SIGKILL)
    b = jx.popen(["-n", 1, probe_bin, f"out={tmp_path}", "tag=B"])
    # A's launcher re-attaches to the new daemon, which shows it once
    shown = wait_until(lambda: [j for j in jx.status().get("running", []) if j["pid"] == a.pid], 10, 0.05,
                       "A re-attached")
    assert len(shown) == 1, shown
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
