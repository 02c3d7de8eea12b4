"""mpiexec fidelity (issue 16): output files shared by ranks, cores per
rank on a small machine, signals a caller ignored, host options, mpirun's
--tag-output bytes and the options users type. Compared with
mpiexec.hydra / mpirun on the same command where they do it right."""

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import pid_alive, wait_until

HYDRA = shutil.which("mpiexec.hydra")
MPIRUN = shutil.which("mpirun.openmpi")
LINES = 2000
# The rank from jiffy's variable, else hydra's.
EMIT = f'r=${{JIFFY_RANK:-$PMI_RANK}}; i=0; while [ $i -lt {LINES} ]; do echo "o $r $i"; ' \
       f'echo "e $r $i" >&2; i=$((i+1)); done'


def lines_of(path):
    with open(path) as f:
        return f.read().splitlines()


# ------------------------------------------------------------ output files


@pytest.mark.parametrize("how", ["out-and-err-one-file", "ranks-one-file"])
def test_output_files_naming_one_file_keep_every_line(jx, tmp_path, how):
    """-outfile-pattern and -errfile-pattern naming the same file, or one
    file for all ranks: every line of every stream and rank is kept (each
    file is emptied once per job and shared), as under hydra."""
    pattern = ["-outfile-pattern", "log.%r", "-errfile-pattern", "log.%r"] if how == "out-and-err-one-file" \
        else ["-outfile-pattern", "same.txt", "-errfile-pattern", "./same.txt"]
    (tmp_path / "same.txt").write_text("stale line from an earlier run\n")
    cp = jx.run(pattern + ["-n", 2, "sh", "-c", EMIT], cwd=tmp_path, timeout=60)
    assert cp.returncode == 0, cp.stderr
    files = ["log.0", "log.1"] if how == "out-and-err-one-file" else ["same.txt"]
    got = sorted(l for f in files for l in lines_of(tmp_path / f))
    want = sorted(f"{s} {r} {i}" for s in "oe" for r in range(2) for i in range(LINES))
    assert got == want, f"{len(got)} lines of {len(want)}"
    if HYDRA and how == "ranks-one-file":  # what hydra gets right: ranks sharing one stdout file
        hydra_dir = tmp_path / "hydra"
        hydra_dir.mkdir()
        hp = subprocess.run([HYDRA, "-outfile-pattern", "same.txt", "-n", "2", "sh", "-c", EMIT],
                            cwd=hydra_dir, capture_output=True, text=True, timeout=60)
        assert hp.returncode == 0, hp.stderr
        assert len(lines_of(hydra_dir / "same.txt")) == 2 * LINES, "hydra keeps every line"


def test_output_filename_nocopy_qualifier(jx, tmp_path):
    """mpirun's --output-filename DIR:nocopy writes into DIR (one node has
    nothing to copy), not into a directory named 'DIR:nocopy'."""
    cp = jx.run(["--output-filename", str(tmp_path / "od") + ":nocopy", "-n", 1, "echo", "hi"])
    assert cp.returncode == 0, cp.stderr
    assert lines_of(tmp_path / "od" / "1" / "rank.0" / "stdout") == ["hi"]
    assert not (tmp_path / "od:nocopy").exists()


def test_patterns_expand_host_and_proxy(jx, tmp_path):
    cp = jx.run(["-outfile-pattern", str(tmp_path / "o.%h.%p.%r"), "-n", 1, "echo", "hi"])
    assert cp.returncode == 0, cp.stderr
    assert lines_of(tmp_path / f"o.{socket.gethostname()}.0.0") == ["hi"]


# ------------------------------------------------------------ -c on a small machine


def test_cores_per_rank_kept_when_the_job_is_wider_than_the_machine(jx):
    """-n 2 -c <all cores>: the job runs alone, and each rank has the CPUs
    it asked for, shared with the other rank (not one CPU each)."""
    n = len(os.sched_getaffinity(0))
    cp = jx.run(["-v", "-n", 2, "-c", n, "sh", "-c", 'echo "$JIFFY_RANK $(nproc)"'])
    assert cp.returncode == 0, cp.stderr
    assert sorted(cp.stdout.split("\n")[:-1]) == [f"0 {n}", f"1 {n}"], (cp.stdout, cp.stderr)


# ------------------------------------------------------------ signals


def sig_ignored(pid, sig):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    return None


@pytest.mark.parametrize("fast", ["1", "0"])
def test_sigint_ignored_by_the_caller_still_ends_the_job(jx, tmp_path, fast):
    """A script's background job starts with SIGINT ignored; jiffy, like
    hydra and mpirun, still ends the job on SIGINT, and its ranks start
    with the default disposition."""
    marker = tmp_path / "pids"
    p = jx.popen(["-n", 2, "sh", "-c", f'echo $$ >> {marker}; exec sleep 60'], env={"JIFFY_FAST": fast},
                 preexec_fn=lambda: (signal.signal(signal.SIGINT, signal.SIG_IGN),
                                     signal.signal(signal.SIGQUIT, signal.SIG_IGN)))
    wait_until(lambda: marker.exists() and len(marker.read_text().split()) == 2, 10, what="ranks to start")
    ranks = [int(x) for x in marker.read_text().split()]
    wait_until(lambda: all(open(f"/proc/{r}/comm").read().strip() == "sleep" for r in ranks), 10,
               what="ranks to exec sleep")
    for r in ranks:
        assert sig_ignored(r, signal.SIGINT) is False and sig_ignored(r, signal.SIGQUIT) is False, r
    os.kill(p.pid, signal.SIGINT)
    try:
        p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("SIGINT did not end a job whose caller ignored SIGINT")
    assert p.returncode == 130, p.returncode
    wait_until(lambda: not any(pid_alive(r) for r in ranks), 10, what="ranks to go")


# ------------------------------------------------------------ hosts


@pytest.mark.parametrize("args", [["-hosts", "a,b"], ["-host", "elsewhere:2"], ["-H", "localhost,elsewhere"],
                                  ["--hostfile", "/nonexistent"], ["-f", "HOSTFILE"]])
def test_other_hosts_are_refused(jx, tmp_path, args):
    """A job meant for other machines never runs silently on this one."""
    hf = tmp_path / "hosts"
    hf.write_text("# two nodes\nnode-a:2\nnode-b slots=2\n")
    args = [str(hf) if a == "HOSTFILE" else a for a in args]
    cp = jx.run(args + ["-n", 2, "hostname"])
    assert cp.returncode != 0 and cp.stdout == "", cp.stdout
    assert cp.stderr.startswith("jiffy: ") and len(cp.stderr.splitlines()) == 1, cp.stderr
    assert "this machine" in cp.stderr or "host file" in cp.stderr, cp.stderr


def test_this_host_is_accepted(jx, tmp_path):
    me = socket.gethostname()
    hf = tmp_path / "hosts"
    hf.write_text(f"localhost slots=2\n{me}:2\n")
    for args in (["-hosts", f"localhost,{me}"], ["-H", f"{me}:4"], ["--hostfile", str(hf)], ["-f", str(hf)]):
        cp = jx.run(args + ["-n", 2, "true"])
        assert cp.returncode == 0, (args, cp.stderr)


# ------------------------------------------------------------ --tag-output


@pytest.mark.skipif(not MPIRUN, reason="mpirun.openmpi not installed")
def test_tag_output_matches_mpirun_byte_for_byte(jx):
    cmd = ["--tag-output", "-n", "2", "sh", "-c", "echo x; echo y >&2"]
    ours = jx.run(cmd)
    theirs = subprocess.run([MPIRUN, "--allow-run-as-root", "--oversubscribe"] + cmd, capture_output=True,
                            text=True, timeout=120)
    assert theirs.returncode == 0, theirs.stderr
    assert sorted(ours.stdout.splitlines()) == sorted(theirs.stdout.splitlines())
    assert sorted(ours.stderr.splitlines()) == sorted(l for l in theirs.stderr.splitlines() if l.startswith("["))


# ------------------------------------------------------------ options users type


def test_npernode_on_the_only_node(jx):
    cp = jx.run(["-N", 2, "sh", "-c", "echo $JIFFY_SIZE"])
    assert cp.returncode == 0 and cp.stdout.split() == ["2", "2"], (cp.stdout, cp.stderr)
    cp = jx.run(["-npernode", 2, "-n", 2, "true"])
    assert cp.returncode == 0, cp.stderr
    cp = jx.run(["-N", 2, "-n", 4, "true"])
    assert cp.returncode != 0 and "-N 2" in cp.stderr, cp.stderr


def test_merge_stderr_to_stdout(jx):
    cp = jx.run(["--merge-stderr-to-stdout", "-n", 2, "sh", "-c", "echo err >&2"])
    assert cp.returncode == 0 and cp.stdout.split() == ["err", "err"] and cp.stderr == "", (cp.stdout, cp.stderr)
    cp = jx.run(["--merge-stderr-to-stdout", "--tag-output", "-n", 1, "sh", "-c", "echo err >&2"])
    assert cp.stdout == "[1,0]<stdout>:err\n" and cp.stderr == "", (cp.stdout, cp.stderr)


def test_prepend_pattern(jx):
    cp = jx.run(["-prepend-pattern", "[%r@%h]: ", "-n", 2, "echo", "hi"])
    me = socket.gethostname()
    assert sorted(cp.stdout.splitlines()) == [f"[0@{me}]: hi", f"[1@{me}]: hi"], cp.stdout


@pytest.mark.parametrize("args", [["-q"], ["--quiet"], ["--rank-by", "core"], ["--rank-by", "slot:span"],
                                  ["--use-hwthread-cpus"], ["-iface", "eth0"], ["-bootstrap", "fork"]])
def test_options_with_no_more_to_do_on_one_node(jx, args):
    cp = jx.run(args + ["-n", 2, "true"])
    assert cp.returncode == 0, cp.stderr


@pytest.mark.parametrize("args,why", [(["--timestamp-output"], "ts(1)"), (["--rank-by", "bogus"], "ranking")])
def test_options_refused_with_a_reason(jx, args, why):
    cp = jx.run(args + ["-n", 1, "true"])
    assert cp.returncode != 0 and why in cp.stderr, cp.stderr
