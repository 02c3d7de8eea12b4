"""CTest's resource allocation, for real: a CMake project whose tests run
through jiffy (as MPIEXEC_EXECUTABLE would), with RESOURCE_GROUPS asking for
GPUs, run by `ctest -j --resource-spec-file` with the spec file that `jiffy
resource-spec` printed. Each rank must see exactly the GPUs CTest chose for
it (CUDA_VISIBLE_DEVICES); the daemon's GPUs are fake (--gpus 4)."""

import json
import shutil
import subprocess

import pytest

CMAKE = shutil.which("cmake")
CTEST = shutil.which("ctest")
pytestmark = pytest.mark.skipif(not (CMAKE and CTEST), reason="cmake and ctest are needed")

# Each rank writes what CTest gave the test and what jiffy gave the rank.
RANK_SH = """#!/bin/sh
groups=""
i=0
while [ "$i" -lt "${CTEST_RESOURCE_GROUP_COUNT:-0}" ]; do
  eval "g=\\$CTEST_RESOURCE_GROUP_${i}_GPUS"
  groups="$groups${groups:+ }$g"
  i=$((i + 1))
done
echo "$JIFFY_RANK|$CUDA_VISIBLE_DEVICES|$groups" > "$OUT/$1.$JIFFY_RANK"
sleep 0.3
"""

PROJECT = """cmake_minimum_required(VERSION 3.16)
project(gpu_tests NONE)
enable_testing()
set(J {jiffy})
set(R ${{CMAKE_CURRENT_SOURCE_DIR}}/rank.sh)
foreach(i RANGE 1 4)
  # two ranks, one GPU each
  add_test(NAME per_rank_${{i}} COMMAND ${{J}} -n 2 ${{R}} per_rank_${{i}})
  set_property(TEST per_rank_${{i}} PROPERTY RESOURCE_GROUPS "2,gpus:1")
  # two ranks sharing two GPUs
  add_test(NAME shared_${{i}} COMMAND ${{J}} -n 2 ${{R}} shared_${{i}})
  set_property(TEST shared_${{i}} PROPERTY RESOURCE_GROUPS "gpus:1,gpus:1" "gpus:1")
  # one rank, -g 1 given explicitly
  add_test(NAME one_${{i}} COMMAND ${{J}} -n 1 -g 1 ${{R}} one_${{i}})
  set_property(TEST one_${{i}} PROPERTY RESOURCE_GROUPS "gpus:1")
endforeach()
# the options and CTest disagree: a clear error
add_test(NAME mismatch COMMAND ${{J}} -n 2 -g 1 ${{R}} mismatch)
set_property(TEST mismatch PROPERTY RESOURCE_GROUPS "gpus:1")
set_property(TEST mismatch PROPERTY WILL_FAIL TRUE)
"""


def test_resource_spec_lists_the_daemons_gpus(jx):
    jx.start_daemon(cores=4, gpus=3)
    cp = jx.run(["resource-spec"])
    assert cp.returncode == 0, cp.stderr
    spec = json.loads(cp.stdout)
    assert spec["version"] == {"major": 1, "minor": 0}
    assert spec["local"] == [{"gpus": [{"id": str(i), "slots": 1} for i in range(3)]}]


def test_resource_spec_starts_a_daemon(jx):
    cp = jx.run(["resource-spec"])
    assert cp.returncode == 0, cp.stderr
    assert "gpus" in json.loads(cp.stdout)["local"][0]
    assert jx.status().get("daemon")


def test_ctest_chosen_gpus_are_the_ones_ranks_get(jx, tmp_path):
    jx.start_daemon(cores=8, gpus=4)
    src, build, out = tmp_path / "src", tmp_path / "build", tmp_path / "out"
    for d in (src, build, out):
        d.mkdir()
    (src / "rank.sh").write_text(RANK_SH)
    (src / "rank.sh").chmod(0o755)
    (src / "CMakeLists.txt").write_text(PROJECT.format(jiffy=jx.bin))
    spec = tmp_path / "spec.json"
    cp = jx.run(["resource-spec"])
    assert cp.returncode == 0, cp.stderr
    spec.write_text(cp.stdout)
    env = {k: v for k, v in jx.env.items()}
    env["OUT"] = str(out)
    cp = subprocess.run([CMAKE, "-S", str(src), "-B", str(build)], env=env, capture_output=True,
                        text=True, timeout=120)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    cp = subprocess.run([CTEST, "--test-dir", str(build), "-j", "6", "--resource-spec-file", str(spec),
                         "--output-on-failure", "--timeout", "60"],
                        env=env, capture_output=True, text=True, timeout=300)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "13 tests passed" in cp.stdout or "100% tests passed" in cp.stdout, cp.stdout

    def rank_lines(name, n):
        lines = [(out / f"{name}.{r}").read_text().strip().split("|") for r in range(n)]
        return [(int(rank), cuda, groups.split(" ")) for rank, cuda, groups in lines]

    def ids(groups):  # "id:0,slots:1;id:1,slots:1" per group
        return [e.split(",")[0].removeprefix("id:") for g in groups for e in g.split(";")]

    for i in range(1, 5):
        per_rank = rank_lines(f"per_rank_{i}", 2)
        chosen = ids(per_rank[0][2])
        assert len(chosen) == 2 and len(set(chosen)) == 2, per_rank
        for rank, cuda, _ in per_rank:
            assert cuda == chosen[rank], (i, per_rank)  # rank r: group r's GPU
        shared = rank_lines(f"shared_{i}", 2)
        chosen = ids(shared[0][2])
        assert len(set(chosen)) == 3, shared
        for _, cuda, _ in shared:
            assert sorted(cuda.split(",")) == sorted(chosen), (i, shared)
        one = rank_lines(f"one_{i}", 1)
        assert one[0][1] == ids(one[0][2])[0], one
    # the mismatched test failed before running any rank, saying why
    assert not list(out.glob("mismatch.*"))
    log = (build / "Testing" / "Temporary" / "LastTest.log").read_text()
    assert "CTest gave this test 1 GPU(s)" in log, log[-3000:]


def test_only_gpu_groups_leave_the_fast_path(jx):
    """The front runs a launch whose CTest groups hold no GPUs itself; one
    with GPUs goes to jiffy-launch, which asks for exactly them."""
    jx.start_daemon(cores=2, gpus=1)
    parent = ["-n", 1, "sh", "-c", 'basename "$(readlink /proc/$PPID/exe)"']
    chips = {"CTEST_RESOURCE_GROUP_COUNT": "1", "CTEST_RESOURCE_GROUP_0": "crypto_chips",
             "CTEST_RESOURCE_GROUP_0_CRYPTO_CHIPS": "id:card0,slots:1"}
    cp = jx.run(parent, env=chips)
    assert (cp.returncode, cp.stdout.strip()) == (0, "jiffy"), cp.stderr
    gpus = {"CTEST_RESOURCE_GROUP_COUNT": "1", "CTEST_RESOURCE_GROUP_0": "crypto_chips,gpus",
            "CTEST_RESOURCE_GROUP_0_CRYPTO_CHIPS": "id:card0,slots:1",
            "CTEST_RESOURCE_GROUP_0_GPUS": "id:0,slots:1"}
    cp = jx.run(parent, env=gpus)
    assert (cp.returncode, cp.stdout.strip()) == (0, "jiffy-launch"), cp.stderr
