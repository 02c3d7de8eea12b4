"""mpiexec option spellings: MPMD, environment, working directory, labelled
output and per-rank output files."""

import os
import re
import subprocess

import pytest

from conftest import read_records


# ---------------------------------------------------------------- MPMD


def test_mpmd_one_world(jx, probe_bin, tmp_path):
    cp = jx.run(["-n", 1, probe_bin, f"out={tmp_path}", "tag=w", "print=A", ":",
                 "-n", 2, probe_bin, f"out={tmp_path}", "tag=w", "print=B"])
    assert cp.returncode == 0, cp.stderr
    lines = sorted(cp.stdout.splitlines())
    assert lines == ["A rank=0 size=3", "B rank=1 size=3", "B rank=2 size=3"], cp.stdout
    recs = read_records(tmp_path)["w"]
    assert sorted(recs) == [0, 1, 2]
    assert len({r["job"] for r in recs.values()}) == 1


def test_mpmd_np_and_three_groups(jx):
    cp = jx.run(["-np", 1, "sh", "-c", 'echo "a $JIFFY_RANK/$JIFFY_SIZE"', ":",
                 "-np", 1, "sh", "-c", 'echo "b $JIFFY_RANK/$JIFFY_SIZE"', ":",
                 "-n", 2, "sh", "-c", 'echo "c $JIFFY_RANK/$JIFFY_SIZE"'])
    assert cp.returncode == 0, cp.stderr
    assert sorted(cp.stdout.splitlines()) == ["a 0/4", "b 1/4", "c 2/4", "c 3/4"]


def test_mpmd_failing_group_exit_code(jx):
    cp = jx.run(["-n", 1, "true", ":", "-n", 1, "sh", "-c", "exit 4"])
    assert cp.returncode == 4, cp.stderr


# ---------------------------------------------------------------- environment


def envs(rec):
    return {k[4:]: v for k, v in rec.items() if k.startswith("env.")}


def test_genv_env_x(jx, probe_bin, tmp_path):
    cp = jx.run(["-genv", "G1", "global", "-x", "X1=xval", "-x", "FROMCALLER",
                 "-n", 1, "-env", "L1", "local0", probe_bin, f"out={tmp_path}", "tag=g", "envall=1", ":",
                 "-n", 1, "-env", "G1", "override", probe_bin, f"out={tmp_path}", "tag=g", "envall=1"],
                env={"FROMCALLER": "copied", "CALLERVAR": "inherited", "G1": "caller"})
    assert cp.returncode == 0, cp.stderr
    recs = read_records(tmp_path)["g"]
    e0, e1 = envs(recs[0]), envs(recs[1])
    assert e0["G1"] == "global"
    assert e1["G1"] == "override", "a group's -env wins over -genv"
    assert e0["X1"] == "xval" and e1["X1"] == "xval"
    assert e0["FROMCALLER"] == "copied"
    assert e0["CALLERVAR"] == "inherited", "the caller's environment is passed by default"
    assert e0["L1"] == "local0"
    assert "L1" not in e1, "-env applies to its own group only"
    assert e0["JIFFY_RANK"] == "0" and e1["JIFFY_RANK"] == "1"


def test_genvnone_and_genvlist(jx, probe_bin, tmp_path):
    cp = jx.run(["-genvnone", "-genvlist", "KEEP1,KEEP2", "-genv", "SET1", "v",
                 "-n", 1, probe_bin, f"out={tmp_path}", "tag=n", "envall=1"],
                env={"KEEP1": "k1", "KEEP2": "k2", "DROPME": "d"})
    assert cp.returncode == 0, cp.stderr
    e = envs(read_records(tmp_path)["n"][0])
    assert e.get("KEEP1") == "k1" and e.get("KEEP2") == "k2" and e.get("SET1") == "v"
    assert "DROPME" not in e and "HOME" not in e, sorted(e)
    for v in ("JIFFY_RANK", "JIFFY_SIZE", "JIFFY_JOB_ID", "JIFFY_CORES"):
        assert v in e, f"{v} must be set even with -genvnone"


def test_genvall_and_x_copy(jx, probe_bin, tmp_path):
    cp = jx.run(["-genvall", "-x", "ONLYCALLER", "-n", 1, probe_bin, f"out={tmp_path}", "tag=a",
                 "env=ONLYCALLER,OTHER"], env={"ONLYCALLER": "c1", "OTHER": "o"})
    assert cp.returncode == 0, cp.stderr
    e = envs(read_records(tmp_path)["a"][0])
    assert e == {"ONLYCALLER": "c1", "OTHER": "o"}


def test_genv_value_with_spaces_and_equals(jx):
    cp = jx.run(["-genv", "V", "a b=c", "-n", 1, "sh", "-c", 'printf "%s" "$V"'])
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == "a b=c"


# ---------------------------------------------------------------- working directory


@pytest.mark.parametrize("spelling", ["-wdir", "--wdir", "-wd"])
def test_wdir(jx, probe_bin, tmp_path, spelling):
    wd = tmp_path / "work dir"
    wd.mkdir()
    cp = jx.run([spelling, wd, "-n", 2, probe_bin, f"out={tmp_path}", "tag=d"])
    assert cp.returncode == 0, cp.stderr
    for rec in read_records(tmp_path)["d"].values():
        assert rec["cwd"] == str(wd)


def test_wdir_relative_program(jx, tmp_path):
    wd = tmp_path / "w"
    wd.mkdir()
    cp = jx.run(["-wdir", wd, "-n", 1, "sh", "-c", "pwd"], cwd="/")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == str(wd)


def test_wdir_missing_is_an_error(jx, tmp_path):
    cp = jx.run(["-wdir", tmp_path / "nope", "-n", 1, "true"], timeout=20)
    assert cp.returncode != 0
    assert "nope" in cp.stderr, cp.stderr


# ---------------------------------------------------------------- labelled output


@pytest.mark.parametrize("spelling", ["-l", "-prepend-rank"])
def test_rank_labels(jx, spelling):
    cp = jx.run([spelling, "-n", 2, "sh", "-c",
                 'echo "out1 $JIFFY_RANK"; echo "err1 $JIFFY_RANK" >&2; echo "out2 $JIFFY_RANK"'])
    assert cp.returncode == 0, cp.stderr
    out = cp.stdout.splitlines()
    assert sorted(out) == ["[0] out1 0", "[0] out2 0", "[1] out1 1", "[1] out2 1"], cp.stdout
    assert out.index("[0] out1 0") < out.index("[0] out2 0")
    assert sorted(l for l in cp.stderr.splitlines() if "err1" in l) == ["[0] err1 0", "[1] err1 1"], cp.stderr


def test_tag_output(jx):
    """Byte for byte as mpirun: "[1,<rank>]<stdout>:<line>"."""
    cp = jx.run(["--tag-output", "-n", 2, "sh", "-c", 'echo "$JIFFY_RANK"; echo e >&2'])
    assert cp.returncode == 0, cp.stderr
    assert sorted(cp.stdout.splitlines()) == ["[1,0]<stdout>:0", "[1,1]<stdout>:1"], cp.stdout
    assert sorted(cp.stderr.splitlines()) == ["[1,0]<stderr>:e", "[1,1]<stderr>:e"], cp.stderr


def test_labels_partial_and_long_lines(jx):
    long = "y" * 20000
    cp = jx.run(["-l", "-n", 1, "sh", "-c", 'head -c 20000 /dev/zero | tr "\\0" y; echo; printf "no newline"'])
    assert cp.returncode == 0, cp.stderr
    out = cp.stdout.splitlines()
    assert f"[0] {long}" in out, "a long line stays one labelled line"
    assert "[0] no newline" in out, cp.stdout[-200:]


def test_labels_do_not_mix_lines(jx):
    cp = jx.run(["-l", "-n", 4, "sh", "-c",
                 'i=0; while [ $i -lt 1500 ]; do echo "rank$JIFFY_RANK-line$i-abcdefghijklmnopqrstuvwxyz"; '
                 'i=$((i+1)); done'], timeout=60)
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    assert len(lines) == 6000
    per = {}
    for l in lines:
        m = re.fullmatch(r"\[(\d)\] rank(\d)-line(\d+)-abcdefghijklmnopqrstuvwxyz", l)
        assert m and m.group(1) == m.group(2), f"mixed or mislabelled line {l!r}"
        per.setdefault(m.group(1), []).append(int(m.group(3)))
    for r, seq in per.items():
        assert seq == list(range(1500)), f"rank {r} lines out of order"


def test_labels_launcher_survives_closed_stdout(jx):
    """SIGPIPE never kills jiffy: its stdout (labelled, so jiffy writes it)
    is closed after one line while the rank keeps writing."""
    p = jx.popen(["-l", "-n", 1, "sh", "-c", "seq 1 300000"])
    first = p.stdout.readline()
    assert first == "[0] 1\n"
    p.stdout.close()
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("jiffy hung after its stdout was closed")
    assert p.returncode != -13, "jiffy was killed by SIGPIPE"
    p.stderr.read()


# ---------------------------------------------------------------- output files


def test_outfile_errfile_pattern(jx, tmp_path):
    cp = jx.run(["-outfile-pattern", f"{tmp_path}/out.%r", "-errfile-pattern", f"{tmp_path}/err.%r",
                 "-n", 3, "sh", "-c", 'echo "o$JIFFY_RANK"; echo "e$JIFFY_RANK" >&2'])
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == ""
    for r in range(3):
        assert (tmp_path / f"out.{r}").read_text() == f"o{r}\n"
        assert (tmp_path / f"err.{r}").read_text() == f"e{r}\n"


def test_output_filename_dir(jx, tmp_path):
    d = tmp_path / "outdir"
    cp = jx.run(["--output-filename", d, "-n", 2, "sh", "-c", 'echo "o$JIFFY_RANK"; echo "e$JIFFY_RANK" >&2'])
    assert cp.returncode == 0, cp.stderr
    for r in range(2):
        assert (d / "1" / f"rank.{r}" / "stdout").read_text() == f"o{r}\n"
        assert (d / "1" / f"rank.{r}" / "stderr").read_text() == f"e{r}\n"
