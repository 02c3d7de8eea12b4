"""Basics: help/version, a first launch starting the daemon, the rank
environment and binding, stdio, status and stop."""

import json
import os
import re
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from conftest import (allowed_cpus, check_rank_affinity, core_cpu_map, parse_cpu_list, pid_alive,
                      procs_with_marker, read_records, wait_until)


def test_help_and_version(jx):
    h = jx.run(["--help"], timeout=10)
    assert h.returncode == 0, h.stderr
    assert "-n" in h.stdout and len(h.stdout.splitlines()) > 5, h.stdout
    v = jx.run(["--version"], timeout=10)
    assert v.returncode == 0, v.stderr
    assert re.search(r"\d+\.\d+", v.stdout + v.stderr), (v.stdout, v.stderr)
    # neither starts a daemon
    assert jx.sockets() == []
    assert procs_with_marker(jx.marker) == []


def test_first_launch_starts_daemon(jx, probe_bin, tmp_path):
    assert jx.status() == {"daemon": None} or jx.status().get("daemon") is None
    cp = jx.run(["-n", 2, probe_bin, f"out={tmp_path}", "tag=a"])
    assert cp.returncode == 0, cp.stderr
    recs = read_records(tmp_path)["a"]
    assert sorted(recs) == [0, 1]
    assert {r["size"] for r in recs.values()} == {"2"}
    assert len({r["job"] for r in recs.values()}) == 1 and recs[0]["job"] != ""
    st = jx.status()
    assert st["daemon"] and isinstance(st["daemon"]["pid"], int)
    assert pid_alive(st["daemon"]["pid"])
    assert len(jx.sockets()) == 1, jx.sockets()
    # a second launch reuses the same daemon
    cp = jx.run(["-n", 1, "true"])
    assert cp.returncode == 0, cp.stderr
    assert jx.status()["daemon"]["pid"] == st["daemon"]["pid"]


def test_rank_environment_and_binding(jx, probe_bin, tmp_path):
    ncores = None
    cp = jx.run(["-n", 2, probe_bin, f"out={tmp_path}", "tag=e", "env=JIFFY_JOB_ID,JIFFY_RANK,JIFFY_SIZE"])
    assert cp.returncode == 0, cp.stderr
    st = jx.status()
    cmap = core_cpu_map(st)
    ncores = len(cmap)
    recs = read_records(tmp_path)["e"]
    jobs = {r["job"] for r in recs.values()}
    assert len(jobs) == 1
    assert re.fullmatch(r"\d+", jobs.pop()), "JIFFY_JOB_ID should be a number"
    for r, rec in recs.items():
        assert rec["rank"] == str(r) and rec["size"] == "2"
        check_rank_affinity(rec, cmap, "-n 2")
    if ncores >= 2:
        c0 = parse_cpu_list(recs[0]["cores"])
        c1 = parse_cpu_list(recs[1]["cores"])
        assert len(c0) == 1 and len(c1) == 1 and not (c0 & c1), (c0, c1)


def test_bind_to_none_keeps_caller_affinity(jx, probe_bin, tmp_path):
    for i, spelling in enumerate(["-bind-to", "--bind-to"]):
        cp = jx.run([spelling, "none", "-n", 1, probe_bin, f"out={tmp_path}", f"tag=b{i}"])
        assert cp.returncode == 0, cp.stderr
        rec = read_records(tmp_path)[f"b{i}"][0]
        assert parse_cpu_list(rec["cpus"]) == set(allowed_cpus())
        assert rec["cores"], "JIFFY_CORES is set even without binding"


def test_bind_to_core_and_hwthread(jx, probe_bin, tmp_path):
    cp = jx.run(["-bind-to", "core", "-n", 1, probe_bin, f"out={tmp_path}", "tag=c"])
    assert cp.returncode == 0, cp.stderr
    cmap = core_cpu_map(jx.status())
    check_rank_affinity(read_records(tmp_path)["c"][0], cmap, "-bind-to core")
    cp = jx.run(["-bind-to", "hwthread", "-n", 1, probe_bin, f"out={tmp_path}", "tag=h"])
    assert cp.returncode == 0, cp.stderr
    rec = read_records(tmp_path)["h"][0]
    cores = parse_cpu_list(rec["cores"])
    got = parse_cpu_list(rec["cpus"])
    assert got and got <= set().union(*(cmap[c] for c in cores)), (rec["cpus"], rec["cores"])


def test_cpus_per_task(jx, probe_bin, tmp_path):
    jx.run(["-n", 1, "true"])
    cmap = core_cpu_map(jx.status())
    if len(cmap) < 2:
        pytest.skip("needs 2 cores")
    for i, spelling in enumerate(["-c", "--cpus-per-task", "--cpus-per-proc"]):
        cp = jx.run(["-n", 1, spelling, 2, probe_bin, f"out={tmp_path}", f"tag=c{i}"])
        assert cp.returncode == 0, f"{spelling}: {cp.stderr}"
        rec = read_records(tmp_path)[f"c{i}"][0]
        assert len(parse_cpu_list(rec["cores"])) == 2, rec["cores"]
        check_rank_affinity(rec, cmap, spelling)


def test_program_arguments_passed_verbatim(jx):
    cp = jx.run(["-n", 1, "printf", "%s|", "-n", "-np", "3", "-l", "--tag-output", "-genv", "a b", ""])
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == "-n|-np|3|-l|--tag-output|-genv|a b||"


def test_long_arguments(jx):
    long = "y" * 20000
    cp = jx.run(["-n", 1, "printf", "%s", long])
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == long
    many = [f"arg{i}" for i in range(5000)]
    cp = jx.run(["-n", 1, "printf", "%s,"] + many)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == "".join(a + "," for a in many)


def test_non_utf8_arguments(jx):
    arg = b"caf\xe9-\xff"
    argv = [jx.bin.encode(), b"-n", b"1", b"printf", b"%s", arg]
    cp = subprocess.run(argv, env=jx.env, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == arg


def test_np_spelling_and_path_lookup(jx, tmp_path):
    cp = jx.run(["-np", 2, "sh", "-c", 'echo "r$JIFFY_RANK"'])
    assert cp.returncode == 0, cp.stderr
    assert sorted(cp.stdout.split()) == ["r0", "r1"]
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho hello from $JIFFY_RANK\n")
    script.chmod(0o755)
    cp = jx.run(["-n", 1, "./hello.sh"], cwd=tmp_path)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == "hello from 0\n"


def test_accepted_compat_options(jx):
    cp = jx.run(["--oversubscribe", "--allow-run-as-root", "-n", 1, "true"])
    assert cp.returncode == 0, cp.stderr


def test_stdout_is_inherited_not_copied(jx, tmp_path):
    out = tmp_path / "out.txt"
    with open(out, "w") as f:
        p = jx.popen(["-n", 2, "sh", "-c", "readlink /proc/$$/fd/1"], stdout=f, stderr=subprocess.PIPE)
        _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    lines = out.read_text().split()
    assert lines == [str(out), str(out)], f"ranks' stdout should be the caller's file, got {lines}"


def test_output_streams_while_running(jx):
    p = jx.popen(["-n", 1, "sh", "-c", "echo first; sleep 30; echo never"])
    t0 = time.monotonic()
    line = p.stdout.readline()
    assert line == "first\n"
    assert time.monotonic() - t0 < 10, "output should appear as it is written"
    p.terminate()
    p.communicate(timeout=15)


def test_stdin_goes_to_rank0_only(jx):
    data = "hello\nworld\n" + "x" * 200000 + "\n"
    cp = jx.run(["-n", 3, "sh", "-c",
                 'if [ "$JIFFY_RANK" = 0 ]; then cat; else readlink /proc/$$/fd/0 >&2; cat; fi'],
                input=data)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == data
    assert cp.stderr.split().count("/dev/null") == 2, cp.stderr


def test_stdin_at_eof_many_launches(jx):
    # hydra dies of SIGPIPE now and then when its stdin is at EOF
    for _ in range(30):
        cp = jx.run(["-n", 2, "true"], stdin=subprocess.DEVNULL)
        assert cp.returncode == 0, cp.stderr


# ---------------------------------------------------------------- status / stop


def test_status_without_daemon_starts_nothing(jx):
    t = jx.run(["status"])
    assert t.returncode == 0, t.stderr
    assert "no daemon running" in t.stdout + t.stderr
    j = jx.run(["status", "--json"])
    assert j.returncode == 0, j.stderr
    assert json.loads(j.stdout) == {"daemon": None}
    s = jx.run(["stop"])
    assert jx.sockets() == []
    assert procs_with_marker(jx.marker) == []


def test_status_shows_jobs_and_queue(jx, fake_daemon, probe_bin):
    fake_daemon(cores=4, gpus=2)
    st = jx.status()
    d = st["daemon"]
    assert isinstance(d["pid"], int) and isinstance(d["uptime_s"], (int, float))
    assert re.fullmatch(r"[0-9a-f]{16}", d["key"]), d["key"]
    assert [c["id"] for c in st["resources"]["cores"]] == [0, 1, 2, 3]
    assert len(st["resources"]["gpus"]) == 2
    assert st["running"] == [] and st["queued"] == []
    for c in st["resources"]["cores"]:
        assert c["slots"] == 1 and c["holders"] == [None]
    a = jx.popen(["-n", 3, "-G", 1, probe_bin, "sleep=60000"])
    ra = jx.wait_running(a.pid)
    assert ra["ntasks"] == 3 and len(ra["cores"]) == 3 and len(ra["gpus"]) == 1
    assert "probe" in (ra["command"] if isinstance(ra["command"], str) else " ".join(ra["command"]))
    b = jx.popen(["-n", 2, probe_bin, "sleep=60000"])
    qb = jx.wait_queued(b.pid)
    assert qb["ntasks"] == 2 and qb["position"] in (0, 1)
    st = jx.status()
    held = [c["id"] for c in st["resources"]["cores"] if c["holders"] != [None]]
    assert sorted(held) == sorted(ra["cores"])
    for c in st["resources"]["cores"]:
        if c["id"] in ra["cores"]:
            assert c["holders"] == [ra["job"]]
    gh = [g for g in st["resources"]["gpus"] if g["holder"] is not None]
    assert len(gh) == 1 and gh[0]["holder"] == ra["job"]
    text = jx.run(["status"])
    assert text.returncode == 0 and str(ra["job"]) in text.stdout, text.stdout
    a.terminate()
    a.communicate(timeout=15)
    jx.wait_running(b.pid)
    b.terminate()
    b.communicate(timeout=15)
    wait_until(lambda: jx.status()["running"] == [], 5, what="running list to empty")


def test_stop_stops_autostarted_daemon(jx):
    assert jx.run(["-n", 1, "true"]).returncode == 0
    pid = jx.daemon_pid()
    assert pid and pid_alive(pid)
    cp = jx.stop()
    assert cp.returncode == 0, cp.stderr
    wait_until(lambda: not pid_alive(pid), 5, what="daemon to exit after jiffy stop")
    assert jx.status() == {"daemon": None}


def test_idle_timeout(jx):
    p = jx.start_daemon(cores=2, idle_timeout=1)
    assert jx.run(["-n", 1, "true"]).returncode == 0
    p.wait(timeout=10)  # exits about 1 s after going idle
    assert jx.status() == {"daemon": None}


@pytest.mark.slow
def test_works_as_cmake_mpiexec_executable(jx, probe_bin, tmp_path):
    import shutil
    if not shutil.which("cmake") or not shutil.which("ctest"):
        pytest.skip("cmake/ctest missing")
    src = tmp_path / "src"
    src.mkdir()
    out = tmp_path / "rec"
    out.mkdir()
    (src / "CMakeLists.txt").write_text(textwrap.dedent(f"""
        cmake_minimum_required(VERSION 3.20)
        project(t NONE)
        enable_testing()
        set(MPIEXEC_EXECUTABLE "{jx.bin}" CACHE FILEPATH "")
        set(MPIEXEC_NUMPROC_FLAG -n)
        set(MPIEXEC_PREFLAGS "")
        set(MPIEXEC_POSTFLAGS "")
        foreach(i RANGE 1 6)
          add_test(NAME t${{i}} COMMAND ${{MPIEXEC_EXECUTABLE}} ${{MPIEXEC_NUMPROC_FLAG}} 2
                   ${{MPIEXEC_PREFLAGS}} {probe_bin} out={out} tag=t${{i}} sleep=150 ${{MPIEXEC_POSTFLAGS}})
        endforeach()
        add_test(NAME fails COMMAND ${{MPIEXEC_EXECUTABLE}} ${{MPIEXEC_NUMPROC_FLAG}} 1 {probe_bin} exit=3)
        set_tests_properties(fails PROPERTIES WILL_FAIL TRUE)
        """))
    bld = tmp_path / "bld"
    r = subprocess.run(["cmake", "-S", src, "-B", bld], env=jx.env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["ctest", "-j8", "--output-on-failure"], cwd=bld, env=jx.env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    from conftest import JobTrace, find_overlaps
    recs = read_records(out)
    traces = [JobTrace(t, rk) for t, rk in recs.items()]
    assert len(traces) == 6
    assert find_overlaps(traces) == []


def test_closed_std_fds(jx):
    """Launched with stdout/stderr closed (as some daemons and CI wrappers do)."""
    cp = subprocess.run(["sh", "-c", 'exec 1>&- 2>&- 0<&-; "$0" -n 2 sh -c "echo hi; echo err >&2; exit 0"',
                         jx.bin], env=jx.env, capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0, cp.stderr
