"""Many concurrent launchers: no two overlapping jobs share a core, every
rank is bound to its granted cores, every exit code is right; wide jobs run
alone; concurrent first launches start exactly one daemon."""

import os
import random
import subprocess
import threading
import time

import pytest

from conftest import (JobTrace, allowed_cpus, check_rank_affinity, core_cpu_map, find_overlaps,
                      overlaps_in_time, parse_cpu_list, procs_with_marker, read_records,
                      run_concurrently, wait_until)


def plan_jobs(n_jobs, widths, seed, cpt=(1,)):
    rnd = random.Random(seed)
    jobs = []
    for i in range(n_jobs):
        n = rnd.choice(widths)
        c = rnd.choice(cpt)
        sleep = rnd.randint(0, 20)
        args = [f"sleep={sleep}"]
        kind = rnd.random()
        expect = 0
        if kind < 0.15:  # every rank exits with the same code
            expect = rnd.randint(1, 120)
            args.append(f"exit={expect}")
        elif kind < 0.30:  # one rank fails (the others may be terminated)
            expect = rnd.randint(1, 120)
            r = rnd.randrange(n)
            args.append(f"exit@{r}={expect}")
        jobs.append({"tag": f"j{i}", "n": n, "c": c, "args": args, "expect": expect})
    return jobs


def run_storm(jx, probe_bin, outdir, jobs, clients=16):
    def one(job):
        opts = ["-n", job["n"]]
        if job["c"] != 1:
            opts += ["-c", job["c"]]
        cp = jx.run(opts + [probe_bin, f"out={outdir}", f"tag={job['tag']}"] + job["args"], timeout=120)
        return cp
    return run_concurrently(clients, jobs, one)


def check_storm(jobs, results, outdir, cmap, exclusive_ok=False):
    bad_rc = [(j["tag"], j["expect"], cp.returncode, cp.stderr.strip()[:200])
              for j, cp in zip(jobs, results) if cp.returncode != j["expect"]]
    assert not bad_rc, f"{len(bad_rc)} wrong exit codes (tag, expected, got, stderr): {bad_rc[:10]}"
    recs = read_records(outdir)
    traces = []
    for j in jobs:
        ranks = {r: rec for r, rec in recs.get(j["tag"], {}).items() if "start_ns" in rec}
        # ranks of a job whose other rank failed may be terminated before they start
        if j["expect"] == 0:
            assert sorted(ranks) == list(range(j["n"])), f"{j['tag']}: ranks {sorted(ranks)}"
        if not ranks:
            continue
        jobids = {r["job"] for r in ranks.values()}
        assert len(jobids) == 1, f"{j['tag']}: several job ids {jobids}"
        for r, rec in ranks.items():
            assert "end_ns" in rec, f"{j['tag']} rank {r}: no end time: {rec}"
            assert rec["size"] == str(j["n"])
            check_rank_affinity(rec, cmap, j["tag"], ranks)
            if not exclusive_ok:
                assert len(parse_cpu_list(rec["cores"])) == j["c"], (j["tag"], rec["cores"])
        if not exclusive_ok:
            per_rank = [parse_cpu_list(r["cores"]) for r in ranks.values()]
            allc = set().union(*per_rank)
            assert len(allc) == sum(len(c) for c in per_rank), f"{j['tag']}: ranks share cores {per_rank}"
        traces.append(JobTrace(j["tag"], ranks))
    ids = [next(iter(t.ranks.values()))["job"] for t in traces]
    assert len(set(ids)) == len(ids), "job ids are unique"
    bad = find_overlaps(traces)
    assert not bad, f"{len(bad)} overlapping jobs share cores, e.g. {bad[:3]}"
    return traces


def test_200_launches_16_clients_real_machine(jx, probe_bin, tmp_path):
    assert jx.run(["-n", 1, "true"]).returncode == 0
    st = jx.status()
    cmap = core_cpu_map(st)
    ncores = len(cmap)
    widths = [1, 2] if ncores >= 2 else [1]
    jobs = plan_jobs(200, widths, seed=1)
    t0 = time.monotonic()
    results = run_storm(jx, probe_bin, tmp_path, jobs)
    took = time.monotonic() - t0
    check_storm(jobs, results, tmp_path, cmap)
    # every grant came back
    st = jx.status()
    assert st["running"] == [] and st["queued"] == []
    assert all(c["holders"] == [None] * c["slots"] for c in st["resources"]["cores"])
    print(f"200 launches in {took:.2f}s")


def test_200_launches_16_clients_fake_64_cores(jx, fake_daemon, probe_bin, tmp_path):
    d = fake_daemon(cores=64)
    st = jx.status()
    cmap = core_cpu_map(st)
    assert sorted(cmap) == list(range(64))
    real = allowed_cpus()
    for i, cpus in cmap.items():
        assert cpus == {real[i % len(real)]}, f"fake core {i} should map to CPU {real[i % len(real)]}"
    jobs = plan_jobs(200, list(range(1, 9)), seed=2, cpt=(1, 1, 1, 2))
    results = run_storm(jx, probe_bin, tmp_path, jobs)
    traces = check_storm(jobs, results, tmp_path, cmap)
    for t in traces:
        for rec in t.ranks.values():
            assert parse_cpu_list(rec["cpus"]) <= set(real)
    st = jx.status()
    assert st["running"] == [] and st["queued"] == []
    assert d.poll() is None


def test_oversubscribed_slots_never_exceeded(jx, fake_daemon, probe_bin, tmp_path):
    """With 2 slots per core a core may hold two jobs at once, never three."""
    fake_daemon(cores=4, slots_per_core=2)
    cmap = core_cpu_map(jx.status())
    jobs = plan_jobs(60, [1, 2, 3], seed=3)
    results = run_storm(jx, probe_bin, tmp_path, jobs, clients=12)
    bad_rc = [(j["tag"], j["expect"], cp.returncode) for j, cp in zip(jobs, results)
              if cp.returncode != j["expect"]]
    assert not bad_rc, bad_rc
    recs = read_records(tmp_path)
    traces = [JobTrace(t, r) for t, r in recs.items() if all("end_ns" in x for x in r.values())]
    events = []
    for t in traces:
        for core in t.cores:
            events.append((t.end, -1, core))
            events.append((t.start, +1, core))
    events.sort()
    load = {}
    for _, delta, core in events:
        load[core] = load.get(core, 0) + delta
        assert load[core] <= 2, f"core {core} held by more than 2 jobs at once"


# ---------------------------------------------------------------- one daemon


def test_32_concurrent_first_launches_start_one_daemon(jx, probe_bin, tmp_path):
    assert jx.sockets() == []
    # all 32 block on one pipe and start the moment it closes
    rfd, wfd = os.pipe()
    procs = []
    for i in range(32):
        procs.append(subprocess.Popen(
            ["sh", "-c", 'read x; exec "$@"', "sh", jx.bin, "-n", "1", probe_bin, f"out={tmp_path}",
             f"tag=p{i}"],
            stdin=rfd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=jx.env))
    os.close(rfd)
    time.sleep(0.3)
    os.close(wfd)
    fails = []
    for i, p in enumerate(procs):
        try:
            out, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            fails.append((i, "timeout"))
            continue
        if p.returncode != 0:
            fails.append((i, p.returncode, err.strip()[:300]))
    assert not fails, f"{len(fails)} of 32 launchers failed: {fails[:5]}"
    recs = read_records(tmp_path)
    assert len(recs) == 32
    assert len({r[0]["job"] for r in recs.values()}) == 32
    alive = procs_with_marker(jx.marker)
    daemons = [p for p in alive if "jiffyd" in p[1] or " daemon" in p[2]]
    assert len(alive) == 1 and len(daemons) == 1, f"exactly one daemon expected, found {alive}"
    assert jx.status()["daemon"]["pid"] == daemons[0][0]
    assert len(jx.sockets()) == 1, jx.sockets()


# ---------------------------------------------------------------- wide jobs


def wide_job_with_stream(jx, probe_bin, outdir, wide_n, narrow_widths, stream_clients=3,
                         wide_sleep=600, narrow_sleep=40):
    stop = threading.Event()
    narrow = []
    errors = []

    def stream(k):
        i = 0
        rnd = random.Random(k)
        while not stop.is_set():
            tag = f"n{k}x{i}"
            i += 1
            n = rnd.choice(narrow_widths)
            cp = jx.run(["-n", n, probe_bin, f"out={outdir}", f"tag={tag}", f"sleep={narrow_sleep}"],
                        timeout=120)
            if cp.returncode != 0:
                errors.append((tag, cp.returncode, cp.stderr))
            narrow.append(tag)

    ts = [threading.Thread(target=stream, args=(k,)) for k in range(stream_clients)]
    for t in ts:
        t.start()
    time.sleep(0.4)
    submitted = time.monotonic_ns()
    cp = jx.run(["-n", wide_n, probe_bin, f"out={outdir}", "tag=W", f"sleep={wide_sleep}"], timeout=120)
    time.sleep(0.4)
    stop.set()
    for t in ts:
        t.join()
    assert not errors, errors[:3]
    assert cp.returncode == 0, cp.stderr
    recs = read_records(outdir)
    w = JobTrace("W", recs["W"])
    assert sorted(w.ranks) == list(range(wide_n))
    assert all("end_ns" in r for r in w.ranks.values()), "the wide job runs to completion"
    narrow_traces = [JobTrace(t, recs[t]) for t in narrow if t in recs]
    assert len(narrow_traces) >= 3, "the narrow stream should have run"
    ov = [t for t in narrow_traces if overlaps_in_time(t, w)]
    assert not ov, f"narrow jobs overlapped the wide job: {ov[:3]}"
    wait_s = (w.start - submitted) / 1e9
    return w, wait_s


def check_spread(w, cmap, wide_n):
    per_core = {c: 0 for c in cmap}
    for rec in w.ranks.values():
        cores = parse_cpu_list(rec["cores"])
        assert len(cores) == 1, f"rank {rec['rank']} of a wide job has cores {rec['cores']}"
        per_core[next(iter(cores))] += 1
        check_rank_affinity(rec, cmap, "wide job", w.ranks)
    lo, hi = min(per_core.values()), max(per_core.values())
    assert hi - lo <= 1, f"ranks should be spread evenly over all cores: {per_core}"


def test_wide_job_real_machine_runs_alone(jx, probe_bin, tmp_path):
    assert jx.run(["-n", 1, "true"]).returncode == 0
    cmap = core_cpu_map(jx.status())
    w, wait_s = wide_job_with_stream(jx, probe_bin, tmp_path, 12, [1])
    check_spread(w, cmap, 12)
    assert wait_s < 10, f"the wide job waited {wait_s:.1f}s behind a stream of narrow jobs"


def test_wide_job_fake_daemon_runs_alone(jx, fake_daemon, probe_bin, tmp_path):
    fake_daemon(cores=8)
    cmap = core_cpu_map(jx.status())
    w, wait_s = wide_job_with_stream(jx, probe_bin, tmp_path, 20, [1, 2, 3], stream_clients=4)
    check_spread(w, cmap, 20)
    assert wait_s < 10, f"the wide job waited {wait_s:.1f}s behind a stream of narrow jobs"


def test_head_of_queue_not_starved(jx, fake_daemon, probe_bin, tmp_path):
    """A job needing all cores, queued behind a steady stream of 1-core jobs,
    gets them within a bounded time (reservation for the head of the queue)."""
    fake_daemon(cores=4)
    stop = threading.Event()

    def stream(k):
        i = 0
        while not stop.is_set():
            jx.run(["-n", 1, probe_bin, "sleep=150"], timeout=60)
            i += 1

    ts = [threading.Thread(target=stream, args=(k,)) for k in range(6)]
    for t in ts:
        t.start()
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        cp = jx.run(["-n", 4, probe_bin, f"out={tmp_path}", "tag=H"], timeout=60)
        waited = time.monotonic() - t0
    finally:
        stop.set()
        for t in ts:
            t.join()
    assert cp.returncode == 0, cp.stderr
    assert waited < 5, f"the 4-core job waited {waited:.1f}s"


@pytest.mark.slow
def test_stress_1000_launches_32_clients_fake_256_cores(jx, fake_daemon, probe_bin, tmp_path):
    fake_daemon(cores=256, max_oversubscribe=4)
    cmap = core_cpu_map(jx.status())
    jobs = plan_jobs(1000, [1, 1, 2, 4, 8, 16, 64, 300], seed=4, cpt=(1, 1, 2))
    # 300 ranks is wider than the set: runs alone (ranks spread, one core each)
    results = run_storm(jx, probe_bin, tmp_path, jobs, clients=32)
    bad_rc = [(j["tag"], j["expect"], cp.returncode, cp.stderr.strip()[:200])
              for j, cp in zip(jobs, results) if cp.returncode != j["expect"]]
    assert not bad_rc, bad_rc[:5]
    recs = read_records(tmp_path)
    traces = []
    for j in jobs:
        ranks = {r: rec for r, rec in recs.get(j["tag"], {}).items() if "start_ns" in rec}
        if not ranks:
            continue
        for rec in ranks.values():
            check_rank_affinity(rec, cmap, j["tag"], ranks)
        traces.append(JobTrace(j["tag"], ranks))
    assert not find_overlaps(traces)
    st = jx.status()
    assert st["running"] == [] and st["queued"] == []
