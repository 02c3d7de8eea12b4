#!/usr/bin/env python3
"""Builds a synthetic jiffy history database (the schema of
src/history/schema.h) for measuring `jiffy history` and `jiffy report`.

    bench/history_db.py OUT.db [--rows 1000000] [--days 90] [--cores 64]

Jobs are spread evenly over the last --days days, ending now; 1 in 20
fails, 1 in 200 times out, 1 in 500 is refused. bench/history_bench.py
imports make_db. Then, e.g.:

    time build/jiffy history --db OUT.db --since 1h
    time build/jiffy report --db OUT.db --since 1h -o r.html
"""
import argparse
import random
import re
import sqlite3
import time
from pathlib import Path

SCHEMA_H = Path(__file__).resolve().parents[1] / "src" / "history" / "schema.h"


def schema_sql():
    return re.search(r'R"sql\((.*)\)sql"', SCHEMA_H.read_text(), re.S).group(1)


def make_db(path, rows, days=90.0, cores=64, recent=0, seed=1):
    """rows jobs spread evenly over the last `days` days, ending now; the
    last `recent` of them within the last hour. Writes a fresh database."""
    Path(path).unlink(missing_ok=True)
    db = sqlite3.connect(path)
    db.executescript(schema_sql())
    db.execute("PRAGMA user_version=1")
    db.execute("PRAGMA journal_mode=WAL")
    rnd = random.Random(seed)
    now = time.time_ns()
    span = int(days * 86400e9)
    hour = 3600 * 10**9
    old = rows - recent

    def submit_of(i):
        if i < old:
            return now - span + i * ((span - hour) // max(1, old))
        return now - hour + (i - old) * ((hour - 100 * 10**9) // max(1, recent))

    def gen():
        for i in range(rows):
            submit = submit_of(i)
            n = rnd.choice((1, 1, 2, 4, 8))
            n = min(n, cores)
            first = rnd.randrange(0, cores - n + 1)
            cores_txt = ";".join(str(first + k) for k in range(n))
            r = rnd.random()
            outcome, code = (4, 127) if r < 0.002 else (3, 255) if r < 0.007 else (1, 1) if r < 0.057 else (1, 0)
            start = 0 if outcome == 4 else submit + rnd.randrange(0, 50_000_000)
            end = submit if outcome == 4 else start + rnd.randrange(5_000_000, 20_000_000_000)
            test = f"ex{rnd.randrange(1, 80)}_{rnd.randrange(1, 9)}"
            yield (f"{i:032x}", i + 1, 2, outcome, code, 0, 1000 + i % 30000, n, 1, 0, submit, start, end,
                   rnd.randint(1000, 90000), rnd.randint(100, 9000), rnd.randint(2000, 90000),
                   f"run{test}", f"./{test.split('_')[0]} -snes_monitor -ksp_rtol 1e-8",
                   f"/home/user/petsc/src/snes/tutorials/run{test}", cores_txt if start else "", "",
                   "no such program" if outcome == 4 else "")

    db.executemany("INSERT INTO jobs (tag, job, source, outcome, exit_code, signal, pid, ntasks, ngroups, flags, "
                   "submit_ns, start_ns, end_ns, user_us, sys_us, maxrss_kb, label, command, cwd, cores, gpus, "
                   "reason) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", gen())
    db.execute("INSERT INTO machines (since_ns, cores, gpus, identity) VALUES (?, ?, '', 'bench')",
               (now - span, cores))
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--days", type=float, default=90)
    ap.add_argument("--cores", type=int, default=64)
    a = ap.parse_args()
    t0 = time.monotonic()
    make_db(a.out, a.rows, a.days, a.cores)
    print(f"{a.rows} rows in {time.monotonic() - t0:.1f} s: {a.out} ({Path(a.out).stat().st_size / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
