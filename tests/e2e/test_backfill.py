"""Backfill (issue 10 item 3, docs/scheduling.md): while a wide job waits for
cores a running job holds, a short queued job that the history says ends
in time runs on the free core; one the history does not know waits.

Two fake cores. A (1 core) runs until the test lets it end; H (2 cores)
queues behind it; J (1 core) queues behind H. The history knows J from
real launches of it (probe, 200 ms) and A from a record written into the
journal (a 30 s run), so A's predicted end is far off. Times are what the
ranks record (CLOCK_MONOTONIC), and causality: A ends only once the test
saw J's launcher exit."""

import os
import re
import struct
import time

import pytest

from conftest import read_record, read_records, wait_until
from test_history_daemon import FROM_LAUNCHER, EXITED, MAGIC, RECORD, append, fnv1a, new_tag

J_MS = 200


def ran_for(tag, command, cwd, seconds, ntasks=1):
    """A journal record of a launch of command in cwd that exited 0 after seconds."""
    end = time.time_ns()
    start = end - int(seconds * 1e9)
    fields = [MAGIC, 4096, 0, 1, FROM_LAUNCHER, EXITED, 0, 0, 4242, ntasks, 1, 0, 0, 0,
              start, start, end, 10, 20, 30, 0, 0, 0, 0,
              tag.encode(), b"", command.encode(), cwd.encode(), b"0", b"", b"", b""]
    raw = bytearray(RECORD.pack(*fields))
    struct.pack_into("<I", raw, 12, fnv1a(bytes(raw)))
    return bytes(raw)


def probe_record(out, tag):
    return read_record(os.path.join(out, f"{tag}.0"))


def newest_j_record(out):
    """The last launch of J's command (its records are named job<id>)."""
    recs = [r[0] for t, r in read_records(out).items() if t.startswith("job") and 0 in r]
    return max(recs, key=lambda r: int(r["start_ns"]))


def job_of(st, pid, lists=("running", "queued")):
    for which in lists:
        for j in st.get(which, []):
            if j.get("pid") == pid:
                return which, j
    return None


def start_world(jx, fake_daemon, probe_bin, tmp_path, backfill=True, extra=()):
    """The daemon on 2 cores, J's history warmed, A running with a prediction."""
    fake_daemon(cores=2, extra=tuple(extra) + (() if backfill else ("--backfill=off",)))
    work = tmp_path / "work"
    out = tmp_path / "out"
    work.mkdir()
    out.mkdir()
    stop = tmp_path / "stop"
    j_cmd = [probe_bin, f"out={out}", f"sleep={J_MS}"]
    for _ in range(3):
        cp = jx.run(["-n", "1"] + j_cmd, cwd=work, timeout=60)
        assert cp.returncode == 0, cp.stderr
    a_script = f"until [ -e {stop} ]; do sleep 0.01; done"
    append(jx, ran_for(new_tag(), f"sh -c {a_script}", str(work), 30))
    hist = jx.history()  # the daemon ingests, and learns the run times
    assert sum(1 for r in hist if r["command"].startswith(probe_bin) and r["outcome"] == "ok") >= 3
    a = jx.popen(["-n", "1", "sh", "-c", a_script], cwd=work)

    def a_predicted():
        found = job_of(jx.status(), a.pid, ("running",))
        return found[1] if found and found[1].get("predicted_s") is not None else None

    aj = wait_until(a_predicted, 20, 0.02, "A to run with a prediction")
    assert aj["predicted_s"] == pytest.approx(30, rel=0.01)
    h = jx.popen(["-n", "2", probe_bin, f"out={out}", "tag=H"], cwd=work)
    hq = jx.wait_queued(h.pid, timeout=20)
    assert hq["predicted_s"] is None
    return dict(work=work, out=out, stop=stop, j_cmd=j_cmd, a=a, h=h)


def end_a_then_h(w):
    """Lets A end; H runs then. Returns H's rank 0 record."""
    w["stop"].touch()
    assert w["a"].wait(timeout=30) == 0
    assert w["h"].wait(timeout=30) == 0, w["h"].stderr.read()
    return probe_record(w["out"], "H")


def test_a_short_job_with_history_runs_while_the_wide_head_waits(jx, fake_daemon, probe_bin, tmp_path):
    w = start_world(jx, fake_daemon, probe_bin, tmp_path)
    j = jx.popen(["-n", "1"] + w["j_cmd"], cwd=w["work"])
    j.communicate(timeout=60)
    assert j.returncode == 0
    # J ran and ended while A still runs and H still waits: A ends only now.
    assert w["a"].poll() is None, "A ended before J"
    assert job_of(jx.status(), w["h"].pid, ("queued",)), "H does not wait any more"
    jrec = newest_j_record(w["out"])
    a_released = time.monotonic_ns()
    hrec = end_a_then_h(w)
    assert int(jrec["end_ns"]) < a_released < int(hrec["start_ns"])


def test_a_job_without_history_waits_for_the_head(jx, fake_daemon, probe_bin, tmp_path):
    w = start_world(jx, fake_daemon, probe_bin, tmp_path)
    k = jx.popen(["-n", "1", probe_bin, f"out={w['out']}", f"sleep={J_MS}", "tag=K"], cwd=w["work"])
    assert jx.wait_queued(k.pid, timeout=20)["predicted_s"] is None
    hrec = end_a_then_h(w)
    assert k.wait(timeout=30) == 0
    krec = probe_record(w["out"], "K")
    assert int(krec["start_ns"]) >= int(hrec["end_ns"]), "K (no history) started before H ended"


def test_backfill_off_makes_the_known_job_wait_too(jx, fake_daemon, probe_bin, tmp_path):
    w = start_world(jx, fake_daemon, probe_bin, tmp_path, backfill=False)
    j = jx.popen(["-n", "1"] + w["j_cmd"], cwd=w["work"])
    assert jx.wait_queued(j.pid, timeout=20)["predicted_s"] == pytest.approx(J_MS / 1000, abs=0.5)
    hrec = end_a_then_h(w)
    assert j.wait(timeout=30) == 0
    assert int(newest_j_record(w["out"])["start_ns"]) >= int(hrec["end_ns"])


@pytest.mark.parametrize("slack", [None, "0"], ids=["default_slack", "slack_0"])
def test_the_slack_lets_a_job_end_after_the_heads_shadow_but_by_its_deadline(
        jx, fake_daemon, probe_bin, tmp_path, slack):
    """L is predicted to run 45 s, past A's predicted end (30 s after it
    started) but before H's deadline (about 60 s: the default slack 1 lets H
    start up to its predicted wait later). So L runs now by default, and
    waits for H with --backfill-slack=0 (EASY). L really runs 200 ms."""
    w = start_world(jx, fake_daemon, probe_bin, tmp_path,
                    extra=() if slack is None else (f"--backfill-slack={slack}",))
    l_cmd = [probe_bin, f"out={w['out']}", f"sleep={J_MS}", "tag=L"]
    append(jx, ran_for(new_tag(), " ".join(l_cmd), str(w["work"]), 45))
    assert any(r["command"] == " ".join(l_cmd) for r in jx.history())  # the daemon learns it
    l = jx.popen(["-n", "1"] + l_cmd, cwd=w["work"])
    if slack is None:
        l.communicate(timeout=60)
        assert l.returncode == 0
        assert w["a"].poll() is None, "A ended before L"
        hq = job_of(jx.status(), w["h"].pid, ("queued",))
        assert hq, "H does not wait any more"
        assert 30 < hq[1]["start_by_s"] <= 60, hq  # its deadline: A's predicted end plus its wait once more
        row = [r for r in jx.run(["status"]).stdout.splitlines() if f"pid {w['h'].pid} " in r]
        assert len(row) == 1 and re.search(r"  start by \d+\.\d s  ", row[0]), row  # and to a human
        end_a_then_h(w)
    else:
        assert jx.wait_queued(l.pid, timeout=20)["predicted_s"] == pytest.approx(45, rel=0.01)
        hq = job_of(jx.status(), w["h"].pid, ("queued",))
        assert 0 < hq[1]["start_by_s"] <= 30, hq  # EASY: its deadline is A's predicted end
        hrec = end_a_then_h(w)
        assert l.wait(timeout=30) == 0
        assert int(probe_record(w["out"], "L")["start_ns"]) >= int(hrec["end_ns"]), "L started before H ended"
