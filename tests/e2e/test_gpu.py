"""GPU grants with a daemon faking 4 GPUs (named 0..3)."""

import random

import pytest

from conftest import JobTrace, find_overlaps, one_line_error, read_records, run_concurrently

GPU_VARS = "CUDA_VISIBLE_DEVICES,ROCR_VISIBLE_DEVICES,ZE_AFFINITY_MASK"


def gpu_list(rec):
    v = rec.get("env.CUDA_VISIBLE_DEVICES")
    assert v is not None, f"CUDA_VISIBLE_DEVICES unset for rank {rec['rank']}"
    assert rec.get("env.ROCR_VISIBLE_DEVICES") == v, rec
    assert rec.get("env.ZE_AFFINITY_MASK") == v, rec
    return v.split(",") if v else []


@pytest.mark.parametrize("spelling", ["-g", "--gpus-per-task"])
def test_one_gpu_per_task(jx, fake_daemon, probe_bin, tmp_path, spelling):
    fake_daemon(cores=8, gpus=4)
    cp = jx.run(["-n", 1, spelling, 1, probe_bin, f"out={tmp_path}", "tag=g", f"env={GPU_VARS}"])
    assert cp.returncode == 0, cp.stderr
    g = gpu_list(read_records(tmp_path)["g"][0])
    assert len(g) == 1 and g[0] in {"0", "1", "2", "3"}, g
    cp = jx.run(["-n", 2, spelling, 2, probe_bin, f"out={tmp_path}", "tag=h", f"env={GPU_VARS}"])
    assert cp.returncode == 0, cp.stderr
    recs = read_records(tmp_path)["h"]
    g0, g1 = gpu_list(recs[0]), gpu_list(recs[1])
    assert len(g0) == 2 and len(g1) == 2 and not set(g0) & set(g1), (g0, g1)


@pytest.mark.parametrize("spelling", ["-G", "--gpus"])
def test_gpus_per_job_shared_by_ranks(jx, fake_daemon, probe_bin, tmp_path, spelling):
    fake_daemon(cores=8, gpus=4)
    cp = jx.run(["-n", 3, spelling, 2, probe_bin, f"out={tmp_path}", "tag=j", f"env={GPU_VARS}"])
    assert cp.returncode == 0, cp.stderr
    sets = [tuple(sorted(gpu_list(r))) for r in read_records(tmp_path)["j"].values()]
    assert len(set(sets)) == 1 and len(sets[0]) == 2, sets


def test_too_many_gpus_refused(jx, fake_daemon):
    fake_daemon(cores=8, gpus=4)
    for args in (["-G", 5, "-n", 1, "true"], ["-g", 2, "-n", 3, "true"], ["-g", 5, "-n", 1, "true"]):
        cp = jx.run(args, timeout=10)
        one_line_error(cp, " ".join(map(str, args)))
        assert cp.elapsed < 3
    assert jx.status()["queued"] == []


def test_gpu_request_without_gpus_refused(jx, fake_daemon):
    fake_daemon(cores=8)
    cp = jx.run(["-g", 1, "-n", 1, "true"], timeout=10)
    one_line_error(cp, "-g 1 with no GPUs")


def test_concurrent_gpu_jobs_never_share(jx, fake_daemon, probe_bin, tmp_path):
    fake_daemon(cores=16, gpus=4)
    rnd = random.Random(7)
    jobs = []
    for i in range(48):
        kind = rnd.choice(["g1", "g2", "G1", "G3", "n2g1"])
        opts = {"g1": ["-n", 1, "-g", 1], "g2": ["-n", 1, "-g", 2], "G1": ["-n", 2, "-G", 1],
                "G3": ["-n", 1, "-G", 3], "n2g1": ["-n", 2, "-g", 1]}[kind]
        jobs.append((f"q{i}", opts, rnd.randint(0, 30)))

    def one(job):
        tag, opts, sleep = job
        return jx.run(opts + [probe_bin, f"out={tmp_path}", f"tag={tag}", f"sleep={sleep}", f"env={GPU_VARS}"],
                      timeout=120)

    results = run_concurrently(8, jobs, one)
    bad = [(j[0], cp.returncode, cp.stderr) for j, cp in zip(jobs, results) if cp.returncode != 0]
    assert not bad, bad[:3]
    recs = read_records(tmp_path)
    traces = []
    for tag, opts, _ in jobs:
        gpus = set()
        for r in recs[tag].values():
            gpus |= set(gpu_list(r))
        traces.append(JobTrace(tag, recs[tag], resources=gpus))
    overlaps = find_overlaps(traces)
    assert not overlaps, f"concurrent jobs shared GPUs: {overlaps[:3]}"
    assert not find_overlaps(traces, key=lambda t: t.cores), "concurrent jobs shared cores"
