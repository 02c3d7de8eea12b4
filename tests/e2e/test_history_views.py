"""`jiffy history` and `jiffy report` against databases the tests build.

Each test writes a history database of known rows (the SQL of kSchema, taken
from src/history/schema.h, run by Python's sqlite3) under its own
XDG_STATE_HOME, and runs jiffy through the conftest's isolated `Jiffy`.
The HTML report is loaded in a real headless browser (Debian's chromium);
those tests skip when chromium is absent. A screenshot is kept in
build/test-artifacts/report.png.
"""
import json
import os
import re
import shutil
import socket
import sqlite3
import struct
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import BUILD, REPO, wait_until

SCHEMA = re.search(r'R"sql\((.*)\)sql"', (REPO / "src/history/schema.h").read_text(), re.S).group(1)
FIELDS = {"id", "job", "tag", "label", "command", "cwd", "ntasks", "groups", "cores", "gpus", "submit", "start",
          "end", "wait_s", "run_s", "outcome", "exit_code", "signal", "timed_out", "user_s", "sys_s",
          "max_rss_kb", "reason", "pid", "lane", "handed_over", "oversubscribed",
          "step", "nodes", "slurm"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt install chromium)")

OK, FAILED_EXIT, SIGNALED, TIMED_OUT, REFUSED, LOST, CANCELLED = 1, 1, 2, 3, 4, 5, 6
OVERSUBSCRIBED = 0x4
NOW = time.time()
SHIFT = 0.0  # seconds the last database made moved its rows by (make_db)


def job(tag, submit, start, end, cores="0", outcome=OK, exit_code=0, label="", command="./a.out", cwd="/work/a",
        ntasks=None, flags=0, gpus="", reason="", job_id=None, signal=0):
    """A row; times are seconds before NOW (start None: never ran)."""
    ns = lambda ago: int((NOW - ago) * 1e9)
    return dict(tag=tag, job=job_id if job_id is not None else abs(hash(tag)) % 100000, source=2, outcome=outcome,
                exit_code=exit_code, signal=signal, pid=4242, ntasks=ntasks or max(1, len(cores.split(";"))),
                ngroups=1, flags=flags, submit_ns=ns(submit), start_ns=0 if start is None else ns(start),
                end_ns=ns(end), user_us=1500, sys_us=200, maxrss_kb=3000, label=label, command=command, cwd=cwd,
                cores=cores if start is not None else "", gpus=gpus, reason=reason)


# The known history: one old job, then the last run (a burst, no gap > 60 s).
OLD = job("0" * 31 + "1", 7300, 7299, 7200, command="./old", label="runold")
RUN = [
    job("a" * 32, 300, 299.5, 280, cores="0;1;2;3", command="./ex1 -n 4", label="runex1_1", job_id=11),
    job("b" * 32, 295, 290, 260, cores="4-5;6-7", outcome=OK, exit_code=3, command="./ex2 -snes_monitor",
        label="runex2_1", cwd="/work/b", job_id=12),
    job("c" * 32, 270, 269, 200, cores="1", outcome=TIMED_OUT, exit_code=255, command="./slow", job_id=13),
    job("d" * 32, 250, None, 250, outcome=REFUSED, exit_code=127, command="./missing", reason="no such program",
        job_id=0),
    job("e" * 32, 240, 230, 215, cores=";".join(str(c % 8) for c in range(16)), flags=OVERSUBSCRIBED,
        command="./wide", job_id=15),
    job("f" * 32, 220, None, 210, outcome=CANCELLED, exit_code=0, command="./gone", reason="launcher vanished",
        job_id=16),
    job("9" * 32, 205, 204, 190, cores="2", gpus="0", command="./gpu <b>&amp;", label="runex3_1", job_id=17),
    job("8" * 32, 180, 179, 150, cores="3", outcome=SIGNALED, exit_code=137, signal=9, command="./crash", job_id=18),
]
ROWS = [OLD] + RUN


def make_db(path: Path, rows=ROWS, machine_cores=8, machine_gpus="0,1"):
    """The rows, their times moved so that NOW is now (a test may run minutes
    after this module was loaded: windows such as --since 220s hold)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    global SHIFT
    SHIFT = time.time() - NOW
    shift = int(SHIFT * 1e9)
    rows = [dict(r, submit_ns=r["submit_ns"] + shift, end_ns=r["end_ns"] + shift,
                 start_ns=r["start_ns"] + shift if r["start_ns"] else 0) for r in rows]
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    db.execute("PRAGMA user_version=1")
    cols = list(rows[0].keys())
    db.executemany(f"INSERT INTO jobs ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                   [tuple(r[c] for c in cols) for r in rows])
    db.execute("INSERT INTO machines (since_ns, cores, gpus, identity) VALUES (?, ?, ?, 'test')",
               (int((NOW - 9000) * 1e9) + shift, machine_cores, machine_gpus))
    db.commit()
    db.close()


@pytest.fixture
def state(tmp_path):
    d = tmp_path / "state"
    make_db(d / "jiffy" / "history.db")
    return d


@pytest.fixture
def hist(jx, state):
    """hist(args) -> CompletedProcess of `jiffy args` reading the known database."""
    return lambda args, **kw: jx.run(args, env={"XDG_STATE_HOME": str(state)}, **kw)


def expected_bars(rows):
    """{(tag, lane name)}: one bar per job per distinct core and GPU it held."""
    bars = set()
    for r in rows:
        if not r["start_ns"]:
            continue
        for rank in r["cores"].split(";"):
            for part in rank.split(","):
                if part:
                    a, _, b = part.partition("-")
                    for c in range(int(a), int(b or a) + 1):
                        bars.add((r["tag"], f"core {c}"))
        for rank in r["gpus"].split(";"):
            for g in filter(None, rank.split(",")):
                bars.add((r["tag"], f"gpu {g}"))
    return bars


# --------------------------------------------------------------------------
# jiffy history


def test_history_table_lists_jobs_newest_last_within_100_columns(hist):
    cp = hist(["history"])
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    assert lines[0].split()[:4] == ["END", "JOB", "N", "WAIT"], lines[0]
    assert len(lines) == 1 + len(ROWS)
    assert all(len(line) <= 100 for line in lines), [len(x) for x in lines]
    by_end = sorted(ROWS, key=lambda r: r["end_ns"])
    for line, r in zip(lines[1:], by_end):
        assert r["command"][:20] in line, (line, r["command"])
    assert "timeout" in lines[1 + by_end.index(RUN[2])]
    assert "exit 3" in lines[1 + by_end.index(RUN[1])]
    assert "refused" in lines[1 + by_end.index(RUN[3])]
    assert "signal 9" in lines[1 + by_end.index(RUN[7])]


def test_history_json_is_one_object_per_job_with_the_documented_fields(hist):
    cp = hist(["history", "--json"])
    assert cp.returncode == 0, cp.stderr
    objs = [json.loads(line) for line in cp.stdout.splitlines()]
    assert [o["tag"] for o in objs] == [r["tag"] for r in sorted(ROWS, key=lambda r: r["end_ns"])]
    for o in objs:
        assert set(o) == FIELDS, set(o) ^ FIELDS
    b = next(o for o in objs if o["tag"] == "b" * 32)
    assert b["cores"] == [[4, 5], [6, 7]] and b["outcome"] == "failed" and b["exit_code"] == 3
    assert b["wait_s"] == pytest.approx(5, abs=1e-3) and b["run_s"] == pytest.approx(30, abs=1e-3)
    d = next(o for o in objs if o["tag"] == "d" * 32)
    assert d["start"] is None and d["wait_s"] is None and d["outcome"] == "refused" and d["reason"]
    e = next(o for o in objs if o["tag"] == "e" * 32)
    assert e["oversubscribed"] is True and e["ntasks"] == 16
    assert next(o for o in objs if o["tag"] == "9" * 32)["gpus"] == [["0"]]


@pytest.mark.parametrize("args, tags", [
    (["--failed"], {"b", "c", "d", "f", "8"}),
    (["--label", "runex*"], {"a", "b", "9"}),
    (["--command", "./ex2*"], {"b"}),
    (["--cwd", "/work/b"], {"b"}),
    (["--since", "30m"], {"a", "b", "c", "d", "e", "f", "9", "8"}),
    (["--until", "1h"], {"1"}),
    (["--since", "220s", "--until=195s"], {"c", "e", "f"}),
    (["--limit", "2"], {"9", "8"}),
    (["--slowest", "2"], {"1", "c"}),
    (["--slowest", "1", "--since", "1h"], {"c"}),
    (["--failed", "--since", "1h", "--limit", "1"], {"8"}),
])
def test_history_filters(hist, args, tags):
    cp = hist(["history", "--json"] + args)
    assert cp.returncode == 0, cp.stderr
    got = {json.loads(line)["tag"][-1] for line in cp.stdout.splitlines()}
    assert got == tags


def test_history_iso_times_are_local(hist):
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(NOW + SHIFT - 195))
    until = time.strftime("%Y-%m-%d %H:%M", time.localtime(NOW + SHIFT + 120))
    cp = hist(["history", "--json", "--since", since, "--until", until])
    assert cp.returncode == 0, cp.stderr
    assert {json.loads(x)["tag"][-1] for x in cp.stdout.splitlines()} == {"9", "8"}


@pytest.mark.parametrize("value", ["10", "yesterday", "5x", "-3m", "2026-13-01", "2026-12-04T10", ""])
def test_bad_since_values_are_one_line_errors(hist, value):
    cp = hist(["history", "--since", value])
    assert cp.returncode == 1, (cp.returncode, cp.stderr)
    assert cp.stdout == ""
    err = cp.stderr.strip()
    assert "\n" not in err and err.startswith("jiffy: --since: expected a duration ago"), err
    assert repr(value)[1:-1] in err


@pytest.mark.parametrize("args, message", [
    (["history", "--bogus"], "jiffy: unknown option '--bogus' (see jiffy history --help)"),
    (["history", "--limit", "0"], "jiffy: --limit: expected a positive integer, got '0'"),
    (["history", "--since", "1h", "--until", "2h"], "jiffy: --until is earlier than --since"),
    (["report", "-o", "x.pdf"], "jiffy: -o x.pdf: unknown format (the name must end in .html, .json or .svg)"),
    (["report", "--last-run", "--since", "1h"], "jiffy: --last-run cannot be combined with --since or --until"),
])
def test_usage_errors_exit_1_like_jiffy(hist, args, message):
    cp = hist(args)
    assert cp.returncode == 1 and cp.stderr.strip() == message, (cp.returncode, cp.stderr)


def test_missing_database_is_no_rows_with_a_message(jx, tmp_path):
    cp = jx.run(["history"], env={"XDG_STATE_HOME": str(tmp_path / "none")})
    assert cp.returncode == 0 and cp.stdout == ""
    assert "no jobs recorded yet" in cp.stderr and str(tmp_path / "none") in cp.stderr


def test_corrupt_database_is_a_one_line_error(jx, tmp_path):
    db = tmp_path / "s" / "jiffy" / "history.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not sqlite" * 1000)
    cp = jx.run(["history"], env={"XDG_STATE_HOME": str(tmp_path / "s")})
    assert cp.returncode == 1 and cp.stdout == ""
    err = cp.stderr.strip()
    assert "\n" not in err and err.startswith(f"jiffy: history database {db}:") and "not a database" in err, err


def test_history_with_a_daemon_running_reads_the_database(jx, state, fake_daemon):
    """The daemon is asked first (`history`); whatever it answers (the
    database of its environment, or an error from a daemon without history),
    the rows show."""
    fake_daemon(cores=8, env={"XDG_STATE_HOME": str(state)})
    cp = jx.run(["history", "--json"], env={"XDG_STATE_HOME": str(state)})
    assert cp.returncode == 0, cp.stderr
    assert len(cp.stdout.splitlines()) == len(ROWS)


def test_the_daemons_database_and_error_are_used(jx, state, tmp_path, fake_daemon):
    """A daemon answering `history` names its database (not the environment's)
    and what is wrong with it: printed, and the rows shown all the same."""
    fake_daemon(cores=8, env={"XDG_STATE_HOME": str(tmp_path / "elsewhere")})
    sock_path = jx.sockets()[0]
    assert jx.stop().returncode == 0
    wait_until(lambda: not os.path.exists(sock_path), 10, 0.05, "the daemon's socket to go")
    theirs = tmp_path / "theirs.db"
    make_db(theirs, [RUN[0], RUN[1]])
    asked = []
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(4)

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                head = conn.recv(4, socket.MSG_WAITALL)
                if len(head) < 4:
                    continue
                msg = json.loads(conn.recv(struct.unpack(">I", head)[0], socket.MSG_WAITALL))
                asked.append(msg)
                reply = {"type": "history_reply", "db": str(theirs), "error": "database is locked", "pending": 3}
                if msg["type"] != "history":
                    reply = {"type": "ok"}
                body = json.dumps(reply).encode()
                conn.sendall(struct.pack(">I", len(body)) + body)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        cp = jx.run(["history", "--json"], env={"XDG_STATE_HOME": str(state)})
    finally:
        srv.close()
        os.unlink(sock_path)
    assert asked and asked[0] == {"type": "history", "v": 1}
    assert cp.returncode == 0, cp.stderr
    assert cp.stderr.strip() == "jiffy: history: database is locked"
    assert [json.loads(x)["tag"] for x in cp.stdout.splitlines()] == ["a" * 32, "b" * 32]


def test_help_documents_the_views(hist):
    top = hist(["--help"]).stdout
    assert "jiffy history" in top and "jiffy report" in top
    for sub in ("history", "report"):
        cp = hist([sub, "--help"])
        assert cp.returncode == 0 and cp.stdout.startswith(f"Usage: jiffy {sub}"), cp.stdout


# --------------------------------------------------------------------------
# jiffy report


class JobRects(HTMLParser):
    """The (data-tag, data-lane) of every element whose class list has `job`."""

    def __init__(self):
        super().__init__()
        self.bars = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "job" in (a.get("class") or "").split():
            self.bars.append((a.get("data-tag"), a.get("data-lane")))


def chromium(*args, timeout=90):
    profile = Path(os.environ.get("TMPDIR", "/tmp")) / f"jiffy-chromium-{os.getpid()}"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_report_last_run_is_the_last_burst(hist):
    cp = hist(["report", "--last-run"])
    assert cp.returncode == 0, cp.stderr
    assert re.search(rf"^jobs\s+{len(RUN)} ", cp.stdout, re.M), cp.stdout
    cp = hist(["report"])  # the default window
    assert re.search(rf"^jobs\s+{len(RUN)} ", cp.stdout, re.M), cp.stdout


def test_report_last_run_ends_at_a_minute_of_silence(jx, tmp_path):
    rows = [job("1" * 32, 1000, 999, 900), job("2" * 32, 880, 879, 800),  # burst 1
            job("3" * 32, 700, 699, 650), job("4" * 32, 640, 639, 600), job("5" * 32, 560, 559, 500)]
    make_db(tmp_path / "s" / "jiffy" / "history.db", rows)
    out = tmp_path / "t.json"
    cp = jx.run(["report", "--last-run", "-o", out], env={"XDG_STATE_HOME": str(tmp_path / "s")})
    assert cp.returncode == 0, cp.stderr
    tags = {e["args"]["tag"][0] for e in json.loads(out.read_text())["traceEvents"] if e["ph"] == "X"}
    assert tags == {"3", "4", "5"}


@needs_chromium
def test_report_html_in_a_browser_has_a_bar_per_job_and_core(hist, tmp_path):
    page = tmp_path / "report.html"
    cp = hist(["report", "--last-run", "-o", page], timeout=60)
    assert cp.returncode == 0, cp.stderr
    text = page.read_text()
    assert "http://" not in text and "https://" not in text, "the page must be self-contained"
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=""", text), "no external resources"
    dom = chromium("--dump-dom", page.as_uri())
    assert dom.returncode == 0 and "<svg" in dom.stdout, dom.stderr[-2000:]
    p = JobRects()
    p.feed(dom.stdout)
    want = expected_bars(RUN)
    assert len(p.bars) == len(want), sorted(set(p.bars) ^ want)
    assert set(p.bars) == want
    # Jobs that never ran are in the summary, not bars.
    assert 'id="never-ran"' in dom.stdout and "./missing" in dom.stdout and "./gone" in dom.stdout
    assert re.search(r'id="jobs">8<', dom.stdout) and re.search(r'id="failures">5<', dom.stdout)
    # Keep a screenshot for people to look at.
    shot = BUILD / "test-artifacts" / "report.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(page, shot.with_suffix(".html"))
    cp = chromium(f"--screenshot={shot}", "--window-size=1400,900", "--hide-scrollbars", page.as_uri())
    assert cp.returncode == 0 and shot.stat().st_size > 10000, cp.stderr[-2000:]
    print(f"report screenshot: {shot}")


def test_report_trace_json_has_the_chrome_trace_shape(hist, tmp_path):
    out = tmp_path / "trace.json"
    cp = hist(["report", "--last-run", "-o", out])
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(out.read_text())
    events = doc["traceEvents"]
    xs = [e for e in events if e["ph"] == "X"]
    for e in xs:
        assert {"name", "ph", "ts", "dur", "pid", "tid"} <= set(e), e
        assert e["pid"] == 1 and e["dur"] >= 0 and isinstance(e["tid"], int)
        assert {"command", "label", "exit", "wait_s"} <= set(e["args"])
    names = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert [names[c] for c in range(8)] == [f"core {c}" for c in range(8)]
    assert names[8] == "gpu 0" and names[9] == "gpu 1"
    assert {(e["args"]["tag"], names[e["tid"]]) for e in xs} == expected_bars(RUN)
    assert len(xs) == len(expected_bars(RUN))
    wide = [e for e in xs if e["args"]["tag"] == "e" * 32]
    assert {e["tid"] for e in wide} == set(range(8))
    a = next(e for e in xs if e["args"]["tag"] == "a" * 32)
    assert a["dur"] == pytest.approx(19.5e6, rel=1e-6) and a["ts"] == pytest.approx((NOW + SHIFT - 299.5) * 1e6, abs=2)


def test_report_svg_is_a_standalone_document(hist, tmp_path):
    out = tmp_path / "t.svg"
    cp = hist(["report", "--last-run", "-o", out])
    assert cp.returncode == 0, cp.stderr
    root = ET.parse(out).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    rects = [r for r in root.iter("{http://www.w3.org/2000/svg}rect") if "job" in r.get("class", "").split()]
    assert {(r.get("data-tag"), r.get("data-lane")) for r in rects} == expected_bars(RUN)
    assert len(rects) == len(expected_bars(RUN))


def test_report_of_ten_thousand_jobs_is_fast_and_compact(jx, tmp_path):
    rows = [job(f"{i:032x}", 20000 - 2 * i, 20000 - 2 * i - 0.1, 20000 - 2 * i - 3, cores=f"{i % 64}",
                command=f"./t{i}") for i in range(10000)]
    make_db(tmp_path / "s" / "jiffy" / "history.db", rows, machine_cores=64, machine_gpus="")
    out = [tmp_path / "r.html", tmp_path / "r.json", tmp_path / "r.svg"]
    cp = jx.run(["report", "--since", "6h"] + [a for o in out for a in ("-o", o)],
                env={"XDG_STATE_HOME": str(tmp_path / "s")}, timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert cp.elapsed < 10, cp.elapsed
    for o in out:
        assert o.stat().st_size < 16 << 20, (o, o.stat().st_size)
    assert (tmp_path / "r.html").read_text().count('<rect class="job ') == 10000


def test_the_launch_path_does_not_link_sqlite():
    for name in ("jiffy", "jiffy-launch", "jiffy-pmix"):
        exe = BUILD / name
        if exe.exists():
            assert b"sqlite3_open" not in exe.read_bytes(), f"{name} links SQLite"
    assert b"sqlite3_open" in (BUILD / "jiffy-history").read_bytes() or \
        "libsqlite3" in subprocess.run(["ldd", str(BUILD / "jiffy-history")], capture_output=True, text=True).stdout
