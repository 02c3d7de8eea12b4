#!/usr/bin/python3
"""The floor under a core's gap between two tests (issue 10): how long one
test's last rank ending to the next test's first rank starting takes with
the cheapest launcher there is, and through jiffy, on an idle machine.

    /usr/bin/python3 bench/gap_bench.py [--runs N] [--jiffy PATH] [--kinds plain,mpich,ompi]

The programs are the suite benchmark's (bench/suite/work.c, built the
three ways): every rank logs its start (a constructor: after exec and
dynamic loading) and its end (after MPI_Finalize, before exit).

  bare   a C loop (compiled here) that forks, execs and waits for the
         program N times in a row, bound to the first allowed CPU: the gap
         is the previous process's exit, fork, exec and loading, with no
         resource manager at all. MPI builds run as singletons.
  jiffy  A (`jiffy -n 2`, 40 ms of CPU per rank) runs, B (`jiffy -n 2`,
         1 ms) is queued behind it 10 ms later; the gap is A's last rank end
         to B's first rank start, cut at the history's times (its fields
         `end` of A and `start` of B): exit (A's ranks exit and are reaped),
         handoff (A's `finished`, the daemon's grant, B's spawn of its
         ranks), load (B's ranks' exec and loading). Plain and MPICH builds
         (`-n 2` of an Open MPI build needs the shared PMIx server, whose
         start-up is not a gap's).

Medians (p10, p90) in milliseconds. The suite benchmark's gap targets
(3 ms plain, 6 ms MPICH) read against the bare row: what is left is what a
launcher may spend. Standard library, gcc and mpicc only; run it on a
quiet machine (bench/wait_quiet.py).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mpi_bench import find_jiffy  # noqa: E402
from suite_bench import build_programs  # noqa: E402

BARE_C = r"""
#define _GNU_SOURCE
#include <sched.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char** argv) {
  int n = atoi(argv[1]);
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(atoi(argv[2]), &s);
  sched_setaffinity(0, sizeof s, &s);
  for (int i = 0; i < n; i++) {
    pid_t p = fork();
    if (p == 0) {
      execv(argv[3], argv + 3);
      _exit(127);
    }
    int st;
    if (waitpid(p, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return 1;
  }
  return 0;
}
"""


def records(log, test=None):
    out = []
    for line in Path(log).read_text().splitlines():
        r = dict(kv.split("=", 1) for kv in line.split())
        if test is None or r["id"] == test:
            out.append(r)
    return out


def figures(xs):
    xs = sorted(xs)
    return f"{statistics.median(xs):6.2f} ({xs[len(xs) // 10]:.2f}, {xs[len(xs) * 9 // 10]:.2f})"


def bare(d, prog, runs, cpu):
    log = d / f"bare.{prog.name}.log"
    env = dict(os.environ, SUITE_LOG=str(log))
    subprocess.run([str(d / "bare"), str(runs), str(cpu), str(prog), "x", "1", "1", "0", "0"], env=env,
                   stdout=subprocess.DEVNULL, check=True, timeout=600)
    rs = records(log)
    return [(int(b["start"]) - int(a["end"])) / 1e6 for a, b in zip(rs, rs[1:])]


def history_rows(jiffy, n):
    cp = subprocess.run([jiffy, "history", "--json", "--limit", str(n)], capture_output=True, text=True,
                        check=True, timeout=60)
    return [json.loads(line) for line in cp.stdout.splitlines()]


def chain(d, jiffy, prog, runs):
    log = d / f"chain.{prog.name}.log"
    env = dict(os.environ, SUITE_LOG=str(log))
    parts = {"exit": [], "handoff": [], "load": [], "total": []}
    for i in range(runs):
        a = subprocess.Popen([jiffy, "-n", "2", str(prog), f"A{i}", "2", "40", "0", "0"], env=env,
                             stdout=subprocess.DEVNULL)
        time.sleep(0.01)
        b = subprocess.Popen([jiffy, "-n", "2", str(prog), f"B{i}", "2", "1", "0", "0"], env=env,
                             stdout=subprocess.DEVNULL)
        if a.wait(timeout=120) != 0 or b.wait(timeout=120) != 0:
            raise SystemExit(f"gap_bench: a jiffy launch of {prog.name} failed")
        a_end = max(int(r["end"]) for r in records(log, f"A{i}")) / 1e9
        b_start = min(int(r["start"]) for r in records(log, f"B{i}")) / 1e9
        rows = history_rows(jiffy, 2)
        ha = next(r for r in rows if f" A{i} " in r["command"])
        hb = next(r for r in rows if f" B{i} " in r["command"])
        parts["exit"].append((ha["end"] - a_end) * 1e3)
        parts["handoff"].append((hb["start"] - ha["end"]) * 1e3)
        parts["load"].append((b_start - hb["start"]) * 1e3)
        parts["total"].append((b_start - a_end) * 1e3)
    return parts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=60, help="gaps measured per row (default 60)")
    ap.add_argument("--jiffy", help="jiffy binary (default: $JIFFY_BUILD_DIR or <repo>/build/jiffy)")
    ap.add_argument("--kinds", default="plain,mpich,ompi", help="which builds (default plain,mpich,ompi)")
    a = ap.parse_args()
    jiffy = find_jiffy(a.jiffy)
    kinds = [k for k in a.kinds.split(",") if k]
    cpu = min(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="gap_bench.") as tmp:
        d = Path(tmp)
        build_programs(d, kinds)
        (d / "bare.c").write_text(BARE_C)
        subprocess.run(["gcc", "-O2", "-o", str(d / "bare"), str(d / "bare.c")], check=True)
        print(f"gap: previous rank's end -> next rank's start, ms, median (p10, p90), {a.runs} runs; "
              f"load average {os.getloadavg()[0]:.2f}")
        for k in kinds:
            print(f"  bare   {k:<6} {figures(bare(d, d / f'work.{k}', a.runs + 1, cpu))}"
                  f"   (fork, exec, wait in a C loop on CPU {cpu}; exit + fork + exec + loading)")
        for k in kinds:
            if k == "ompi":
                continue
            p = chain(d, jiffy, d / f"work.{k}", a.runs)
            print(f"  jiffy  {k:<6} {figures(p['total'])}   exit {statistics.median(p['exit']):.2f}  "
                  f"handoff {statistics.median(p['handoff']):.2f}  load {statistics.median(p['load']):.2f} "
                  f"(medians; A -n 2 ending, B -n 2 queued behind it)")


if __name__ == "__main__":
    main()
