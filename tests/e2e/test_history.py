"""The history as a whole (issue 9): 500 launches of every kind, run side by
side, leave exactly one row each in `jiffy history --json`, with the cores
the ranks ran on, the exit codes and the times they had."""

import signal
import threading
import time

from conftest import parse_cpu_list, run_concurrently, wait_until

# A rank that says who it is.
SAY = 'echo "$JIFFY_JOB_TAG $JIFFY_JOB_ID $JIFFY_RANK $JIFFY_CORES"'

# kind -> (argv after jiffy, extra environment, expected outcome, exit code)
KINDS = {
    "lane": (["-n", 1, "sh", "-c", SAY], {}, "ok", 0),
    "asked": (["-n", 2, "sh", "-c", SAY], {"JIFFY_LANE": "0"}, "ok", 0),
    "launcher": (["-wdir", "/tmp", "-n", 1, "sh", "-c", SAY], {}, "ok", 0),  # jiffy-launch from the start
    "failing": (["-n", 1, "sh", "-c", "exit 3"], {}, "failed", 3),  # handed over by the front
    "signalled": (["-n", 1, "sh", "-c", "kill -SEGV $$"], {}, "signaled", 139),
    "missing": (["-n", 1, "no-such-program-here"], {}, "refused", 127),
    "too-wide": (["-n", 33, "true"], {}, "refused", None),  # 4 cores x 8 at most
    "timed-out": (["-n", 1, "sleep", 30], {"MPIEXEC_TIMEOUT": "1"}, "timeout", 255),
}


def plan(n):
    """n launches: mostly short ones, a timeout every 25th."""
    cycle = ["lane", "asked", "launcher", "failing", "signalled", "missing", "too-wide", "lane", "asked"]
    out = []
    for i in range(n):
        out.append("timed-out" if i % 25 == 24 else cycle[i % len(cycle)])
    return out


def said(stdout):
    out = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2].isdigit():
            out[int(parts[2])] = (parts[0], int(parts[1]), sorted(parse_cpu_list(parts[3])))
    return out


def test_500_launches_of_every_kind_leave_one_row_each(jx, fake_daemon):
    fake_daemon(cores=4)
    kinds = plan(490)
    seen = {}  # label -> (kind, t0, t1, rc, stdout)
    lock = threading.Lock()

    def one(i):
        kind = kinds[i]
        args, env, _, _ = KINDS[kind]
        label = f"h{i}"
        t0 = time.time()
        cp = jx.run(args, timeout=60, env=dict(env, JIFFY_LABEL=label))
        with lock:
            seen[label] = (kind, t0, time.time(), cp.returncode, cp.stdout)

    run_concurrently(8, list(range(len(kinds))), one)

    # Launchers killed with SIGKILL while their job runs: the daemon's rows.
    killed = {}
    for i in range(10):
        label = f"k{i}"
        env = {"JIFFY_LABEL": label, **({"JIFFY_LANE": "0"} if i % 2 else {})}
        t0 = time.time()
        p = jx.popen(["-n", 1, "sleep", 60], env=env)
        # Once the daemon knows the label: a lane launcher says it only once
        # its job has run 2 ms (killed sooner, its row has no label or cwd:
        # the lane's record holds neither; docs/history.md).
        wait_until(lambda: any(j.get("pid") == p.pid and j.get("label") == label
                               for j in jx.status()["running"]), 10, 0.01, f"{label} running")
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        killed[label] = (t0, time.time())

    def complete():  # the lost rows come once the daemon found their groups empty
        rows = jx.history()
        return rows if len(rows) >= 500 else None

    rows = wait_until(complete, 60, 0.5, "500 rows")
    assert len(rows) == 500, f"{len(rows)} rows for 500 launches"
    by_label = {}
    for r in rows:
        assert r["label"] not in by_label, f"two rows for {r['label']}: {r} {by_label[r['label']]}"
        by_label[r["label"]] = r
    assert set(by_label) == set(seen) | set(killed)
    assert len({r["tag"] for r in rows}) == 500

    for label, (kind, t0, t1, rc, stdout) in seen.items():
        r = by_label[label]
        _, _, outcome, code = KINDS[kind]
        assert r["outcome"] == outcome, (kind, r)
        assert rc == r["exit_code"], (kind, rc, r)
        if code is not None:
            assert rc == code, (kind, rc, r)
        assert t0 - 1 <= r["submit"] <= r["end"] <= t1 + 1, (kind, t0, t1, r)
        if outcome == "refused":
            assert r["start"] is None and r["cores"] == [] and r["reason"], (kind, r)
            continue
        assert r["submit"] <= r["start"] <= r["end"], (kind, r)
        if kind == "timed-out":
            assert r["timed_out"] and r["run_s"] >= 0.9, r
        if kind == "signalled":
            assert r["signal"] == signal.SIGSEGV, r
        if kind in ("lane", "asked", "launcher"):
            ranks = said(stdout)
            argv = KINDS[kind][0]
            ntasks = argv[argv.index("-n") + 1]
            assert sorted(ranks) == list(range(ntasks)), (kind, stdout)
            assert {t for t, _, _ in ranks.values()} == {r["tag"]}, (kind, r)
            assert {j for _, j, _ in ranks.values()} == {r["job"]}, (kind, r)
            assert r["cores"] == [ranks[k][2] for k in range(ntasks)], (kind, r, ranks)
            assert r["ntasks"] == ntasks and r["cwd"] and r["command"].startswith("sh -c"), r
        if kind == "asked":
            assert not r["lane"], r

    for label, (t0, t1) in killed.items():
        r = by_label[label]
        assert r["outcome"] == "lost" and r["exit_code"] is None, r
        assert r["command"] == "sleep 60" and len(r["cores"]) == 1, r
        assert t0 - 1 <= r["submit"] <= r["start"] <= r["end"] and r["end"] >= t1 - 1, r

    # No core was ever held by two jobs at once, by the rows' own times.
    spans = [(r["start"], r["end"], c) for r in rows if r["start"] and r["outcome"] != "lost"
             for rank in r["cores"] for c in rank]
    for core in range(4):
        on = sorted((s, e) for s, e, c in spans if c == core)
        for (s1, e1), (s2, e2) in zip(on, on[1:]):
            assert s2 >= e1 - 0.005, f"core {core}: {s1}-{e1} and {s2}-{e2} overlap"
