"""Fault injection (issue 4, items 1-3): daemon SIGKILLs while jobs run and
wait, launcher and rank faults, and a hostile environment (runtime directory
removed, socket replaced, disk full, 1,000 idle connections, half messages).

Every test records what its ranks saw (granted cores, start and end times,
pids) and checks the invariants on those records: no two overlapping jobs
share a granted core, no rank of a running job dies because of the fault,
nothing a job started survives it, every exit code is the expected one. The
fixture's teardown checks for stray processes besides.

Daemons that must come back after a SIGKILL with the same fake resources are
started through JIFFY_DAEMON, pointing at a wrapper that appends
`--cores N --idle-timeout 0` to whatever the launcher passes to jiffyd.
"""

import json
import os
import random
import resource
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import (BUILD, JIFFYD, PROGRAMS, JobTrace, core_cpu_map, find_overlaps, parse_cpu_list,
                      is_jiffy_server, pid_alive, procs_with_marker, read_records, run_concurrently, wait_until)

ROGUE = PROGRAMS / "rogue"


@pytest.fixture(scope="module")
def rogue_bin(probe_bin):
    if not (ROGUE.is_file() and os.access(ROGUE, os.X_OK)):
        pytest.skip(f"test program not built: {ROGUE}")
    return str(ROGUE)


# --------------------------------------------------------------------------
# helpers


def autostart_fake(jx, directory, cores):
    """Makes every daemon the launchers start (after a crash too) serve `cores`
    fake cores and never exit idle."""
    d = directory / "daemon-wrapper"
    d.mkdir()
    w = d / "jiffyd"
    w.write_text(f'#!/bin/sh\nexec "{JIFFYD}" "$@" --cores {cores} --idle-timeout 0\n')
    w.chmod(0o755)
    # jiffy looks for jiffy-pmix beside the daemon executable
    os.symlink(BUILD / "jiffy-pmix", d / "jiffy-pmix")
    jx.env["JIFFY_DAEMON"] = str(w)


def live_daemons(jx):
    return [p for p in procs_with_marker(jx.marker) if p[1] == "jiffyd"]


def daemon_log_text(jx):
    out = ""
    for name in sorted(os.listdir(jx.runtime_dir)):
        if name.endswith(".log"):
            try:
                with open(os.path.join(jx.runtime_dir, name), errors="replace") as f:
                    out += f"--- {name}\n" + f.read()[-3000:]
            except OSError:
                pass
    return out


def sigkill_daemon(jx, pid=None):
    pid = pid or jx.daemon_pid()
    assert pid, "no daemon to kill"
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), 5, what=f"daemon {pid} to die")
    return pid


def wait_records(directory, tag, n, key="pid", timeout=30):
    def ready():
        recs = read_records(directory, tag).get(tag, {})
        if len(recs) == n and all(key in r for r in recs.values()):
            return recs
        return None
    return wait_until(ready, timeout, 0.02, f"{n} ranks of {tag} to record {key}")


def read_rogue(directory, tag):
    """{rank: [(role, pid)]} from rogue's pid files (several children each)."""
    out = {}
    for name in os.listdir(directory):
        t, _, r = name.rpartition(".")
        if t != tag or not r.isdigit():
            continue
        with open(os.path.join(directory, name)) as f:
            pairs = [l.strip().split("=", 1) for l in f if "=" in l]
        out[int(r)] = [(k, int(v)) for k, v in pairs]
    return out


def wait_rogue(directory, tag, n, role, timeout=30):
    def ready():
        recs = read_rogue(directory, tag)
        if len(recs) == n and all(any(k == role for k, _ in v) for v in recs.values()):
            return recs
        return None
    return wait_until(ready, timeout, 0.02, f"{n} ranks of {tag} to record {role}")


def rogue_pids(recs, roles=("rank", "child", "daemon")):
    return sorted({pid for v in recs.values() for k, pid in v if k in roles})


def assert_all_dead(pids, timeout=5, what="process"):
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if pid_alive(p)]
        if not alive:
            return
        if time.monotonic() > deadline:
            desc = []
            for p in alive:
                try:
                    with open(f"/proc/{p}/stat") as f:
                        st = f.read()
                    desc.append(f"{p} ({st[st.index('(') + 1:st.rindex(')')]}, "
                                f"ppid {st[st.rindex(')') + 2:].split()[1]})")
                except OSError:
                    desc.append(str(p))
            raise AssertionError(f"{what}: still alive {timeout}s later: {', '.join(desc)}")
        time.sleep(0.02)


def assert_all_free(jx, timeout=10):
    """Every grant came back: nothing running or queued, every slot free."""
    def free():
        st = jx.status()
        if st["running"] or st["queued"]:
            return None
        if any(h is not None for c in st["resources"]["cores"] for h in c["holders"]):
            return None
        return st
    try:
        return wait_until(free, timeout, 0.05, "every core to be free again")
    except AssertionError:
        raise AssertionError(f"resources not released: {json.dumps(jx.status())[:2000]}")


def traces_of(recs, tags):
    out = []
    for t in tags:
        ranks = {r: rec for r, rec in recs.get(t, {}).items() if "start_ns" in rec}
        assert ranks, f"{t}: no rank started"
        missing = [r for r, rec in ranks.items() if "end_ns" not in rec]
        assert not missing, f"{t}: ranks {missing} never finished (killed?): {ranks}"
        out.append(JobTrace(t, ranks))
    return out


def check_no_double_booking(traces):
    bad = find_overlaps(traces)
    assert not bad, (f"{len(bad)} pairs of overlapping jobs share granted cores: " +
                     "; ".join(f"{a.tag} and {b.tag} share {sorted(s)}" for a, b, s in bad[:5]))


def check_survived(trace, crash_ns, what):
    """Each rank of trace was running at crash_ns and ended normally."""
    for r, rec in trace.ranks.items():
        assert "signals" not in rec, f"{what} rank {r} got signals {rec['signals']}"
        assert int(rec["start_ns"]) < crash_ns < int(rec["end_ns"]), \
            f"{what} rank {r} was not running across the crash"


def ncores_of(jx):
    return len(jx.status()["resources"]["cores"])


# --------------------------------------------------------------------------
# 1. daemon SIGKILL while jobs run and wait


@pytest.mark.parametrize("daemon", ["real", "fake4"])
def test_daemon_sigkill_running_keep_cores_waiting_served_in_order(jx, probe_bin, tmp_path, daemon):
    """Two jobs hold every core, four whole-machine jobs wait. SIGKILL the
    daemon: the running ranks live on and finish normally, the new
    (auto-started) daemon lists them as running again, grants none of their
    cores to anyone, and serves the waiting launchers in their original
    order, even the two oldest, which come back a second late (stopped
    across the crash): the running jobs hold every core for seconds more, so
    nothing stands in the way of the original order."""
    if daemon == "fake4":
        autostart_fake(jx, tmp_path, 4)
    out = tmp_path / "rec"
    out.mkdir()
    assert jx.run(["-n", 1, "true"]).returncode == 0
    n = ncores_of(jx)
    if n < 2:
        pytest.skip("needs 2 cores")
    if daemon == "fake4":
        assert n == 4
    sizes = {"R1": n // 2, "R2": n - n // 2}
    running = {t: jx.popen(["-n", k, probe_bin, f"out={out}", f"tag={t}", "sleep=4000"])
               for t, k in sizes.items()}
    for t, p in running.items():
        jx.wait_running(p.pid, timeout=20)
        wait_records(out, t, sizes[t])
    before = {j["pid"]: j for j in jx.status()["running"]}
    waiting = []
    for i in range(4):
        p = jx.popen(["-n", n, probe_bin, f"out={out}", f"tag=W{i}", "sleep=150"])
        jx.wait_queued(p.pid, timeout=20)
        waiting.append(p)
    rank_pids = {t: [int(r["pid"]) for r in wait_records(out, t, sizes[t]).values()] for t in running}

    old = jx.daemon_pid()
    # the two oldest waiting launchers come back late (a loaded machine)
    for p in waiting[:2]:
        os.kill(p.pid, signal.SIGSTOP)
    try:
        crash_ns = time.monotonic_ns()
        sigkill_daemon(jx, old)
        for t, pids in rank_pids.items():
            assert all(pid_alive(p) for p in pids), f"{t}'s ranks died with the daemon"
        time.sleep(1.0)
    finally:
        for p in waiting[:2]:
            os.kill(p.pid, signal.SIGCONT)

    # the new daemon shows the running jobs again, with the cores they hold
    def reattached():
        cp = jx.run(["status", "--json"], timeout=20)
        if cp.returncode != 0:
            return None
        st = json.loads(cp.stdout)
        if not st.get("daemon") or st["daemon"]["pid"] == old:
            return None
        got = {j["pid"]: j for j in st["running"] if j.get("state") == "running"}
        return st if all(p.pid in got for p in running.values()) else None
    st = wait_until(reattached, 20, 0.05, "the new daemon to list the running jobs as running")
    got = {j["pid"]: j for j in st["running"]}
    for t, p in running.items():
        assert sorted(got[p.pid]["cores"]) == sorted(before[p.pid]["cores"]), (t, got[p.pid], before[p.pid])
    # every waiting launcher is queued again, in its original order
    def requeued():
        st = jx.status()
        pids = [j["pid"] for j in sorted(st["queued"], key=lambda j: j["position"])]
        return pids if len(pids) == len(waiting) else None
    order = wait_until(requeued, 20, 0.05, "the waiting launchers to queue at the new daemon")
    assert order == [p.pid for p in waiting], "waiting launchers lost their original order"

    codes = {}
    for t, p in list(running.items()) + [(f"W{i}", p) for i, p in enumerate(waiting)]:
        try:
            _, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{t} did not finish after the daemon crash")
        codes[t] = (p.returncode, err.strip()[-300:])
    assert all(c == 0 for c, _ in codes.values()), codes
    recs = read_records(out)
    tags = list(running) + [f"W{i}" for i in range(4)]
    traces = {t.tag: t for t in traces_of(recs, tags)}
    for t in running:
        check_survived(traces[t], crash_ns, t)
        assert sorted(traces[t].ranks) == list(range(sizes[t]))
    check_no_double_booking(list(traces.values()))
    starts = [traces[f"W{i}"].start for i in range(4)]
    assert starts == sorted(starts), "the waiting jobs did not start in their original order"
    assert min(starts) > max(traces[t].end for t in running)
    assert len(live_daemons(jx)) == 1, live_daemons(jx)
    assert_all_free(jx)


def plan_storm(n_jobs, widths, seed):
    rnd = random.Random(seed)
    jobs = []
    for i in range(n_jobs):
        n = rnd.choice(widths)
        args = [f"sleep={rnd.randint(80, 350)}"]
        expect = 0
        kind = rnd.random()
        if kind < 0.1:
            expect = rnd.randint(1, 120)
            args.append(f"exit={expect}")
        elif kind < 0.2:
            expect = rnd.randint(1, 120)
            args.append(f"exit@{rnd.randrange(n)}={expect}")
        jobs.append({"tag": f"s{i}", "n": n, "args": args, "expect": expect})
    return jobs


@pytest.mark.slow
def test_ten_daemon_sigkills_during_100_launches(jx, probe_bin, tmp_path):
    """100 launches from 8 concurrent clients on 4 fake cores while the daemon
    is SIGKILLed 10 times: every launch exits as expected, every rank that
    should run runs to its end, and no two overlapping jobs share a core."""
    autostart_fake(jx, tmp_path, 4)
    out = tmp_path / "rec"
    out.mkdir()
    assert jx.run(["-n", 1, "true"]).returncode == 0
    cmap = core_cpu_map(jx.status())
    assert len(cmap) == 4
    jobs = plan_storm(100, [1, 1, 2, 3, 4], seed=11)
    done = threading.Event()
    kills = []
    killer_errors = []

    def killer():
        rnd = random.Random(5)
        try:
            while len(kills) < 10 and not done.is_set():
                time.sleep(rnd.uniform(0.4, 0.9))
                st = jx.run(["status", "--json"], timeout=30)
                d = json.loads(st.stdout).get("daemon") if st.returncode == 0 else None
                if not d or d["uptime_s"] < 0.2:
                    continue
                busy = len(json.loads(st.stdout)["running"])
                os.kill(d["pid"], signal.SIGKILL)
                kills.append((time.monotonic_ns(), d["pid"], busy))
                wait_until(lambda: not pid_alive(d["pid"]), 5, what="killed daemon to die")
        except BaseException as e:  # noqa: BLE001
            killer_errors.append(e)

    k = threading.Thread(target=killer)
    k.start()

    def one(job):
        return jx.run(["-n", job["n"], probe_bin, f"out={out}", f"tag={job['tag']}"] + job["args"],
                      timeout=180)
    try:
        results = run_concurrently(8, jobs, one)
    finally:
        done.set()
        k.join()
    assert not killer_errors, killer_errors
    assert len(kills) == 10, f"only {len(kills)} daemon kills happened during the stream"
    assert sum(1 for _, _, busy in kills if busy) >= 5, f"most kills should hit running jobs: {kills}"
    bad = [(j["tag"], j["expect"], cp.returncode, cp.stderr.strip()[-300:])
           for j, cp in zip(jobs, results) if cp.returncode != j["expect"]]
    assert not bad, f"{len(bad)} launches exited wrongly (tag, expected, got, stderr): {bad[:5]}"
    recs = read_records(out)
    traces = []
    for j in jobs:
        ranks = {r: rec for r, rec in recs.get(j["tag"], {}).items() if "start_ns" in rec}
        if j["expect"] == 0:
            assert sorted(ranks) == list(range(j["n"])), f"{j['tag']}: ranks {sorted(ranks)} ran"
            for r, rec in ranks.items():
                assert "end_ns" in rec and "signals" not in rec, f"{j['tag']} rank {r} did not finish: {rec}"
        if not ranks:
            continue
        for rec in ranks.values():
            assert len(parse_cpu_list(rec["cores"])) == 1, rec
            if "end_ns" not in rec:  # terminated early by a failing peer without a record
                rec["end_ns"] = str(time.monotonic_ns())
        traces.append(JobTrace(j["tag"], ranks))
    ids = [next(iter(t.ranks.values()))["job"] for t in traces]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    assert not dup, f"job ids granted twice across daemon crashes: {dup}"
    check_no_double_booking(traces)
    assert len(live_daemons(jx)) == 1, live_daemons(jx)
    assert_all_free(jx)


# --------------------------------------------------------------------------
# 2. launcher and rank faults


def test_sigkill_launcher_kills_ranks_and_children(jx, rogue_bin, probe_bin, tmp_path):
    """SIGKILL of a launcher whose ranks have children ignoring SIGTERM: all
    of them die and a waiting job gets the cores."""
    assert jx.run(["-n", 1, "true"]).returncode == 0
    n = ncores_of(jx)
    a = jx.popen(["-n", n, rogue_bin, f"pids={tmp_path}", "tag=A", "children=2", "ignoreterm=1",
                  "sleep=100000"])
    recs = wait_until(lambda: (lambda r: r if len(r) == n and all(sum(k == "child" for k, _ in v) == 2
                                                                  for v in r.values()) else None)(
        read_rogue(tmp_path, "A")), 20, what="children recorded")
    b = jx.popen(["-n", n, probe_bin, f"out={tmp_path}", "tag=B"])
    jx.wait_queued(b.pid)
    a.kill()
    a.wait()
    killed_ns = time.monotonic_ns()
    assert_all_dead(rogue_pids(recs), 5, "ranks and their children after the launcher's SIGKILL")
    _, err = b.communicate(timeout=30)
    assert b.returncode == 0, err
    tb = JobTrace("B", read_records(tmp_path)["B"])
    assert tb.start > killed_ns


def test_sigkill_launcher_kills_daemonized_rank_helper(jx, rogue_bin, tmp_path):
    """A rank that daemonized (double fork + setsid) does not outlive a
    launcher killed by SIGKILL."""
    a = jx.popen(["-n", 2, rogue_bin, f"pids={tmp_path}", "tag=A", "daemonize=1", "sleep=100000"])
    recs = wait_rogue(tmp_path, "A", 2, "daemon")
    a.kill()
    a.wait()
    pids = rogue_pids(recs)
    try:
        assert_all_dead(pids, 5, "a daemonized rank helper after the launcher's SIGKILL")
    finally:
        for p in pids:  # not left to the teardown: report this test's failure only
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    cp = jx.run(["-n", 2, "true"], timeout=30)
    assert cp.returncode == 0, cp.stderr


def test_sigkill_one_rank_fails_job_and_frees_cores(jx, fake_daemon, probe_bin, rogue_bin, tmp_path):
    fake_daemon(cores=4)
    p = jx.popen(["-n", 3, probe_bin, f"out={tmp_path}", "tag=K", "sleep=100000"],
                 env={"JIFFY_KILL_GRACE": "1"})
    recs = wait_records(tmp_path, "K", 3)
    victim = int(recs[1]["pid"])
    os.kill(victim, signal.SIGKILL)
    try:
        _, err = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("the job did not end after one rank was SIGKILLed")
    assert p.returncode == 128 + signal.SIGKILL, (p.returncode, err)
    assert "rank 1" in err and "signal 9" in err, err
    recs = read_records(tmp_path)["K"]
    for r in (0, 2):
        assert int(signal.SIGTERM) in recs[r].get("signals", []), f"rank {r} not terminated: {recs[r]}"
    assert_all_dead([int(r["pid"]) for r in recs.values()], 5, "ranks of the failed job")
    assert_all_free(jx)
    # the same with ranks that ignore SIGTERM and have children that do too
    q = jx.popen(["-n", 3, rogue_bin, f"pids={tmp_path}", "tag=KC", "children=2", "ignoreterm=1",
                  "sleep=100000"], env={"JIFFY_KILL_GRACE": "0.5"})
    kc = wait_until(lambda: (lambda r: r if len(r) == 3 and all(sum(k == "child" for k, _ in v) == 2
                                                                 for v in r.values()) else None)(
        read_rogue(tmp_path, "KC")), 20, what="KC's children")
    os.kill(dict(kc[2])["rank"], signal.SIGKILL)
    try:
        _, err = q.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("a job whose ranks ignore SIGTERM did not end after the grace period")
    assert q.returncode == 137, (q.returncode, err)
    assert_all_dead(rogue_pids(kc), 5, "ranks and children ignoring SIGTERM")
    assert_all_free(jx)
    t0 = time.monotonic()
    cp = jx.run(["-n", 4, "true"], timeout=30)
    assert cp.returncode == 0 and time.monotonic() - t0 < 5, cp.stderr


def _pmix_or_skip():
    if not os.access(BUILD / "jiffy-pmix", os.X_OK):
        pytest.skip("jiffy-pmix not built")


def _job_dirs(tmpdir):
    return sorted(n for n in os.listdir(tmpdir) if n.startswith(f"jiffy-{os.geteuid()}-job"))


def test_sigkill_launcher_removes_its_job_dir(jx, rogue_bin, tmp_path):
    """A PMIx job's directory (TMPDIR/jiffy-<uid>-job<id>-XXXXXX) is removed
    by the daemon when the launcher dies by SIGKILL."""
    _pmix_or_skip()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    a = jx.popen(["--mpi=pmix", "-n", 2, rogue_bin, f"pids={tmp_path}", "tag=A", "children=1",
                  "sleep=100000"], env={"TMPDIR": str(tmpdir)})
    recs = wait_rogue(tmp_path, "A", 2, "child")
    dirs = _job_dirs(tmpdir)
    assert len(dirs) == 1, dirs
    a.kill()
    a.wait()
    assert_all_dead(rogue_pids(recs), 5, "ranks and children")
    wait_until(lambda: not _job_dirs(tmpdir), 5, what="the lost job's directory to be removed")
    assert_all_free(jx)


def _queued_behind_a_full_machine(jx, rogue_bin, tmp_path):
    """A PMIx job queued behind one that holds every core, both with their
    own TMPDIR: (that TMPDIR, its env, the blocker, the queued launcher)."""
    _pmix_or_skip()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {"TMPDIR": str(tmpdir)}
    assert jx.run(["-n", 1, "true"]).returncode == 0
    n = ncores_of(jx)
    blocker = jx.popen(["-n", n, rogue_bin, f"pids={tmp_path}", "tag=A", "sleep=100000"], env=env)
    wait_rogue(tmp_path, "A", n, "rank")
    queued = jx.popen(["--mpi=pmix", "-n", 1, rogue_bin, f"pids={tmp_path}", "tag=Q"], env=env)
    return tmpdir, env, blocker, queued


def _shared_pmix_server(jx) -> bool:
    return any(is_jiffy_server(p) and p[1] == "jiffy-pmix" for p in procs_with_marker(jx.marker))


def test_queued_pmix_job_prepares_and_its_dir_goes_with_it(jx, rogue_bin, tmp_path):
    """A PMIx job that waits in the queue starts its PMIx server then, in its
    job directory (launch/bootstrap.h, PreparedPmix), and tells the daemon
    ("preparing"): killed while still queued (SIGKILL: no clean-up of its
    own), the daemon removes the directory; the queued one it replaces runs
    as usual, from its prepared server."""
    tmpdir, env, blocker, queued = _queued_behind_a_full_machine(jx, rogue_bin, tmp_path)
    # The directory is named to the daemon before the job is registered
    # with the set's shared PMIx server (launch/pmix_shared.h), which the
    # launcher started: wait for both.
    wait_until(lambda: len(_job_dirs(tmpdir)) == 1 and _shared_pmix_server(jx), 30,
               what="the queued job's PMIx server")
    queued.kill()
    queued.wait()
    wait_until(lambda: not _job_dirs(tmpdir), 5, what="the killed queued job's directory to be removed")
    # Queued again, then granted: the prepared server serves the ranks.
    hello = BUILD / "mpi" / "hello.openmpi"
    if not os.access(hello, os.X_OK):
        blocker.kill()
        blocker.wait()
        pytest.skip("Open MPI test programs not built")
    second = jx.popen(["-n", 2, str(hello)], env=env)
    wait_until(lambda: len(_job_dirs(tmpdir)) == 1 and _shared_pmix_server(jx), 30,
               what="the second queued job's PMIx server")
    blocker.kill()
    blocker.wait()
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert sorted(out.splitlines()) == [f"hello {r} of 2" for r in range(2)], out
    wait_until(lambda: not _job_dirs(tmpdir), 5, what="the finished job's directory to be removed")
    assert_all_free(jx)


def test_queued_pmix_job_dir_goes_after_a_daemon_restart(jx, rogue_bin, tmp_path):
    """A double fault: the daemon dies (SIGKILL) while a prepared PMIx job
    is queued, then the launcher too. The launcher asks the successor for its
    old place under its old job id (the id its directory is named by) and
    names the directory again, so the successor removes it."""
    tmpdir, env, blocker, queued = _queued_behind_a_full_machine(jx, rogue_bin, tmp_path)

    def prepared_row(daemon_not=None):
        st = jx.status()
        if not st.get("daemon") or st["daemon"]["pid"] == daemon_not:
            return None
        rows = [j for j in st.get("queued", []) if j.get("pid") == queued.pid and j.get("jobdir")]
        return rows[0] if rows else None
    first = wait_until(prepared_row, 30, what="the queued job's directory named to the daemon")
    assert len(_job_dirs(tmpdir)) == 1
    dpid = jx.daemon_pid()
    os.kill(dpid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(dpid), 5, what="the daemon to die")
    again = wait_until(lambda: prepared_row(daemon_not=dpid), 30,
                       what="the successor to know the queued job and its directory")
    assert again["job"] == first["job"], (first, again)
    queued.kill()
    queued.wait()
    wait_until(lambda: not _job_dirs(tmpdir), 5, what="the killed queued job's directory to be removed")
    blocker.kill()
    blocker.wait()
    assert_all_free(jx)


def test_rendezvous_job_dir_goes_with_a_killed_launcher(jx, tmp_path):
    """An Open MPI rank behind a wrapper gets its PMIx server (and the job
    directory it lives in) only when it connects, after "started": the
    launcher names that directory then ("preparing"), so that the daemon
    removes it when the launcher dies by SIGKILL."""
    _pmix_or_skip()
    prog = BUILD / "mpi" / "allreduce_loop.openmpi"
    if not os.access(prog, os.X_OK):
        pytest.skip("Open MPI test programs not built")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    a = jx.popen(["-n", 1, "env", str(prog), "2000000000"], env={"TMPDIR": str(tmpdir)})

    def named():
        rows = [j for j in jx.status().get("running", []) if j.get("pid") == a.pid and j.get("jobdir")]
        return rows[0]["jobdir"] if rows else None
    dir = wait_until(named, 60, what="the launcher to name its rendezvous job directory")
    assert _job_dirs(tmpdir) == [os.path.basename(dir)], (dir, _job_dirs(tmpdir))
    a.kill()
    a.wait()
    wait_until(lambda: not _job_dirs(tmpdir), 10, what="the killed job's directory to be removed")
    assert_all_free(jx)


def test_daemon_and_launcher_both_sigkilled(jx, rogue_bin, probe_bin, tmp_path):
    """The daemon and a launcher die together (SIGKILL): the ranks die with
    their launcher; their children, left in the job's process group, are
    killed by the next daemon (started by the next launch) from its state
    file, which also removes the job's directory and grants the cores only
    once the group is gone."""
    _pmix_or_skip()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    assert jx.run(["-n", 1, "true"]).returncode == 0
    n = ncores_of(jx)
    a = jx.popen(["--mpi=pmix", "-n", n, rogue_bin, f"pids={tmp_path}", "tag=A", "children=1",
                  "ignoreterm=1", "sleep=100000"], env={"TMPDIR": str(tmpdir)})
    recs = wait_rogue(tmp_path, "A", n, "child")
    assert len(_job_dirs(tmpdir)) == 1
    dpid = jx.daemon_pid()
    os.kill(dpid, signal.SIGKILL)
    a.kill()
    a.wait()
    wait_until(lambda: not pid_alive(dpid), 5, what="the daemon to die")
    children = rogue_pids(recs, roles=("child",))
    last_seen = {}  # child -> the last time it was seen alive (a lower bound of its death)
    gone = set()
    stop = threading.Event()

    def watch():
        while not stop.is_set() and len(gone) < len(children):
            for c in children:
                if c in gone:
                    continue
                t = time.monotonic_ns()
                if pid_alive(c):
                    last_seen[c] = t
                else:
                    gone.add(c)
            time.sleep(0.002)
    w = threading.Thread(target=watch)
    w.start()
    try:
        cp = jx.run(["-n", n, probe_bin, f"out={tmp_path}", "tag=B"], timeout=60)
    finally:
        time.sleep(0.1)
        stop.set()
        w.join()
    assert cp.returncode == 0, cp.stderr
    assert_all_dead(rogue_pids(recs), 5, "the dead launcher's ranks and children")
    tb = JobTrace("B", read_records(tmp_path)["B"])
    assert gone == set(children)
    assert tb.start > max(last_seen.values(), default=0), "B started while the lost job's processes still ran on its cores"
    wait_until(lambda: not _job_dirs(tmpdir), 5, what="the lost job's directory to be removed")
    assert_all_free(jx)


@pytest.mark.parametrize("how", ["rank-fails", "ranks-exit-0"])
def test_children_ignoring_sigterm_do_not_survive(jx, fake_daemon, rogue_bin, tmp_path, how):
    fake_daemon(cores=4)
    if how == "rank-fails":
        # rank 0 and its children ignore SIGTERM; rank 1 fails
        args = ["children@0=2", "ignoreterm@0=1", "sleep@0=100000", "sleep@1=500", "exit@1=5"]
        expect = 5
    else:
        # every rank leaves two children behind that ignore SIGTERM
        args = ["children=2", "sleep=100"]
        expect = 0
    t0 = time.monotonic()
    cp = jx.run(["-n", 2, rogue_bin, f"pids={tmp_path}", "tag=C"] + args, timeout=60,
                env={"JIFFY_KILL_GRACE": "0.5"})
    took = time.monotonic() - t0
    assert cp.returncode == expect, cp.stderr
    assert took < 15, f"took {took:.1f}s"
    recs = read_rogue(tmp_path, "C")
    assert sum(k == "child" for v in recs.values() for k, _ in v) == (2 if how == "rank-fails" else 4)
    assert_all_dead(rogue_pids(recs), 3, "children ignoring SIGTERM after the job ended")
    assert_all_free(jx)


@pytest.mark.parametrize("label", [False, True], ids=["plain", "labelled"])
@pytest.mark.parametrize("keep_stdio", [False, True], ids=["closes-stdio", "keeps-stdio"])
def test_daemonizing_rank_does_not_survive_job(jx, fake_daemon, rogue_bin, tmp_path, label, keep_stdio):
    """A rank that double-forks and calls setsid, the daemon ignoring SIGTERM:
    the job ends when the ranks end, and the daemon with it. When the daemon
    keeps the job's stdout open, jiffy's reader still sees EOF."""
    fake_daemon(cores=2)
    rnd = "2" if keep_stdio else "1"
    args = (["-l"] if label else []) + ["-n", 2, rogue_bin, f"pids={tmp_path}", "tag=D",
                                        f"daemonize@0={rnd}", "sleep=200"]
    t0 = time.monotonic()
    cp = jx.run(args, timeout=60)  # communicate() waits for EOF on stdout/stderr
    took = time.monotonic() - t0
    recs = read_rogue(tmp_path, "D")
    pids = rogue_pids(recs)
    try:
        assert cp.returncode == 0, cp.stderr
        assert any(k == "daemon" for k, _ in recs[0]), recs
        assert_all_dead(pids, 3, "a daemonized rank helper after its job ended")
    finally:
        for p in pids:
            if pid_alive(p) and p != os.getpid():
                os.kill(p, signal.SIGKILL)
    assert took < 15
    assert_all_free(jx)


@pytest.mark.parametrize("label", [False, True], ids=["plain", "labelled"])
def test_rank_closes_stdout_and_stderr(jx, fake_daemon, rogue_bin, tmp_path, label):
    fake_daemon(cores=2)
    args = (["-l"] if label else []) + ["-n", 2, rogue_bin, "closeout@0=1", "sleep@0=500",
                                        "flood@1=1000", "eflood@1=500", "sleep@1=200"]
    cp = jx.run(args, timeout=30)
    assert cp.returncode == 0, cp.stderr
    prefix = "[1] " if label else ""
    line_o, line_e = prefix + "o" * 99, prefix + "e" * 99
    assert cp.stdout.splitlines() == [line_o] * 10, cp.stdout[:500]
    assert [l for l in cp.stderr.splitlines() if l] == [line_e] * 5, cp.stderr[:500]
    assert_all_free(jx)


MB = 1024 * 1024


def _slow_reader(fd, sink, pause=0.002):
    while True:
        b = os.read(fd, 65536)
        if not b:
            break
        sink.append(b)
        time.sleep(pause)


@pytest.mark.parametrize("label", [False, True], ids=["plain", "labelled"])
@pytest.mark.parametrize("reader", ["slow", "gone"])
def test_rank_floods_output(jx, fake_daemon, rogue_bin, label, reader):
    """Rank 0 writes 50 MB to stdout and 10 MB to stderr. A slow reader gets
    every byte, in whole lines; a reader that went away never kills jiffy
    (SIGPIPE) and ends the job with 141 (128+SIGPIPE): in plain mode the rank
    itself dies of SIGPIPE, with -l jiffy's own write fails with EPIPE and it
    terminates the ranks, as mpiexec does."""
    fake_daemon(cores=2)
    out_bytes, err_bytes = 50 * MB - (50 * MB) % 100, 10 * MB - (10 * MB) % 100
    args = (["-l"] if label else []) + ["-n", 2, rogue_bin, f"flood@0={out_bytes}",
                                        f"eflood@0={err_bytes}", "sleep@1=300"]
    p = jx.popen(args, text=False)
    t0 = time.monotonic()
    if reader == "gone":
        p.stdout.close()
        p.stderr.close()
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("jiffy did not finish with its readers gone")
        assert p.returncode != -signal.SIGPIPE, "jiffy was killed by SIGPIPE"
        assert p.returncode == 128 + signal.SIGPIPE, p.returncode
    else:
        outs, errs = [], []
        ts = [threading.Thread(target=_slow_reader, args=(p.stdout.fileno(), outs)),
              threading.Thread(target=_slow_reader, args=(p.stderr.fileno(), errs))]
        for t in ts:
            t.start()
        try:
            p.wait(timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail("jiffy did not finish flooding a slow reader")
        for t in ts:
            t.join(60)
        assert p.returncode == 0
        stdout, stderr = b"".join(outs), b"".join(errs)
        prefix = b"[0] " if label else b""
        lo, le = prefix + b"o" * 99 + b"\n", prefix + b"e" * 99 + b"\n"
        assert len(stdout) == out_bytes // 100 * len(lo), len(stdout)
        assert stdout.count(lo) == out_bytes // 100, "stdout lines were cut or mixed"
        assert len(stderr) == err_bytes // 100 * len(le), len(stderr)
        assert stderr.count(le) == err_bytes // 100, "stderr lines were cut or mixed"
    assert time.monotonic() - t0 < 300
    assert_all_free(jx)


# --------------------------------------------------------------------------
# 3. environment faults


def test_runtime_dir_removed_while_daemon_runs(jx, fake_daemon, probe_bin, tmp_path):
    """rm -rf of the runtime directory under a live daemon and a running job:
    the daemon re-creates it (private) with its socket and state, the job is
    unaffected, launches keep working and wait their turn (no second daemon,
    no double booking)."""
    d = fake_daemon(cores=2)
    rt = jx.runtime_dir
    out = tmp_path / "rec"
    out.mkdir()
    a = jx.popen(["-n", 2, probe_bin, f"out={out}", "tag=A", "sleep=3000"])
    jx.wait_running(a.pid)
    wait_records(out, "A", 2)
    sock = jx.sockets()[0]
    removed_ns = time.monotonic_ns()
    subprocess.run(["rm", "-rf", rt], check=True)
    assert not os.path.exists(rt)
    # at once, before the daemon notices: a launch wanting every core
    b = jx.run(["-n", 2, probe_bin, f"out={out}", "tag=B"], timeout=60)
    assert b.returncode == 0, b.stderr
    assert a.wait(timeout=30) == 0
    assert d.poll() is None, "the daemon died"
    st = os.lstat(rt)
    assert st.st_mode & 0o777 == 0o700 and st.st_uid == os.geteuid()
    assert jx.sockets() == [sock]
    assert jx.daemon_pid() == d.pid, "another daemon took over"
    assert [p for p, _, _ in live_daemons(jx)] == [d.pid]
    assert any(n.endswith(".state") for n in os.listdir(rt)), "the state file was not re-created"
    recs = read_records(out)
    ta, tb = traces_of(recs, ["A", "B"])
    check_survived(ta, removed_ns, "A")
    check_no_double_booking([ta, tb])
    # and once more, with launches racing the removal
    res = run_concurrently(4, list(range(12)), lambda i: jx.run(["-n", 1, "true"], timeout=60))
    assert all(cp.returncode == 0 for cp in res), [cp.stderr for cp in res if cp.returncode]
    assert [p for p, _, _ in live_daemons(jx)] == [d.pid]
    assert_all_free(jx)


def test_one_daemon_per_runtime_dir_however_spelled(jx, fake_daemon):
    """The daemon's lifetime lock names its runtime directory: the same
    directory spelled differently (trailing slash, /./, a symlinked parent)
    must not get a second daemon, which would replace the first one's socket
    and keep a second ledger."""
    d = fake_daemon(cores=2)
    rt = jx.runtime_dir
    parent_link = os.path.join(os.path.dirname(rt), f"jfe2e-link-{os.getpid()}-{os.path.basename(rt)}")
    os.symlink(os.path.dirname(rt), parent_link)
    spellings = [rt + "/", os.path.join(os.path.dirname(rt), ".", os.path.basename(rt)),
                 os.path.join(parent_link, os.path.basename(rt))]
    try:
        for sp in spellings:
            cp = jx.run(["daemon", "--cores", 2, "--idle-timeout", 0], env={"JIFFY_RUNTIME_DIR": sp}, timeout=30)
            assert cp.returncode != 0 and "already running" in cp.stderr, \
                f"JIFFY_RUNTIME_DIR={sp}: a second daemon started: {cp.stderr!r}"
        time.sleep(1.2)  # two daemons would be fighting over the socket by now
        assert [p for p, _, _ in live_daemons(jx)] == [d.pid], live_daemons(jx)
        for sp in spellings:
            st = jx.run(["status", "--json"], env={"JIFFY_RUNTIME_DIR": sp}, timeout=30)
            assert json.loads(st.stdout)["daemon"]["pid"] == d.pid, sp
    finally:
        os.unlink(parent_link)
        # extra daemons (the bug) are killed; ours heals its socket and is
        # stopped by the fixture
        for p, _, _ in live_daemons(jx):
            if p != d.pid:
                os.kill(p, signal.SIGKILL)

        def ours_answers():
            cp = jx.run(["status", "--json"], timeout=30)
            return cp.returncode == 0 and (json.loads(cp.stdout).get("daemon") or {}).get("pid") == d.pid
        wait_until(ours_answers, 10, 0.1, "the first daemon to own its socket again")


@pytest.mark.parametrize("replacement", ["regular-file", "foreign-socket", "removed"])
def test_socket_file_replaced(jx, fake_daemon, probe_bin, tmp_path, replacement):
    d = fake_daemon(cores=2)
    out = tmp_path / "rec"
    out.mkdir()
    a = jx.popen(["-n", 2, probe_bin, f"out={out}", "tag=A", "sleep=2000"])
    jx.wait_running(a.pid)
    wait_records(out, "A", 2)
    sock = jx.sockets()[0]
    changed_ns = time.monotonic_ns()
    os.unlink(sock)
    stray = None
    if replacement == "regular-file":
        with open(sock, "w") as f:
            f.write("not a socket")
    elif replacement == "foreign-socket":
        stray = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stray.bind(sock)  # bound, not listening: connect() is refused
    try:
        b = jx.run(["-n", 2, probe_bin, f"out={out}", "tag=B"], timeout=60)
    finally:
        if stray:
            stray.close()
    assert b.returncode == 0, b.stderr
    assert a.wait(timeout=30) == 0
    assert d.poll() is None
    assert jx.daemon_pid() == d.pid
    assert [p for p, _, _ in live_daemons(jx)] == [d.pid]
    ta, tb = traces_of(read_records(out), ["A", "B"])
    check_survived(ta, changed_ns, "A")
    check_no_double_booking([ta, tb])
    assert_all_free(jx)


@pytest.fixture
def tiny_tmpfs():
    """A 64 KiB tmpfs (private, 0700) to serve as a full disk; skips where
    mounting is not permitted. Name it before jx: fixtures end in reverse
    order, and a daemon still running there re-creates its directory once
    it is unmounted and removed (a leftover /tmp/jfe2e-full-* per test)."""
    d = tempfile.mkdtemp(prefix="jfe2e-full-", dir="/tmp")
    cp = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", d],
                        capture_output=True, text=True)
    if cp.returncode != 0:
        os.rmdir(d)
        pytest.skip(f"cannot mount a tmpfs: {cp.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", d], capture_output=True)
        os.rmdir(d)


def fill_up(directory):
    """Fills the filesystem of directory to the last byte."""
    def fill(path, chunk):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * chunk)
        except OSError:
            pass
        finally:
            os.close(fd)
    fill(os.path.join(directory, "filler"), 4096)
    # tail pages and tiny files: whatever still fits
    for i in range(16):
        try:
            fill(os.path.join(directory, f"filler{i}"), 1)
        except OSError:
            break


def _on_full_disk(jx, tiny_tmpfs, tmp_path):
    jx.env["JIFFY_RUNTIME_DIR"] = tiny_tmpfs
    jx.runtime_dir = tiny_tmpfs
    out = tmp_path / "rec"
    out.mkdir()
    autostart_fake(jx, tmp_path, 4)
    fill_up(tiny_tmpfs)
    with pytest.raises(OSError):
        fd = os.open(os.path.join(tiny_tmpfs, "probe-write"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
    return out


def test_disk_full_launches_still_work(tiny_tmpfs, jx, probe_bin, tmp_path):
    """The runtime directory's filesystem is full, so neither the state file
    nor the log can be written: the daemon starts and launches work."""
    out = _on_full_disk(jx, tiny_tmpfs, tmp_path)
    try:
        res = run_concurrently(3, list(range(9)), lambda i: jx.run(
            ["-n", 1 + i % 4, probe_bin, f"out={out}", f"tag=F{i}", "sleep=50"], timeout=60))
        assert all(cp.returncode == 0 for cp in res), [cp.stderr for cp in res if cp.returncode]
        check_no_double_booking(traces_of(read_records(out), [f"F{i}" for i in range(9)]))
        assert_all_free(jx)
    finally:
        jx.stop()


def crash_with_a_slow_launcher(jx, probe_bin, out, n, stall_s):
    """A job holds all n cores and three whole-machine jobs wait; the running
    job's launcher is stopped (SIGSTOP) across a daemon SIGKILL for stall_s,
    as a launcher on a loaded machine or blocked writing its output would be.
    Returns the traces [A, W0, W1, W2] and the crash time."""
    a = jx.popen(["-n", n, probe_bin, f"out={out}", "tag=A", f"sleep={int(stall_s * 1000) + 2000}"])
    jx.wait_running(a.pid)
    wait_records(out, "A", n)
    waiting = []
    for i in range(3):
        p = jx.popen(["-n", n, probe_bin, f"out={out}", f"tag=W{i}", "sleep=100"])
        jx.wait_queued(p.pid)
        waiting.append(p)
    os.kill(a.pid, signal.SIGSTOP)
    try:
        crash_ns = time.monotonic_ns()
        sigkill_daemon(jx)
        time.sleep(stall_s)
    finally:
        os.kill(a.pid, signal.SIGCONT)
    results = [(q.wait(timeout=60), q.stderr.read().strip()) for q in [a] + waiting]
    assert [c for c, _ in results] == [0] * 4, results
    traces = traces_of(read_records(out), ["A", "W0", "W1", "W2"])
    check_survived(traces[0], crash_ns, "A")
    check_no_double_booking(traces)
    assert not results[0][1], f"A's launcher lost its daemon: {results[0][1]!r}"
    return traces, crash_ns


def test_daemon_sigkill_with_a_slow_launcher(jx, probe_bin, tmp_path):
    """A running job's launcher that re-attaches late (after the new daemon's
    3 s recovery window) still keeps its cores: the grant stays held while
    the launcher lives."""
    autostart_fake(jx, tmp_path, 4)
    out = tmp_path / "rec"
    out.mkdir()
    assert jx.run(["-n", 1, "true"]).returncode == 0
    crash_with_a_slow_launcher(jx, probe_bin, out, 4, stall_s=4.0)
    assert_all_free(jx)


@pytest.mark.xfail(reason="known gap: with the disk already full when the daemon starts, no ledger "
                          "can be written (the file is preallocated only when it opens); its successor "
                          "then holds grants for 0.5 s only, and this launcher is stalled for 1.5 s",
                   strict=False)
def test_disk_full_then_daemon_sigkill_never_double_books(tiny_tmpfs, jx, probe_bin, tmp_path):
    """With the state file unwritable (disk full), a daemon SIGKILL while a
    job holds every core and others wait must still not double-book: the new
    daemon may not grant anything before the running launcher, slow here,
    has re-attached."""
    out = _on_full_disk(jx, tiny_tmpfs, tmp_path)
    try:
        assert jx.run(["-n", 1, "true"], timeout=60).returncode == 0
        crash_with_a_slow_launcher(jx, probe_bin, out, 4, stall_s=1.5)
        assert_all_free(jx)
    finally:
        jx.stop()


def _raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {n}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))
    return soft, hard


def _connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    return s


def _frame(obj):
    b = json.dumps(obj).encode()
    return struct.pack(">I", len(b)) + b


def test_1000_idle_connections(jx, fake_daemon, probe_bin, tmp_path):
    old = _raise_nofile(4096)
    conns = []
    try:
        d = fake_daemon(cores=4)
        path = jx.sockets()[0]
        for i in range(1000):
            conns.append(_connect(path))
        wait_until(lambda: jx.status()["daemon"]["clients"] >= 1000, 20, 0.1, "the daemon to hold 1000 clients")
        t0 = time.monotonic()
        res = run_concurrently(4, list(range(24)),
                               lambda i: jx.run(["-n", 1 + i % 3, probe_bin, f"out={tmp_path}", f"tag=i{i}",
                                                 "sleep=30"], timeout=60))
        took = time.monotonic() - t0
        assert all(cp.returncode == 0 for cp in res), [cp.stderr for cp in res if cp.returncode][:3]
        assert took < 30, f"24 launches took {took:.1f}s beside 1000 idle connections"
        check_no_double_booking(traces_of(read_records(tmp_path), [f"i{i}" for i in range(24)]))
        assert d.poll() is None
        for s in conns:
            s.close()
        conns = []
        wait_until(lambda: jx.status()["daemon"]["clients"] <= 1, 10, 0.1, "the idle clients to be gone")
        assert_all_free(jx)
    finally:
        for s in conns:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


def _cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def test_daemon_out_of_descriptors_recovers(jx, probe_bin, tmp_path):
    """A daemon whose descriptor limit is exhausted by idle connections does
    not crash or spin; once they close it serves again."""
    old = _raise_nofile(2048)
    conns = []
    try:
        def low_limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
        log = open(os.path.join(jx.runtime_dir, "lowfd-daemon.log"), "w")
        d = subprocess.Popen([jx.bin, "daemon", "--foreground", "--cores", "2", "--idle-timeout", "0"],
                             env=jx.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             preexec_fn=low_limit)
        log.close()
        jx.daemons.append(d)
        wait_until(lambda: jx.sockets() and jx.run(["status", "--json"], timeout=10).returncode == 0
                   and json.loads(jx.run(["status", "--json"], timeout=10).stdout).get("daemon"),
                   15, 0.05, "the daemon to serve")
        path = jx.sockets()[0]
        for i in range(300):  # more than the daemon can hold: the rest wait in the backlog
            conns.append(_connect(path))
        time.sleep(1.0)
        assert d.poll() is None, "the daemon died when out of descriptors"
        c0 = _cpu_ticks(d.pid)
        time.sleep(2.0)
        used = (_cpu_ticks(d.pid) - c0) / os.sysconf("SC_CLK_TCK")
        assert used < 1.0, f"the daemon spun while out of descriptors: {used:.2f}s CPU in 2s"
        for s in conns:
            s.close()
        conns = []
        cp = jx.run(["-n", 2, probe_bin, f"out={tmp_path}", "tag=L"], timeout=60)
        assert cp.returncode == 0, cp.stderr
        assert d.poll() is None
        with open(os.path.join(jx.runtime_dir, "lowfd-daemon.log")) as f:
            assert "out of file descriptors" in f.read()
        assert_all_free(jx)
    finally:
        for s in conns:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


def _read_frame(s, timeout=10):
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
            c = s.recv(n - len(body))
            if not c:
                return "eof"
            body += c
        return json.loads(body)
    except socket.timeout:
        return "timeout"
    except ConnectionResetError:
        return "eof"


def test_half_messages_and_stalled_clients(jx, fake_daemon, probe_bin, tmp_path):
    """Clients that send half a header, half a body, or trickle a byte at a
    time stall only themselves; when they finally complete their frame they
    are answered."""
    d = fake_daemon(cores=4)
    path = jx.sockets()[0]
    req = _frame({"type": "status", "v": 1})
    half_header = _connect(path)
    half_header.sendall(req[:2])
    half_body = _connect(path)
    half_body.sendall(req[:len(req) // 2])
    trickle = _connect(path)
    stop = threading.Event()
    sent = [0]

    def dribble():
        while not stop.is_set() and sent[0] < len(req) - 1:
            trickle.sendall(req[sent[0]:sent[0] + 1])
            sent[0] += 1
            time.sleep(0.05)
    t = threading.Thread(target=dribble)
    t.start()
    try:
        t0 = time.monotonic()
        res = run_concurrently(4, list(range(16)),
                               lambda i: jx.run(["-n", 1 + i % 4, probe_bin, f"out={tmp_path}", f"tag=h{i}",
                                                 "sleep=20"], timeout=60))
        took = time.monotonic() - t0
        assert all(cp.returncode == 0 for cp in res), [cp.stderr for cp in res if cp.returncode][:3]
        assert took < 20, f"16 launches took {took:.1f}s beside stalled clients"
        check_no_double_booking(traces_of(read_records(tmp_path), [f"h{i}" for i in range(16)]))
        assert jx.status()["daemon"]["clients"] >= 4
    finally:
        stop.set()
        t.join()
    # the stalled clients were only waiting: complete their frames
    half_header.sendall(req[2:])
    half_body.sendall(req[len(req) // 2:])
    trickle.sendall(req[sent[0]:])
    for name, s in (("half header", half_header), ("half body", half_body), ("trickle", trickle)):
        reply = _read_frame(s)
        assert isinstance(reply, dict) and reply.get("type") == "status_reply", (name, reply)
        s.close()
    assert d.poll() is None
    assert_all_free(jx)
