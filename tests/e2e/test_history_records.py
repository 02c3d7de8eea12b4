"""The history (docs/history.md): every launch leaves exactly one record,
written by the launcher that ended it (the front, or jiffy-launch after a
hand-over or from the start), whichever way it ended. Read through
Jiffy.history() only (the journal for now, `jiffy history --json` later)."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BUILD, parse_cpu_list, run_concurrently, wait_until

MPI = BUILD / "mpi"
# A rank that says who it is: tag, job id, cores, rank.
SAY = 'echo "$JIFFY_JOB_TAG $JIFFY_JOB_ID $JIFFY_RANK $JIFFY_CORES"'


def said(stdout):
    """{rank: (tag, job, cores)} from SAY lines."""
    out = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2].isdigit():
            out[int(parts[2])] = (parts[0], int(parts[1]), sorted(parse_cpu_list(parts[3])))
    return out


def new_records(jx, before, n=1, what="the launch's record"):
    """The records written since `before` records existed: exactly n."""
    rows = jx.wait_history(before + n, what=what)
    # No wait for more: a launcher writes its record before it exits.
    assert len(rows) == before + n, f"expected {n} new record(s), got {rows[before:]}"
    return rows[before:]


def one_record(jx, before, what="the launch's record"):
    return new_records(jx, before, 1, what)[0]


def check_times(rec, ran=True):
    assert rec["submit"] > 0 and rec["end"] >= rec["submit"], rec
    if ran:
        assert rec["start"] is not None and rec["submit"] <= rec["start"] <= rec["end"], rec
    else:
        assert rec["start"] is None, rec
    now = time.time()
    assert now - 120 < rec["submit"] <= now, rec


def check_ranks(rec, stdout, ntasks):
    """The record's tag, job id and cores are what the ranks saw."""
    ranks = said(stdout)
    assert sorted(ranks) == list(range(ntasks)), stdout
    tags = {t for t, _, _ in ranks.values()}
    assert tags == {rec["tag"]}, (tags, rec)
    assert {j for _, j, _ in ranks.values()} == {rec["job"]}, rec
    assert rec["cores"] == [ranks[r][2] for r in range(ntasks)], (rec["cores"], ranks)
    assert rec["ntasks"] == ntasks and rec["groups"] == 1


def warm(jx):
    """Starts the daemon (through jiffy-launch: its own record); returns how
    many records exist."""
    cp = jx.run(["-n", 1, "true"])
    assert cp.returncode == 0, cp.stderr
    # Its slot back in the lane (the daemon reads "finished" on its own time).
    wait_until(lambda: not jx.status()["running"], 10, 0.02, "the first job released")
    return len(jx.wait_history(1))


# --------------------------------------------------------------------------
# the front's own launches


def test_front_lane_launch(jx):
    before = warm(jx)
    p = jx.popen(["-n", 2, "sh", "-c", SAY])
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    rec = one_record(jx, before)
    check_ranks(rec, out, 2)
    check_times(rec)
    assert rec["outcome"] == "ok" and rec["exit_code"] == 0 and rec["signal"] == 0
    assert rec["lane"] and not rec["handed_over"] and not rec["oversubscribed"]
    assert rec["pid"] == p.pid
    assert rec["command"] == "sh -c " + SAY
    assert rec["cwd"] == os.getcwd()
    assert rec["reason"] == "" and not rec["timed_out"]


def test_front_daemon_granted_launch(jx):
    before = warm(jx)
    p = jx.popen(["-n", 2, "sh", "-c", SAY], env={"JIFFY_LANE": "0"})
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    rec = one_record(jx, before)
    check_ranks(rec, out, 2)
    check_times(rec)
    assert rec["outcome"] == "ok" and not rec["lane"] and not rec["handed_over"]
    assert rec["job"] > 0 and rec["pid"] == p.pid


def test_jiffy_launch_launch(jx):
    """An option the front leaves alone: jiffy-launch from the start."""
    before = warm(jx)
    p = jx.popen(["--bind-to", "core", "-n", 2, "sh", "-c", SAY])
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    rec = one_record(jx, before)
    check_ranks(rec, out, 2)
    check_times(rec)
    assert rec["outcome"] == "ok" and not rec["handed_over"] and rec["pid"] == p.pid


# --------------------------------------------------------------------------
# hand-overs: jiffy-launch finishes, with the front's times and tag


@pytest.mark.parametrize("lane", ["1", "0"])
def test_handed_over_rank_failure(jx, lane):
    before = warm(jx)
    cp = jx.run(["-n", 2, "sh", "-c", SAY + '; if [ "$JIFFY_RANK" = 1 ]; then sleep 0.3; exit 3; fi; exec sleep 30'],
                env={"JIFFY_KILL_GRACE": "0.2", "JIFFY_LANE": lane})
    assert cp.returncode == 3, cp.stderr
    rec = one_record(jx, before)
    check_ranks(rec, cp.stdout, 2)
    check_times(rec)
    assert rec["outcome"] == "failed" and rec["exit_code"] == 3 and rec["signal"] == 0
    assert rec["handed_over"] and rec["lane"] == (lane == "1")
    # The front's start time, not the hand-over's (0.3 s later).
    assert rec["run_s"] >= 0.25, rec


def test_mpich_program_speaks_pmi1(jx):
    prog = MPI / "hello.mpich"
    if not prog.exists():
        pytest.skip("MPICH test programs not built")
    before = warm(jx)
    p = jx.popen(["-n", 2, prog])
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    rec = one_record(jx, before)
    check_times(rec)
    assert rec["outcome"] == "ok" and rec["handed_over"] and rec["pid"] == p.pid
    assert rec["ntasks"] == 2 and len(rec["cores"]) == 2
    assert rec["command"] == str(prog)


def test_open_mpi_program(jx):
    prog = MPI / "hello.openmpi"
    if not prog.exists():
        pytest.skip("Open MPI test programs not built")
    if not (BUILD / "jiffy-pmix").exists():
        pytest.skip("jiffy-pmix not built")
    before = warm(jx)
    p = jx.popen(["-n", 2, prog])
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    rec = one_record(jx, before)
    check_times(rec)
    assert rec["outcome"] == "ok" and rec["pid"] == p.pid and rec["ntasks"] == 2
    assert len(rec["cores"]) == 2 and rec["job"] > 0


def test_open_mpi_behind_a_wrapper(jx):
    """The PMIx rendezvous: the front hands over, jiffy-launch starts the
    jiffy-pmix helper."""
    prog = MPI / "hello.openmpi"
    if not prog.exists() or not (BUILD / "jiffy-pmix").exists():
        pytest.skip("Open MPI test programs or jiffy-pmix not built")
    before = warm(jx)
    cp = jx.run(["-n", 2, "sh", "-c", f'exec {prog}'], timeout=60)
    assert cp.returncode == 0, cp.stderr
    rec = one_record(jx, before)
    check_times(rec)
    assert rec["outcome"] == "ok" and rec["handed_over"]


# --------------------------------------------------------------------------
# how launches end


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL])
@pytest.mark.parametrize("via", ["front", "jiffy-launch"])
def test_signalled_rank(jx, sig, via):
    before = warm(jx)
    opts = ["--bind-to", "core"] if via == "jiffy-launch" else []
    cp = jx.run(opts + ["-n", 1, "sh", "-c", f"kill -{int(sig)} $$"])
    assert cp.returncode == 128 + sig, cp.stderr
    rec = one_record(jx, before)
    check_times(rec)
    assert rec["outcome"] == "signaled" and rec["signal"] == sig and rec["exit_code"] == 128 + sig


@pytest.mark.parametrize("how", ["-timeout", "MPIEXEC_TIMEOUT"])
def test_timeout(jx, how):
    before = warm(jx)
    args, env = (["-timeout", 1], None) if how == "-timeout" else ([], {"MPIEXEC_TIMEOUT": "1"})
    cp = jx.run(args + ["-n", 2, "sleep", 30], env=env, timeout=30)
    assert cp.returncode == 255, cp.stderr
    rec = one_record(jx, before)
    check_times(rec)
    assert rec["outcome"] == "timeout" and rec["timed_out"] and rec["exit_code"] == 255
    assert rec["run_s"] >= 0.9


@pytest.mark.parametrize("via", ["front", "jiffy-launch"])
def test_interrupted_launcher(jx, tmp_path, via):
    before = warm(jx)
    flag = tmp_path / "up"
    opts = ["--bind-to", "core"] if via == "jiffy-launch" else []
    p = jx.popen(opts + ["-n", 2, "sh", "-c", f"touch {flag}.$JIFFY_RANK; exec sleep 30"])
    wait_until(lambda: all(Path(f"{flag}.{r}").exists() for r in range(2)), 10, what="ranks up")
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=20)
    assert p.returncode == 130
    rec = one_record(jx, before)
    check_times(rec)
    assert rec["outcome"] == "signaled" and rec["signal"] == signal.SIGINT and rec["exit_code"] == 130
    assert rec["handed_over"] == (via == "front")


@pytest.mark.parametrize("via", ["front", "jiffy-launch"])
def test_interrupted_while_queued(jx, tmp_path, via):
    jx.start_daemon(cores=1)
    flag = tmp_path / "up"
    first = jx.popen(["-n", 1, "sh", "-c", f"touch {flag}; exec sleep 30"])
    wait_until(flag.exists, 10, what="first job up")
    before = len(jx.history())
    opts = ["--bind-to", "core"] if via == "jiffy-launch" else []
    second = jx.popen(opts + ["-n", 1, "true"])
    jx.wait_queued(second.pid)
    second.send_signal(signal.SIGINT)
    second.communicate(timeout=10)
    assert second.returncode == 130
    rec = one_record(jx, before)
    check_times(rec, ran=False)
    assert rec["outcome"] == "signaled" and rec["signal"] == signal.SIGINT and rec["pid"] == second.pid
    first.kill()
    first.communicate(timeout=10)


def test_missing_program_is_refused(jx):
    before = len(jx.history())
    cp = jx.run(["-n", 2, "no-such-program-here"])
    assert cp.returncode == 127
    rec = one_record(jx, before)
    check_times(rec, ran=False)
    assert rec["outcome"] == "refused" and rec["exit_code"] == 127
    assert "no-such-program-here" in rec["reason"] and "\n" not in rec["reason"]
    assert rec["cores"] == [] and len(rec["tag"]) == 32 and rec["job"] == 0


def test_unexecutable_program_is_refused(jx, tmp_path):
    before = warm(jx)
    prog = tmp_path / "prog"
    prog.write_text("not a program\n")
    prog.chmod(0o755)
    os.truncate(prog, 0)  # empty: exec fails with ENOEXEC
    cp = jx.run(["-n", 1, prog])
    assert cp.returncode == 127, cp.stderr
    rec = one_record(jx, before)
    assert rec["outcome"] == "refused" and rec["exit_code"] == 127 and rec["reason"], rec


def test_larger_than_the_machine_is_refused(jx, fake_daemon):
    fake_daemon(cores=2, max_oversubscribe=8)
    before = len(jx.history())
    cp = jx.run(["-n", 17, "true"], timeout=10)
    assert cp.returncode == 1
    rec = one_record(jx, before)
    check_times(rec, ran=False)
    assert rec["outcome"] == "refused" and rec["exit_code"] == 1
    assert rec["reason"] and rec["reason"] in cp.stderr, (rec["reason"], cp.stderr)


def test_oversubscribed_job(jx, fake_daemon):
    fake_daemon(cores=2)
    before = len(jx.history())
    cp = jx.run(["-n", 4, "sh", "-c", SAY])
    assert cp.returncode == 0, cp.stderr
    rec = one_record(jx, before)
    check_ranks(rec, cp.stdout, 4)
    assert rec["oversubscribed"]


# --------------------------------------------------------------------------
# what a record says


@pytest.mark.parametrize("via", ["front", "jiffy-launch"])
def test_history_off_writes_nothing(jx, via):
    before = warm(jx)
    opts = ["--bind-to", "core"] if via == "jiffy-launch" else []
    for args in (["-n", 1, "true"], ["-n", 1, "sh", "-c", "exit 2"], ["-n", 1, "no-such-program-here"]):
        jx.run(opts + args, env={"JIFFY_HISTORY": "0"})
    cp = jx.run(["-n", 1, "true"], env={"JIFFY_LABEL": "marker"})
    assert cp.returncode == 0
    rec = one_record(jx, before)
    assert rec["label"] == "marker"


@pytest.mark.parametrize("via", ["front", "jiffy-launch", "refused"])
def test_label(jx, tmp_path, via):
    before = warm(jx)
    opts = ["--bind-to", "core"] if via == "jiffy-launch" else []
    prog = ["no-such-program-here"] if via == "refused" else ["true"]
    run_dir = tmp_path / "runex1_2"
    run_dir.mkdir()
    jx.run(opts + ["-n", 1] + prog, cwd=run_dir)
    jx.run(opts + ["-n", 1] + prog, cwd=run_dir, env={"JIFFY_LABEL": "my label"})
    jx.run(opts + ["-n", 1] + prog, cwd=tmp_path)
    jx.run(opts + ["-n", 1] + prog, cwd=tmp_path, env={"JIFFY_LABEL": ""})
    recs = new_records(jx, before, 4)
    assert [r["label"] for r in recs] == ["runex1_2", "my label", "", ""]
    assert [r["cwd"] for r in recs] == [str(run_dir), str(run_dir), str(tmp_path), str(tmp_path)]


@pytest.mark.parametrize("name", ['we"ird\\dir', "caf\u00e9 \u00e0 la", "tab\there"])
@pytest.mark.parametrize("lane", ["1", "0"])
def test_unusual_working_directory(jx, tmp_path, name, lane):
    """cwd and label travel in submit/lane messages as JSON strings: the
    daemon must accept them, and the record keeps them byte for byte."""
    before = warm(jx)
    d = tmp_path / ("run" + name)
    d.mkdir()
    cp = jx.run(["-n", 1, "sh", "-c", "sleep 0.05"], cwd=d, env={"JIFFY_LANE": lane})
    assert cp.returncode == 0, cp.stderr
    rec = one_record(jx, before)
    assert rec["cwd"] == str(d) and rec["label"] == "run" + name and rec["outcome"] == "ok"
    assert cp.stderr == ""  # no error from the daemon about the message
    assert jx.status()["daemon"]


@pytest.mark.parametrize("via", ["front", "jiffy-launch"])
def test_busy_rank_uses_cpu(jx, via):
    before = warm(jx)
    opts = ["--bind-to", "core"] if via == "jiffy-launch" else []
    loop = "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"
    cp = jx.run(opts + ["-n", 1, "sh", "-c", loop], timeout=60)
    assert cp.returncode == 0, cp.stderr
    rec = one_record(jx, before)
    assert rec["user_s"] > 0.01, rec
    assert rec["user_s"] + rec["sys_s"] <= rec["run_s"] * 1.5 + 0.05, rec
    assert rec["max_rss_kb"] > 0


def test_many_launches_at_once(jx, tmp_path):
    """60 launches at once, of every kind: one record each, distinct tags."""
    before = warm(jx)
    kinds = [
        (["-n", 1, "true"], {}, 0),
        (["-n", 2, "true"], {"JIFFY_LANE": "0"}, 0),
        (["--bind-to", "core", "-n", 1, "true"], {}, 0),
        (["-n", 1, "sh", "-c", "exit 4"], {}, 4),
        (["-n", 1, "no-such-program-here"], {}, 127),
        (["-n", 2, "sh", "-c", 'test "$JIFFY_RANK" = 0 || exit 5'], {}, 5),
    ]
    jobs = [kinds[i % len(kinds)] for i in range(60)]

    def launch(job):
        args, env, code = job
        p = jx.popen(args, env=dict(env, JIFFY_KILL_GRACE="0.2"))
        p.communicate(timeout=120)
        assert p.returncode == code, (args, p.returncode)
        return p.pid

    pids = run_concurrently(12, jobs, launch)
    recs = new_records(jx, before, 60, "60 records")
    assert len({r["tag"] for r in recs}) == 60
    assert sorted(r["pid"] for r in recs) == sorted(pids)
    by_pid = {r["pid"]: r for r in recs}
    for pid, (args, _, code) in zip(pids, jobs):
        assert by_pid[pid]["exit_code"] == code, (args, by_pid[pid])


def test_queued_launch_outlives_its_daemon_with_its_submit_time(jx, tmp_path):
    """The front waits in the queue, the daemon dies: jiffy-launch asks the
    next one for the old place (`ticket`) and the record keeps the front's
    submit time."""
    d = jx.start_daemon(cores=1)
    flag = tmp_path / "up"
    first = jx.popen(["-n", 1, "sh", "-c", f"touch {flag}; sleep 1"])
    wait_until(flag.exists, 10, what="first job up")
    before = len(jx.history())
    second = jx.popen(["-n", 1, "true"])
    jx.wait_queued(second.pid)
    killed_at = time.time()
    os.kill(d.pid, signal.SIGKILL)
    second.communicate(timeout=30)
    first.communicate(timeout=30)
    assert second.returncode == 0 and first.returncode == 0
    recs = {r["pid"]: r for r in new_records(jx, before, 2)}
    rec = recs[second.pid]
    assert rec["outcome"] == "ok" and rec["submit"] < killed_at <= rec["start"], rec


def test_gpus_per_rank(jx, fake_daemon):
    fake_daemon(cores=8, gpus=4)
    before = len(jx.history())
    cp = jx.run(["-g", 1, "-n", 2, "sh", "-c", 'echo "$JIFFY_RANK $CUDA_VISIBLE_DEVICES"'])
    assert cp.returncode == 0, cp.stderr
    rec = one_record(jx, before)
    seen = dict(line.split() for line in cp.stdout.splitlines())
    assert rec["gpus"] == [seen["0"].split(","), seen["1"].split(",")], (rec["gpus"], seen)


def test_mpmd_groups(jx):
    before = warm(jx)
    cp = jx.run(["-n", 1, "true", ":", "-n", 2, "sh", "-c", "exit 0"])
    assert cp.returncode == 0, cp.stderr
    rec = one_record(jx, before)
    assert rec["ntasks"] == 3 and rec["groups"] == 2 and len(rec["cores"]) == 3
    assert rec["command"] == "true : sh -c exit 0"


@pytest.mark.parametrize("via", ["front", "jiffy-launch"])
def test_silent_daemon_is_a_refusal(jx, via):
    d = jx.start_daemon(cores=2)
    before = len(jx.history())
    opts = ["--bind-to", "core"] if via == "jiffy-launch" else []
    os.kill(d.pid, signal.SIGSTOP)
    try:
        cp = jx.run(opts + ["-n", 1, "true"], env={"JIFFY_DAEMON_TIMEOUT": "0.5", "JIFFY_LANE": "0"})
    finally:
        os.kill(d.pid, signal.SIGCONT)
    assert cp.returncode == 1, cp.stderr
    rec = one_record(jx, before)
    check_times(rec, ran=False)
    assert rec["outcome"] == "refused" and "did not answer" in rec["reason"], rec


def test_working_directory_not_utf8(jx, tmp_path):
    """A directory name that is not UTF-8: the messages carry a replacement
    character, the record the bytes."""
    before = warm(jx)
    d = os.path.join(os.fsencode(tmp_path), b"run\xff")
    os.mkdir(d)
    cp = jx.run(["-n", 1, "true"], cwd=d)
    assert cp.returncode == 0, cp.stderr
    rec = one_record(jx, before)
    assert rec["outcome"] == "ok" and rec["cwd"] == os.fsdecode(d).replace("\udcff", "\ufffd")
