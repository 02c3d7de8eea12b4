#!/usr/bin/python3
"""The suite benchmark (issue 10): how long `make -j test` of a whole suite of
short MPI tests takes through jiffy and through the launchers it replaces.

    /usr/bin/python3 bench/suite_bench.py [--tests N] [--reps R] [--warmup N] [--quick]
        [--variant NAME:VAR=VALUE[,VAR=VALUE]]... [--keep DIR] [--self-test]

The suite. A PETSc-like make-driven suite is generated in a temporary
directory (--seed): --tests tests, each one launch of bench/suite/work.c
built one of three ways (plain gcc, mpicc.mpich, mpicc.openmpi; --mix), of
width 1 to the core count (mostly 1-2) and a few (--wide, ~3%) wider than
the machine (cores+1 .. 2x cores), burning 5-100 ms of CPU per rank, printing
0-20 lines that the recipe compares with an expected file (diff), and a few
(--fail, ~3%, width 1 only: another rank may be killed before it logs)
exiting with a chosen code that the recipe checks. Every recipe is
`$(MPIEXEC_<KIND>) -n W ./work.<kind> args > out 2>&1` and then its check;
a failed check fails make. make runs with -j 2x the cores (--jobs) and -k.

The configurations, run in one go, --reps times each, every round in a
shuffled order so machine noise hits all alike:

  jiffy        MPIEXEC_* = build/jiffy for all three kinds
  jiffy:NAME   the same with the extra environment of --variant NAME:VAR=VAL
  peers        mpiexec.hydra for MPICH and plain programs, mpirun.openmpi
               --oversubscribe (--allow-run-as-root as root) for Open MPI
               ones, in one make run

Each jiffy configuration has its own daemon (a private JIFFY_RUNTIME_DIR and
XDG_STATE_HOME, kept across its reps, so a variant that changes the daemon
gets a daemon started with it and history learnt from its own earlier reps;
--warmup N runs each configuration N times unmeasured first), stopped with
`jiffy stop` at the end. Every run gets MPIEXEC_TIMEOUT=60 as
PETSc's harness sets it (--no-timeout-env drops it); the caller's JIFFY_*,
OMPI_*, PMIX_*, PMI_*, HYDRA_*, MPIR_CVAR_*, HWLOC_*, UCX_* and make
variables are dropped.

What is measured. Every rank appends one line to $SUITE_LOG: its start
(CLOCK_REALTIME in a constructor: after exec and dynamic loading), its end
(after MPI_Finalize), its allowed CPUs, its own CPU time. Per configuration
(median over reps; -v also per rep):

  wall        make's wall time
  floor       the suite's CPU floor: the ranks' own CPU time summed, over
              the cores the launchers may use (this process's allowed CPUs,
              a core's hyperthreads counted once)
  tree CPU    make's RUSAGE_CHILDREN (make, shells, launchers, ranks, diff)
              plus jiffy's daemon and its set's shared PMIx server (not
              children: /proc/<pid>/stat around the run; column daemon)
  idle, over  machine level, between the first rank start and the last rank
              end: idle core-seconds = integral of max(0, cores - running
              ranks), oversubscribed = integral of max(0, running - cores)
  gaps        per core, for ranks bound to exactly that core: sorted rank
              intervals, and between consecutive ones of different tests the
              time from the previous end to the next start during which no
              unbound rank (a wider-than-machine job) could use that core;
              median, p90, total, and the median by kind and width of the
              next test. Unbound ranks (the peers', mostly) have no per-core
              gaps: read idle/over for them.
  collisions  pairs of different tests whose bound ranks overlap on one core
  parts       (jiffy) where each core's time went, from the history's rows
              (launcher start, ranks spawned, last rank reaped) and the logs:
              ranks running; free while the next test needs more cores than
              are free (packing); free while a test that fits waits (launch);
              held before the ranks run (spawn: fork, exec, loading) or after
              they end (reap); free with no test submitted (make, shell, diff)
  gap parts   (jiffy) each core gap cut at the history's times, by the
              next test's kind (median and mean of each part): exit (the
              last rank's exit and its reaping), make (the next launcher not
              started yet), handoff (the previous launcher's `finished`, the
              daemon's grant, the next launcher's spawn; for a launcher
              started late, its own start and request too), load (exec,
              dynamic loading, library constructors of the next ranks)
  machine     the machine's time during make, wall x allowed CPUs, split
              into the ranks' own CPU, the rest of make's tree (make, shells,
              diff, launchers, jiffy's daemon and PMIx server), idle (from
              /proc/stat) and the remainder (processes outside the tree,
              the hypervisor's steal)
  bound       (jiffy) the packing bound: the wall a perfect launcher would
              give with make -j and cores never shared (each test as long as
              its ranks ran; a discrete-event replay of make and FIFO with
              backfill on exact run times, with the configuration's backfill
              slack, JIFFY_BACKFILL_SLACK or the daemon's default). wall /
              bound is what launching, make, the shell and diff cost; bound /
              floor what make's lookahead and whole-core packing leave idle

Targets (issue 10), for each jiffy configuration: wall <= 1.1x its floor and
<= 0.8x the peers' wall; median core gap <= 3 ms before plain tests and
<= 6 ms before MPICH tests; 0 collisions. Missed targets are reported;
--strict makes them exit status 3. Exit 1 when the run itself failed (an
unexpected test failure, a missing rank record, a hung make: the suite is
then kept and its path printed).

--self-test checks the gap/collision/idle computation on hand-made intervals.
Standard library only.
"""

import argparse
import json
import os
import random
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import unittest
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mpi_bench import CLK_TCK, daemon_pid, find_jiffy, proc_cpu, shared_pmix_server  # noqa: E402  (the benches' shared helpers)

HERE = Path(__file__).resolve().parent
KINDS = ("mpich", "ompi", "plain")
MAKE_VAR = {"mpich": "MPIEXEC_MPICH", "ompi": "MPIEXEC_OMPI", "plain": "MPIEXEC_PLAIN"}
SCRUB_PREFIXES = ("JIFFY_", "OMPI_", "PMIX_", "PMI_", "HYDRA_", "MPIR_CVAR_", "HWLOC_", "UCX_")
DEFAULT_BACKFILL_SLACK = 1.0  # src/sched/scheduler.h, SchedPolicy::backfill_slack
SCRUB_NAMES = ("MPIEXEC_TIMEOUT", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEFILES", "SUITE_LOG")


class BenchError(Exception):
    pass


# ---------------------------------------------------------------- the suite

@dataclass(frozen=True)
class Test:
    id: str
    kind: str      # mpich | ompi | plain
    width: int     # -n
    burn_ms: int   # CPU per rank
    lines: int     # output lines of rank 0 (plus "ID done")
    code: int      # expected exit code


def pick_width(rnd, cores, wide):
    """1 .. cores, mostly 1-2; a fraction `wide` of tests cores+1 .. 2x cores."""
    if rnd.random() < wide:
        return rnd.randint(cores + 1, 2 * cores)
    widths, weights = [1], [55.0]
    if cores >= 2:
        widths.append(2)
        weights.append(30.0)
    if cores >= 3:
        widths += list(range(3, cores + 1))
        weights += [15.0 / (cores - 2)] * (cores - 2)
    return rnd.choices(widths, weights)[0]


def generate(n, seed, cores, mix, wide, fail):
    """n tests, the same for the same arguments."""
    rnd = random.Random(seed)
    kinds = [k for k in KINDS if mix[k] > 0]
    tests = []
    for i in range(n):
        kind = rnd.choices(kinds, [mix[k] for k in kinds])[0]
        width = pick_width(rnd, cores, wide)
        burn = rnd.randint(5, 100)
        lines = rnd.randint(0, 20)
        code = rnd.randint(1, 9) if width == 1 and rnd.random() < fail else 0
        tests.append(Test(f"t{i:04d}", kind, width, burn, lines, code))
    # a small suite (--quick) still has one of each rare kind of test, so every path is exercised
    if n >= 10 and wide > 0 and not any(t.width > cores for t in tests):
        i = rnd.randrange(n)
        tests[i] = replace(tests[i], width=rnd.randint(cores + 1, 2 * cores), code=0)
    if n >= 10 and fail > 0 and not any(t.code for t in tests):
        i = rnd.choice([i for i, t in enumerate(tests) if t.width == 1] or [0])
        tests[i] = replace(tests[i], width=1, code=rnd.randint(1, 9))
    return tests


def expected_output(t):
    s = t.width * (t.width + 1) // 2
    return "".join(f"{t.id} line {i} of {t.lines}: sum {s}\n" for i in range(1, t.lines + 1)) + f"{t.id} done\n"


def recipe(t):
    """The make rule of one test: launch, then check as PETSc's harness does."""
    out = f"$(OUT)/{t.id}.out"
    run = (f"\t@$({MAKE_VAR[t.kind]}) -n {t.width} ./work.{t.kind} {t.id} {t.width} {t.burn_ms} "
           f"{t.lines} {t.code} > {out} 2>&1; rc=$$?; \\\n"
           f"\tif [ $$rc -ne {t.code} ]; then echo \"FAIL {t.id}: exit code $$rc, expected {t.code} "
           f"(output in {out})\" >&2; exit 1; fi; \\\n")
    if t.code == 0:
        check = (f"\tdiff -u exp/{t.id}.exp {out} >&2 || "
                 f"{{ echo \"FAIL {t.id}: output differs from exp/{t.id}.exp\" >&2; exit 1; }}\n")
    else:
        # a launcher may add its own words about the failure: only the program's last line is checked
        check = (f"\tgrep -qx '{t.id} done' {out} || "
                 f"{{ echo \"FAIL {t.id}: no '{t.id} done' line in {out}\" >&2; exit 1; }}\n")
    return f"{t.id}:\n{run}{check}"


def write_suite(d, tests, args_text):
    """The Makefile and the expected outputs in directory d."""
    (d / "exp").mkdir(parents=True, exist_ok=True)
    for t in tests:
        (d / "exp" / f"{t.id}.exp").write_text(expected_output(t))
    ids = " ".join(t.id for t in tests)
    head = (f"# Generated by bench/suite_bench.py {args_text}\n"
            "# make -j4 -k MPIEXEC_MPICH=... MPIEXEC_OMPI=... MPIEXEC_PLAIN=... OUT=dir SUITE_LOG=file\n"
            "MPIEXEC_MPICH ?= mpiexec\nMPIEXEC_OMPI ?= mpiexec\nMPIEXEC_PLAIN ?= mpiexec\n"
            "OUT ?= out\nSUITE_LOG ?= $(CURDIR)/suite.log\nexport SUITE_LOG\n"
            f"TESTS = {ids}\n.PHONY: all $(TESTS)\nall: $(TESTS)\n\n")
    (d / "Makefile").write_text(head + "\n".join(recipe(t) for t in tests))


def build_programs(d, kinds):
    src = HERE / "suite" / "work.c"
    compilers = {"plain": ["gcc"], "mpich": ["mpicc.mpich", "-DUSE_MPI"], "ompi": ["mpicc.openmpi", "-DUSE_MPI"]}
    for k in kinds:
        cp = subprocess.run(compilers[k] + ["-O2", "-o", str(d / f"work.{k}"), str(src)],
                            capture_output=True, text=True)
        if cp.returncode != 0:
            raise BenchError(f"building work.{k} failed:\n{cp.stderr}")


# ---------------------------------------------------------------- the logs

@dataclass(frozen=True)
class Rank:
    test: str
    rank: int
    size: int
    start: int     # ns, CLOCK_REALTIME
    end: int
    cpus: frozenset
    cputime: int   # ns
    burn: int      # ns


LOG_RE = re.compile(r"id=(\S+) rank=(\d+) size=(\d+) pid=\d+ start=(\d+) end=(\d+) cpus=(\S*) cpu=-?\d+ "
                    r"cputime=(\d+) burn=(\d+) rc=-?\d+$")


def parse_log(text):
    ranks = []
    for line in text.splitlines():
        m = LOG_RE.match(line)
        if not m:
            raise BenchError(f"unreadable log line: {line!r}")
        cpus = frozenset(int(c) for c in m.group(6).split(",") if c.isdigit())
        ranks.append(Rank(m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5)),
                          cpus, int(m.group(7)), int(m.group(8))))
    return ranks


def check_log(ranks, tests):
    """Problems: a test without exactly one record for each of its ranks."""
    seen = {}
    for r in ranks:
        seen.setdefault(r.test, []).append(r)
    problems = []
    for t in tests:
        got = sorted((r.rank, r.size) for r in seen.get(t.id, []))
        want = [(i, t.width) for i in range(t.width)]
        if got != want:
            problems.append(f"{t.id} ({t.kind}, -n {t.width}): rank records (rank, size) {got}, expected {want}")
    return problems


# ---------------------------------------------------------------- analysis (pure)

def core_map(allowed):
    """CPU -> core id (the smallest CPU of its hyperthread siblings), allowed CPUs only."""
    m = {}
    for c in allowed:
        try:
            text = Path(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list").read_text()
            sib = parse_cpu_list(text)
        except (OSError, ValueError):
            sib = {c}
        m[c] = min(sib & set(allowed) or {c})
    return m


def parse_cpu_list(text):
    out = set()
    for part in text.strip().split(","):
        if "-" in part:
            a, b = part.split("-")
            out.update(range(int(a), int(b) + 1))
        elif part:
            out.add(int(part))
    return out


def covered(union, a, b):
    """Length of [a, b) covered by the sorted disjoint intervals `union`."""
    total = 0
    for s, e in union:
        if e <= a:
            continue
        if s >= b:
            break
        total += min(e, b) - max(s, a)
    return total


def merge(intervals):
    out = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


@dataclass
class Gap:
    core: int
    ns: int
    prev: str      # test ids
    next: str
    start: int = 0  # ns: the previous test's last rank end on the core
    end: int = 0    # ns: the next test's first rank start there


@dataclass
class Collision:
    core: int
    a: Rank
    b: Rank

    def overlap_ns(self):
        return min(self.a.end, self.b.end) - max(self.a.start, self.b.start)


def core_gaps(ranks, cores):
    """(gaps, collisions, bound rank count) per core; cores maps CPU -> core.

    A rank is bound to a core when all its allowed CPUs are that core's. On a
    core, between consecutive bound intervals of different tests, the gap is
    the time from the previous end (the latest end so far) to the next start
    that no unbound rank allowed on that core covered. Two bound intervals
    of different tests that overlap on a core are a collision."""
    bound, unbound = {}, {}
    for r in ranks:
        cs = {cores[c] for c in r.cpus if c in cores}
        if len(cs) == 1:
            bound.setdefault(cs.pop(), []).append(r)
        else:
            for c in cs:
                unbound.setdefault(c, []).append((r.start, r.end))
    gaps, collisions = [], []
    for core, rs in sorted(bound.items()):
        rs.sort(key=lambda r: (r.start, r.end))
        shared = merge(unbound.get(core, []))
        last = None
        active = []
        for r in rs:
            if last is not None and r.test != last.test and r.start > last.end:
                g = (r.start - last.end) - covered(shared, last.end, r.start)
                if g > 0:
                    gaps.append(Gap(core, g, last.test, r.test, last.end, r.start))
            if last is None or r.end > last.end:
                last = r
            active = [a for a in active if a.end > r.start]
            collisions += [Collision(core, a, r) for a in active if a.test != r.test]
            active.append(r)
    return gaps, collisions, sum(len(v) for v in bound.values())


def machine_usage(ranks, ncores):
    """(idle, oversubscribed) core-ns between the first rank start and the last end."""
    events = sorted([(r.start, 1) for r in ranks] + [(r.end, -1) for r in ranks])
    idle = over = 0
    running = 0
    prev = None
    for t, d in events:
        if prev is not None:
            dt = t - prev
            idle += max(0, ncores - running) * dt
            over += max(0, running - ncores) * dt
        running += d
        prev = t
    return idle, over


def packing_bound(tests, ranks, ncores, jobs, slack=0.0):
    """The suite's wall with a perfect launcher: what make -j `jobs` and
    cores that are never shared allow, nothing else (seconds).

    A discrete-event replay: make starts the recipes in the Makefile's order,
    `jobs` at a time, and one more as soon as one ends; a recipe costs
    nothing but its test, which takes as long as its ranks did in the run
    measured (first rank start to last rank end) and needs `width` cores at
    once (a test wider than the machine, all of them, alone). Cores go to
    waiting tests first come first served; the first that does not fit
    reserves, and a later one may use the reserved cores only if it ends
    by the reservation's start, or by the head's deadline with a backfill
    slack (jiffy's scheduler, sched/scheduler.h: the head's first shadow
    S0, seen at t0, plus slack x (S0 - t0)), on exact run times. slack 0
    is EASY backfill. jiffy's wall over this bound is what launching costs
    and what make, the shell and diff cost; wall over the CPU floor also
    counts what the lookahead of make -j leaves idle."""
    span = {}
    for r in ranks:
        a, b = span.get(r.test, (r.start, r.end))
        span[r.test] = (min(a, r.start), max(b, r.end))
    order = [t for t in tests if t.id in span]
    dur = {t.id: (span[t.id][1] - span[t.id][0]) / 1e9 for t in order}
    need = {t.id: min(t.width, ncores) for t in order}
    now, free = 0.0, ncores
    running = []          # (end, id)
    queue = []
    deadline = {}         # head id -> its deadline, fixed when first timed
    nxt = 0
    while nxt < len(order) and nxt < jobs:
        queue.append(order[nxt].id)
        nxt += 1
    while queue or running:
        started = []
        head, head_shadow, spare = None, None, 0
        for tid in queue:
            w = need[tid]
            if head is None:
                if w <= free:
                    started.append(tid)
                    free -= w
                    running.append((now + dur[tid], tid))
                    continue
                # the head: when enough is free for it, by the running tests' ends
                head, got, head_shadow = tid, free, float("inf")
                for end, rid in sorted(running):
                    got += need[rid]
                    if got >= w:
                        head_shadow = end
                        break
                spare = max(0, free - w)
                continue
            if w > free:
                continue
            if w <= spare:
                spare -= w
            else:
                if head_shadow == float("inf"):
                    continue
                limit = max(head_shadow, deadline.setdefault(head, now + (1 + slack) * (head_shadow - now)))
                if now + dur[tid] > limit:
                    continue
            started.append(tid)
            free -= w
            running.append((now + dur[tid], tid))
        queue = [q for q in queue if q not in started]
        if not running:
            break
        running.sort()
        end, tid = running.pop(0)
        now = end
        free += need[tid]
        if nxt < len(order):
            queue.append(order[nxt].id)
            nxt += 1
    return now


def cpu_idle(cpus):
    """Idle seconds (idle + iowait) summed over the CPUs `cpus`, from
    /proc/stat: what the whole machine left unused, whoever ran."""
    idle = 0
    with open("/proc/stat") as f:
        for line in f:
            name, _, rest = line.partition(" ")
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                v = rest.split()
                idle += int(v[3]) + int(v[4])
    return idle / CLK_TCK


IDLE_PARTS = (
    ("packing", "free: every waiting test needs more cores than are free"),
    ("reserved", "free: a test that fits waits behind a wider one (no backfill: too long, or no history)"),
    ("launch", "free: the oldest waiting test fits (its launcher starting, the daemon, the grant)"),
    ("spawn", "held: before its ranks run (fork, exec, dynamic loading)"),
    ("reap", "held: after its ranks ended (exit, reaping, release)"),
    ("make", "free: no test submitted (make, the shell, diff, the launcher's exec)"),
)


def idle_parts(jobs, ranks, ncores):
    """Where each core's time went that no rank used, by the history's rows
    (jiffy configurations): {part: core-seconds} over IDLE_PARTS, plus
    "busy". jobs: (test id, submit, start, end, cores) in ns, start None for
    a job that never ran; a test is waiting from submit (its launcher
    started) to start (its ranks spawned), and holds its cores from start to
    end (its last rank reaped)."""
    first = {}
    last = {}
    runs = {}
    for r in ranks:
        first[r.test] = min(first.get(r.test, r.start), r.start)
        last[r.test] = max(last.get(r.test, r.end), r.end)
        runs.setdefault(r.test, []).append((r.start, r.end))
    need = {}
    for tid, sub, st, en, cores in jobs:
        need[tid] = max(1, len(cores))
    points = sorted({t for _, sub, st, en, _ in jobs for t in (sub, st or sub, en)} |
                    {t for r in ranks for t in (r.start, r.end)})
    if len(points) < 2:
        return {}
    lo, hi = min(r.start for r in ranks), max(r.end for r in ranks)
    out = dict.fromkeys([k for k, _ in IDLE_PARTS] + ["busy"], 0.0)
    for a, b in zip(points, points[1:]):
        if b <= lo or a >= hi:
            continue
        m = (a + b) // 2
        held = {}
        waiting = []
        for tid, sub, st, en, cores in jobs:
            if st is not None and st <= m < en:
                for c in cores:
                    held[c] = tid
            elif sub <= m < (st if st is not None else en):
                waiting.append((sub, tid))
        waiting = [tid for _, tid in sorted(waiting)]  # the oldest first
        free = ncores - len(held)
        for c in range(ncores):
            tid = held.get(c)
            if tid is not None:
                if any(x <= m < y for x, y in runs.get(tid, [])):
                    part = "busy"
                elif tid not in first or m < first[tid]:  # no rank record: it never got going
                    part = "spawn"
                elif m >= last.get(tid, 0):
                    part = "reap"
                else:
                    part = "busy"  # between two of its ranks' lives: its own business
            elif not waiting:
                part = "make"
            elif need[waiting[0]] <= free:
                part = "launch"
            elif any(need[w] <= free for w in waiting):
                part = "reserved"
            else:
                part = "packing"
            out[part] += (b - a) / 1e9
    return out


GAP_PARTS = (
    ("exit", "the last rank's exit and its launcher reaping it (the history's end)"),
    ("make", "the next test's launcher not started yet (make, the shell, diff)"),
    ("handoff", "`finished`, the daemon's grant (or a late launcher's start), the next launcher's spawn"),
    ("load", "the next ranks' exec, dynamic loading and library constructors"),
)


def gap_split(gaps, jobs):
    """Each core gap cut at the history's times (jiffy configurations):
    [(gap, {part: ns})] over GAP_PARTS, for gaps whose tests both have a
    history row and that no unbound rank covered (the parts then sum to the
    gap). Cut points, each clamped into the gap and after the one before:
    the previous job's end (its last rank reaped), the next one's submit if
    later (its launcher started after that end), the next one's start (its
    ranks spawned)."""
    rows = {tid: (sub, st, en) for tid, sub, st, en, _ in jobs}
    out = []
    for g in gaps:
        if g.prev not in rows or g.next not in rows or rows[g.next][1] is None or g.end - g.start != g.ns:
            continue
        prev_end = rows[g.prev][2]
        sub, st, _ = rows[g.next]
        cuts = [g.start]
        for t in (prev_end, max(sub, prev_end), st):
            cuts.append(min(max(t, cuts[-1]), g.end))
        cuts.append(g.end)
        out.append((g, {name: b - a for (name, _), a, b in zip(GAP_PARTS, cuts, cuts[1:])}))
    return out


def history_jobs(state_dir, since_ns, ids, timeout=30.0):
    """The history rows of this run's tests: waits for the daemon to have
    ingested one per test (it writes them behind the launches)."""
    import sqlite3
    db = Path(state_dir) / "jiffy" / "history.db"
    deadline = time.monotonic() + timeout
    while True:
        rows = []
        if db.exists():
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                got = con.execute("SELECT command, submit_ns, start_ns, end_ns, cores FROM jobs "
                                  "WHERE submit_ns >= ?", (since_ns,)).fetchall()
            finally:
                con.close()
            for command, sub, st, en, cores in got:
                words = command.split()
                if len(words) > 1 and words[1] in ids:
                    rows.append((words[1], sub, st, en, [int(c) for c in cores.split(";") if c]))
        if len({r[0] for r in rows}) >= len(ids) or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def quantile(xs, q):
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------- runs

@dataclass
class Config:
    name: str
    jiffy: bool
    mpiexec: dict                 # kind -> launcher command line (make variable value)
    env: dict
    extra: dict = field(default_factory=dict)  # a variant's own variables
    results: list = field(default_factory=list)

    @property
    def slack(self):
        """The backfill slack of this configuration's daemon, for its packing
        bound: JIFFY_BACKFILL_SLACK, else the daemon's default
        (SchedPolicy::backfill_slack); 0 (EASY) for the peers."""
        if not self.jiffy:
            return 0.0
        return float(self.extra.get("JIFFY_BACKFILL_SLACK", DEFAULT_BACKFILL_SLACK))


@dataclass
class RunResult:
    rep: int
    wall: float          # s
    tree_cpu: float      # s, make's children (+ daemon for jiffy)
    daemon_cpu: float    # s, or None
    floor: float         # s
    idle: float          # core-s
    over: float          # core-s
    gaps: list
    collisions: list
    bound: int
    nranks: int
    packing: float = 0.0  # s, packing_bound
    packing_all: float = 0.0  # s, packing_bound with make's lookahead unlimited
    parts: dict = field(default_factory=dict)  # idle_parts (jiffy configurations)
    machine_idle: float = 0.0  # CPU-s the allowed CPUs were idle during make (/proc/stat)
    gap_parts: list = field(default_factory=list)  # gap_split (jiffy configurations)


def spawn_wait(argv, env, stdout, stderr, timeout):
    """(wall s, CPU s of argv and everything it reaped, exit code); argv runs in its own
    process group, so that a hung run is killed with all its launchers and ranks."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    fa = [(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, stdout, 1), (os.POSIX_SPAWN_DUP2, stderr, 2)]
    try:
        t0 = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, env, file_actions=fa, setpgroup=0)
    finally:
        os.close(devnull)
    pfd = os.pidfd_open(pid)
    try:
        if not select.select([pfd], [], [], timeout)[0]:
            os.killpg(pid, signal.SIGKILL)
            os.wait4(pid, 0)
            raise BenchError(f"make did not finish within {timeout:.0f} s (killed): {' '.join(argv)}")
        _, status, ru = os.wait4(pid, 0)
    finally:
        os.close(pfd)
    return time.perf_counter() - t0, ru.ru_utime + ru.ru_stime, os.waitstatus_to_exitcode(status)


class Bench:
    def __init__(self, a, suite, tests, configs, cores, jiffy):
        self.a, self.suite, self.tests, self.configs = a, suite, tests, configs
        self.cores, self.jiffy = cores, jiffy
        self.ncores = len(set(cores.values()))
        self.by_id = {t.id: t for t in tests}
        self.make = shutil.which("make")

    def warm(self, c):
        """Faults in each launcher and program, and starts c's daemon."""
        for k in {t.kind for t in self.tests}:
            argv = c.mpiexec[k].split() + ["-n", "1", f"./work.{k}", "warm", "1", "1", "0", "0"]
            cp = subprocess.run(argv, cwd=self.suite, env=c.env, capture_output=True, timeout=120)
            if cp.returncode != 0:
                raise BenchError(f"{c.name}: warm-up launch failed ({cp.returncode}): {' '.join(argv)}\n"
                                 f"{cp.stdout.decode(errors='replace')}{cp.stderr.decode(errors='replace')}")

    def run(self, c, rep):
        tag = f"{c.name.replace(':', '-')}.{rep}"
        out = self.suite / "out" / tag
        out.mkdir(parents=True)
        log = self.suite / "logs" / f"{tag}.log"
        log.parent.mkdir(exist_ok=True)
        self.warm(c)
        dpid = daemon_pid(self.jiffy, c.env) if c.jiffy else None
        if c.jiffy and not dpid:
            raise BenchError(f"{c.name}: jiffy's daemon did not start (jiffy status --json shows none)")
        d0 = proc_cpu(dpid) if dpid else None
        spid = shared_pmix_server(dpid) if dpid else None
        s0 = (proc_cpu(spid) or 0) if spid else 0
        argv = [self.make, "-C", str(self.suite), "-j", str(self.a.jobs), "-k", "--no-print-directory",
                f"OUT=out/{tag}", f"SUITE_LOG={log}"] + [f"{MAKE_VAR[k]}={v}" for k, v in c.mpiexec.items()]
        since_ns = time.time_ns()
        idle0 = cpu_idle(self.cores)
        with open(out / "make.stdout", "wb+") as so, open(out / "make.stderr", "wb+") as se:
            wall, cpu, rc = spawn_wait(argv, c.env, so.fileno(), se.fileno(), self.a.timeout)
        machine_idle = cpu_idle(self.cores) - idle0
        d1 = proc_cpu(dpid) if d0 is not None else None
        if c.jiffy and (d1 is None or daemon_pid(self.jiffy, c.env) != dpid):
            print(f"suite_bench: warning: {c.name} rep {rep}: the daemon changed during the run; "
                  f"its CPU is not counted", file=sys.stderr)
            d1 = None
        if rc != 0:
            raise BenchError(self.failures(c, rep, out, rc))
        ranks = parse_log(log.read_text() if log.exists() else "")
        problems = check_log(ranks, self.tests)
        if problems:
            raise BenchError(f"{c.name} rep {rep}: make passed but {len(problems)} test(s) lack rank records:\n  "
                             + "\n  ".join(problems[:10]))
        dcpu = (d1 - d0) if d1 is not None else None
        if dcpu is not None:
            # The shared PMIx server: started by the run's first Open MPI
            # launch (all of its CPU is the run's) or already running.
            s1pid = shared_pmix_server(dpid)
            if s1pid and s1pid == spid:
                dcpu += (proc_cpu(s1pid) or s0) - s0
            elif s1pid and not spid:
                dcpu += proc_cpu(s1pid) or 0
            elif spid:
                print(f"suite_bench: warning: {c.name} rep {rep}: the shared PMIx server changed during the run; "
                      f"its CPU is not counted", file=sys.stderr)
        result = self.analyse(c, rep, wall, cpu + (dcpu or 0), dcpu, ranks)
        result.machine_idle = machine_idle
        if c.jiffy:
            jobs = history_jobs(c.env["XDG_STATE_HOME"], since_ns, set(self.by_id))
            result.parts = idle_parts(jobs, ranks, self.ncores)
            result.gap_parts = gap_split(result.gaps, jobs)
        return result

    def failures(self, c, rep, out, rc):
        err = (out / "make.stderr").read_text(errors="replace")
        fails = [ln for ln in err.splitlines() if ln.startswith("FAIL ")]
        msg = [f"{c.name} rep {rep}: make exited {rc}; {len(fails)} test(s) failed unexpectedly:"]
        msg += [f"  {ln}" for ln in fails] or [f"  (no FAIL line; make's stderr:)\n{err[-3000:]}"]
        for ln in fails[:5]:
            tid = ln.split()[1].rstrip(":")
            f = out / f"{tid}.out"
            if tid in self.by_id and f.exists():
                t = self.by_id[tid]
                msg.append(f"--- {tid}: {t.kind} -n {t.width}, {t.burn_ms} ms, exit {t.code} expected; "
                           f"its output (last 20 lines):")
                msg += f.read_text(errors="replace").splitlines()[-20:]
        return "\n".join(msg)

    def analyse(self, c, rep, wall, tree_cpu, dcpu, ranks):
        gaps, collisions, bound = core_gaps(ranks, self.cores)
        idle, over = machine_usage(ranks, self.ncores)
        floor = sum(r.cputime for r in ranks) / 1e9 / self.ncores
        packing = packing_bound(self.tests, ranks, self.ncores, self.a.jobs, c.slack)
        packing_all = packing_bound(self.tests, ranks, self.ncores, len(self.tests), c.slack)
        return RunResult(rep, wall, tree_cpu, dcpu, floor, idle / 1e9, over / 1e9, gaps, collisions, bound,
                         len(ranks), packing, packing_all)


# ---------------------------------------------------------------- report

def ms(ns):
    return None if ns is None else ns / 1e6


def fmt(x, spec=".2f", none="-"):
    return none if x is None else format(x, spec)


def gap_figures(bench, r):
    """Per-run gap statistics: overall and by kind / width of the next test."""
    ns = [g.ns for g in r.gaps]
    f = {"n": len(ns), "median": ms(quantile(ns, 0.5)), "p90": ms(quantile(ns, 0.9)), "total": sum(ns) / 1e9}
    for k in KINDS:
        f[k] = ms(quantile([g.ns for g in r.gaps if bench.by_id[g.next].kind == k], 0.5))
    for w in sorted({bench.by_id[g.next].width for g in r.gaps}):
        sel = [g.ns for g in r.gaps if bench.by_id[g.next].width == w]
        f[f"w{w}"] = (ms(quantile(sel, 0.5)), ms(quantile(sel, 0.9)), len(sel))
    return f


def summarize(bench, c):
    rs = c.results
    g = [gap_figures(bench, r) for r in rs]
    s = {
        "wall": median([r.wall for r in rs]), "floor": median([r.floor for r in rs]),
        "ratio": median([r.wall / r.floor for r in rs]), "tree_cpu": median([r.tree_cpu for r in rs]),
        "packing": median([r.packing for r in rs]),
        "packing_all": median([r.packing_all for r in rs]),
        "parts": {k: median([r.parts.get(k, 0.0) for r in rs]) for k in [p for p, _ in IDLE_PARTS] + ["busy"]}
        if all(r.parts for r in rs) else {},
        "daemon_cpu": median([r.daemon_cpu for r in rs]), "idle": median([r.idle for r in rs]),
        "machine_idle": median([r.machine_idle for r in rs]),
        "rest_cpu": median([r.tree_cpu - r.floor * bench.ncores for r in rs]),
        "outside": median([r.wall * len(bench.cores) - r.tree_cpu - r.machine_idle for r in rs]),
        "over": median([r.over for r in rs]), "gaps": median([x["n"] for x in g]),
        "gap_median": median([x["median"] for x in g]), "gap_p90": median([x["p90"] for x in g]),
        "gap_total": median([x["total"] for x in g]), "collisions": sum(len(r.collisions) for r in rs),
        "bound": median([r.bound / r.nranks for r in rs]),
    }
    for k in KINDS:
        s[f"gap_{k}"] = median([x[k] for x in g])
        split = [[p for gap, p in r.gap_parts if bench.by_id[gap.next].kind == k] for r in rs]
        s[f"split_{k}"] = {name: (median([ms(quantile([p[name] for p in ps], 0.5)) for ps in split if ps]),
                                  median([ms(sum(p[name] for p in ps) / len(ps)) for ps in split if ps]))
                           for name, _ in GAP_PARTS} if all(split) else {}
    widths = sorted({k for x in g for k in x if k.startswith("w")})
    s["by_width"] = {w: (median([x[w][0] for x in g if w in x]), median([x[w][1] for x in g if w in x]),
                         median([x[w][2] for x in g if w in x])) for w in widths}
    return s, g


def report(bench, a, summaries, elapsed, load0, load1):
    tests = bench.tests
    n = len(tests)
    by_kind = {k: sum(1 for t in tests if t.kind == k) for k in KINDS}
    nominal = sum(t.width * t.burn_ms for t in tests) / 1000 / bench.ncores
    print(f"jiffy: {bench.jiffy}")
    print(f"machine: {bench.ncores} cores allowed ({len(bench.cores)} CPUs of {os.cpu_count()}); "
          f"load average {load0:.2f} at start, {load1:.2f} at end; {elapsed:.0f} s")
    print(f"suite: {n} tests (seed {a.seed}): {by_kind['mpich']} MPICH, {by_kind['ompi']} Open MPI, "
          f"{by_kind['plain']} plain; {sum(t.width > bench.ncores for t in tests)} wider than the machine, "
          f"{sum(t.code != 0 for t in tests)} expected failures; {sum(t.width for t in tests)} ranks; "
          f"burn {sum(t.width * t.burn_ms for t in tests) / 1000:.1f} CPU-s (nominal floor {nominal:.2f} s)")
    if max(load0, load1) >= 1.0:
        # jiffy's ranks are bound and never share a core, the peers' are not: other work on the
        # machine takes a larger share from jiffy than from the peers, so busy-machine ratios mislead
        print(f"WARNING: the machine was busy (load average {max(load0, load1):.2f}): other work competes with "
              f"the suite; compare configurations from a quiet run (bench/wait_quiet.py)")
    print(f"make -j {a.jobs} -k; reps {a.reps}, interleaved (shuffled each round), after {a.warmup} unmeasured; "
          f"MPIEXEC_TIMEOUT={'unset' if a.no_timeout_env else '60'}")
    for c in bench.configs:
        launchers = ", ".join(f"{k}: {v}" for k, v in c.mpiexec.items())
        extra = " ".join(f"{k}={v}" for k, v in c.extra.items())
        print(f"  {c.name:<14} {launchers}{'; ' + extra if extra else ''}")
    print()
    print("medians over reps (wall, floor, CPU in s; idle/over in core-s; gaps in ms; bound = share of ranks "
          "bound to one core)")
    hdr = (f"{'config':<14} {'wall':>7} {'floor':>7} {'w/floor':>7} {'treeCPU':>7} {'daemon':>6} {'idle':>6} "
           f"{'over':>6} {'bound':>5} {'gaps':>5} {'gap med':>7} {'p90':>6} {'total s':>7} {'coll':>4}")
    print(hdr)
    for c in bench.configs:
        s = summaries[c.name][0]
        print(f"{c.name:<14} {s['wall']:7.2f} {s['floor']:7.2f} {s['ratio']:6.2f}x {s['tree_cpu']:7.2f} "
              f"{fmt(s['daemon_cpu'], '6.2f', '     -')} {s['idle']:6.2f} {s['over']:6.2f} {s['bound']:5.0%} "
              f"{fmt(s['gaps'], '5.0f', '    -')} {fmt(s['gap_median'], '7.2f', '      -')} "
              f"{fmt(s['gap_p90'], '6.1f', '     -')} {fmt(s['gap_total'], '7.2f', '      -')} {s['collisions']:4d}")
    print("(gaps and coll count ranks bound to one core only: the share is `bound`; idle/over count all ranks)")
    print()
    print("where each core's time went (core-s, medians; the history's submit/start/end and the ranks' logs: "
          "idle_parts)")
    for c in bench.configs:
        s = summaries[c.name][0]
        if not c.jiffy or not s["parts"]:
            continue
        total = sum(s["parts"].values()) or 1
        print(f"  {c.name:<14} ranks running {s['parts']['busy']:.2f} ({s['parts']['busy'] / total:.0%})")
        for k, what in IDLE_PARTS:
            print(f"  {'':<14} {s['parts'][k]:6.2f} ({s['parts'][k] / total:4.0%})  {what}")
    print()
    print(f"machine time during make (CPU-s of the {len(bench.cores)} allowed CPUs = wall x CPUs, medians): the "
          f"ranks' own CPU, the rest of make's tree (make, shells, diff, launchers, jiffy's daemon and PMIx server), "
          f"idle (/proc/stat), and the remainder (other processes, the hypervisor's steal)")
    for c in bench.configs:
        s = summaries[c.name][0]
        total = s["wall"] * len(bench.cores)
        ranks_cpu = s["floor"] * bench.ncores
        row = [("ranks", ranks_cpu), ("rest of the tree", s["rest_cpu"]), ("idle", s["machine_idle"]),
               ("remainder", s["outside"])]
        print(f"  {c.name:<14} {total:6.2f} = " + " + ".join(f"{what} {v:.2f} ({v / total:.0%})" for what, v in row))
    print()
    print(f"packing bound: the wall of the same tests, as long as their ranks ran, with make -j {a.jobs}, cores "
          f"never shared, launching free and each configuration's backfill slack (packing_bound)")
    for c in bench.configs:
        if not c.jiffy:
            continue
        s = summaries[c.name][0]
        print(f"  {c.name:<14} bound {s['packing']:.2f} s = {s['packing'] / s['floor']:.2f}x floor; wall / bound "
              f"{s['wall'] / s['packing']:.2f}x (launching, make, shell and diff); with make's lookahead "
              f"unlimited {s['packing_all']:.2f} s = {s['packing_all'] / s['floor']:.2f}x floor")
    print()
    print("median core gap (ms) by the next test's kind and width (p90, count)")
    for c in bench.configs:
        s = summaries[c.name][0]
        if not s["gaps"]:
            print(f"  {c.name:<14} no per-core gaps (no two tests' bound ranks followed each other on a core)")
            continue
        kinds = "  ".join(f"{k} {fmt(s['gap_' + k])}" for k in KINDS)
        widths = "  ".join(f"-n {w[1:]} {fmt(v[0])} ({fmt(v[1], '.1f')}, {fmt(v[2], '.0f')})"
                           for w, v in s["by_width"].items())
        print(f"  {c.name:<14} {kinds}   {widths}")
    for c in bench.configs:
        s = summaries[c.name][0]
        if not c.jiffy or not any(s[f"split_{k}"] for k in KINDS):
            continue
        print(f"  {c.name:<14} each gap cut at the history's times (gap_split), ms, median / mean:")
        for name, what in GAP_PARTS:
            row = "  ".join(f"{k} {fmt(s['split_' + k].get(name, (None, None))[0])} / "
                            f"{fmt(s['split_' + k].get(name, (None, None))[1])}" for k in KINDS)
            print(f"  {'':<14} {name:<8} {row}   {what}")
    if a.verbose:
        print()
        print("per rep")
        for c in bench.configs:
            for r, g in zip(c.results, summaries[c.name][1]):
                print(f"  {c.name:<14} rep {r.rep}: wall {r.wall:.2f} floor {r.floor:.2f} ({r.wall / r.floor:.2f}x) "
                      f"tree CPU {r.tree_cpu:.2f} daemon {fmt(r.daemon_cpu)} idle {r.idle:.2f} over {r.over:.2f} "
                      f"gaps {g['n']} median {fmt(g['median'])} p90 {fmt(g['p90'])} total {g['total']:.2f} "
                      f"collisions {len(r.collisions)}")
    for c in bench.configs:
        for r in c.results:
            if c.jiffy and r.collisions:
                print(f"\n{c.name} rep {r.rep}: {len(r.collisions)} collision(s):")
                for x in r.collisions[:20]:
                    print(f"  core {x.core}: {x.a.test} rank {x.a.rank} (cpus {sorted(x.a.cpus)}) and "
                          f"{x.b.test} rank {x.b.rank} overlap {x.overlap_ns() / 1e6:.2f} ms")
    return targets(bench, summaries)


def targets(bench, summaries):
    print()
    print("targets (issue 10)")
    peers = summaries.get("peers", (None,))[0]
    missed = 0
    for c in bench.configs:
        if not c.jiffy:
            continue
        s = summaries[c.name][0]
        rows = [(f"wall / CPU floor {s['ratio']:.2f}x", "<= 1.1x", s["ratio"] <= 1.1)]
        if peers:
            r = s["wall"] / peers["wall"]
            rows.append((f"wall / peers' wall {r:.2f}x", "<= 0.8x", r <= 0.8))
        for k, lim in (("plain", 3), ("mpich", 6)):
            v = s[f"gap_{k}"]
            rows.append((f"median core gap before {k} tests {fmt(v)} ms", f"<= {lim} ms",
                         None if v is None else v <= lim))
        rows.append((f"collisions {s['collisions']}", "0", s["collisions"] == 0))
        for what, tgt, ok in rows:
            verdict = "n/a" if ok is None else ("PASS" if ok else "FAIL")
            missed += ok is False
            print(f"  {c.name:<14} {what:<48} {tgt:>9}  {verdict}")
    return missed


# ---------------------------------------------------------------- main

def parse_variant(text):
    name, sep, assigns = text.partition(":")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name == "peers":
        raise argparse.ArgumentTypeError(f"--variant {text!r}: expected NAME:VAR=VALUE[,VAR=VALUE]")
    env = {}
    for part in assigns.split(","):
        var, eq, val = part.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
            raise argparse.ArgumentTypeError(f"--variant {text!r}: {part!r} is not VAR=VALUE")
        env[var] = val
    return name, env


def parse_mix(text):
    parts = text.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts) or sum(int(p) for p in parts) == 0:
        raise argparse.ArgumentTypeError("--mix MPICH,OMPI,PLAIN: three percentages, e.g. 40,30,30")
    return dict(zip(KINDS, (int(p) for p in parts)))


def base_env(a):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(SCRUB_PREFIXES) and k not in SCRUB_NAMES}
    if not a.no_timeout_env:
        env["MPIEXEC_TIMEOUT"] = "60"  # as PETSc's harness sets it on every launch
    return env


def make_configs(a, jiffy, kinds, env, tmp):
    configs = []
    for name, extra in [("jiffy", {})] + [(f"jiffy:{n}", e) for n, e in a.variant]:
        rdir = tempfile.mkdtemp(prefix="rt-", dir=tmp)
        os.chmod(rdir, 0o700)
        state = tempfile.mkdtemp(prefix="state-", dir=tmp)
        cenv = dict(env, JIFFY_RUNTIME_DIR=rdir, XDG_STATE_HOME=state, **extra)
        configs.append(Config(name, True, {k: jiffy for k in kinds}, cenv, extra))
    if a.no_peers:
        return configs, ["peers (--no-peers)"]
    hydra, mpirun = shutil.which("mpiexec.hydra"), shutil.which("mpirun.openmpi")
    missing = [n for n, p in (("mpiexec.hydra", hydra), ("mpirun.openmpi", mpirun)) if not p]
    if ("mpich" in kinds or "plain" in kinds) and not hydra or "ompi" in kinds and not mpirun:
        return configs, [f"peers: {', '.join(missing)} not installed"]
    ompi = f"{mpirun}{' --allow-run-as-root' if os.geteuid() == 0 else ''} --oversubscribe"
    peers = {k: (ompi if k == "ompi" else hydra) for k in kinds}
    configs.append(Config("peers", False, peers, dict(env)))
    return configs, []


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tests", type=int, default=200, help="tests in the suite (default 200)")
    ap.add_argument("--seed", type=int, default=1, help="the suite's seed (default 1)")
    ap.add_argument("--reps", type=int, default=3, help="runs of each configuration (default 3)")
    ap.add_argument("--warmup", type=int, default=0,
                    help="unmeasured whole runs of each configuration first (default 0); each jiffy daemon "
                         "keeps their history, as a maintainer's daemon keeps that of earlier suite runs")
    ap.add_argument("--jobs", type=int, help="make -j (default 2x the allowed cores)")
    ap.add_argument("--mix", type=parse_mix, default=parse_mix("40,30,30"),
                    help="percent of MPICH, Open MPI and plain tests (default 40,30,30)")
    ap.add_argument("--wide", type=float, default=0.03, help="share of tests wider than the machine (default 0.03)")
    ap.add_argument("--fail", type=float, default=0.03, help="share of expected failures (default 0.03)")
    ap.add_argument("--variant", type=parse_variant, action="append", default=[], metavar="NAME:VAR=VALUE[,...]",
                    help="also run jiffy with this extra environment (repeatable)")
    ap.add_argument("--no-peers", action="store_true", help="skip the mpiexec.hydra/mpirun configuration")
    ap.add_argument("--no-timeout-env", action="store_true", help="do not set MPIEXEC_TIMEOUT=60")
    ap.add_argument("--timeout", type=float, default=900, help="seconds before one make run counts as hung")
    ap.add_argument("--quick", action="store_true", help="30 tests, 1 rep (a smoke run)")
    ap.add_argument("--keep", metavar="DIR", help="generate the suite in DIR and keep it (logs, outputs)")
    ap.add_argument("--jiffy", help="jiffy binary (default: $JIFFY_BUILD_DIR or <repo>/build/jiffy)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures of every run to FILE")
    ap.add_argument("-v", "--verbose", action="store_true", help="figures of every rep too")
    ap.add_argument("--strict", action="store_true", help="exit 3 when a target is missed")
    ap.add_argument("--self-test", action="store_true", help="check the analysis on hand-made intervals, then exit")
    a = ap.parse_args()
    if a.self_test:
        return self_test()
    if a.quick:
        a.tests, a.reps = 30, 1
    # the cores the launchers may use: this process's allowed CPUs, hyperthreads of one core counted once
    cores = core_map(sorted(os.sched_getaffinity(0)))
    ncores = len(set(cores.values()))
    a.jobs = a.jobs or 2 * ncores
    if a.tests < 1 or a.reps < 1 or a.jobs < 1 or a.warmup < 0:
        ap.error("--tests, --reps and --jobs must be at least 1, --warmup at least 0")
    jiffy = find_jiffy(a.jiffy)
    if not os.access(jiffy, os.X_OK):
        sys.exit(f"suite_bench: jiffy not found at {jiffy} (build it or pass --jiffy)")

    notes = []
    mix = dict(a.mix)
    for k, cc in (("mpich", "mpicc.mpich"), ("ompi", "mpicc.openmpi")):
        if mix[k] and not shutil.which(cc):
            notes.append(f"{k} tests: {cc} not installed")
            mix[k] = 0
    if not shutil.which("gcc") or not shutil.which("make"):
        sys.exit("suite_bench: needs gcc and make")
    tests = generate(a.tests, a.seed, ncores, mix, a.wide, a.fail)
    kinds = sorted({t.kind for t in tests}, key=KINDS.index)

    if a.keep and Path(a.keep).exists() and any(Path(a.keep).iterdir()):
        sys.exit(f"suite_bench: --keep {a.keep}: not empty")
    tmp = tempfile.mkdtemp(prefix="jfsuite-daemons-", dir="/tmp")  # the daemons' directories, always removed
    suite = Path(a.keep).resolve() if a.keep else Path(tempfile.mkdtemp(prefix="jfsuite-", dir="/tmp"))
    suite.mkdir(parents=True, exist_ok=True)
    env = base_env(a)
    # Open MPI's session directories in a private base, for every configuration alike: concurrent
    # mpiruns of other users of /tmp/ompi.<host>.<uid> (another suite, a test run) remove it under
    # each other ("orte_session_dir failed ... File exists")
    env["OMPI_MCA_orte_tmpdir_base"] = tempfile.mkdtemp(prefix="ompi-", dir=tmp)
    configs, skipped = make_configs(a, jiffy, kinds, env, tmp)
    notes += skipped
    keep = bool(a.keep)
    load0 = os.getloadavg()[0]
    t_start = time.monotonic()
    bench = Bench(a, suite, tests, configs, cores, jiffy)
    try:
        build_programs(suite, kinds)
        write_suite(suite, tests, " ".join(sys.argv[1:]))
        rnd = random.Random(a.seed)
        for w in range(a.warmup):  # unmeasured, but the daemons remember them (history)
            for c in configs:
                bench.run(c, f"warmup{w}")
        for rep in range(a.reps):
            order = list(configs)
            rnd.shuffle(order)
            for c in order:
                c.results.append(bench.run(c, rep))
    except (BenchError, OSError, subprocess.SubprocessError) as e:
        print(f"suite_bench: ABORTED: {e}", file=sys.stderr)
        print(f"suite_bench: the suite, its outputs and logs are kept in {suite}", file=sys.stderr)
        keep = True
        return 1
    finally:
        for c in configs:
            if c.jiffy:
                try:
                    subprocess.run([jiffy, "stop"], env=c.env, capture_output=True, timeout=30)
                except (OSError, subprocess.TimeoutExpired) as e:
                    print(f"suite_bench: warning: jiffy stop failed ({c.name}): {e}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
        if not keep:
            shutil.rmtree(suite, ignore_errors=True)
    summaries = {c.name: summarize(bench, c) for c in configs}
    for n in notes:
        print(f"skipped: {n}")
    missed = report(bench, a, summaries, time.monotonic() - t_start, load0, os.getloadavg()[0])
    if a.keep:
        print(f"\nsuite kept in {suite}")
    if a.json:
        dump = {c.name: {"summary": {k: v for k, v in summaries[c.name][0].items()},
                         "reps": [dict(rep=r.rep, wall=r.wall, floor=r.floor, tree_cpu=r.tree_cpu,
                                       daemon_cpu=r.daemon_cpu, idle=r.idle, over=r.over,
                                       machine_idle=r.machine_idle, packing=r.packing,
                                       gaps_ns=[g.ns for g in r.gaps], collisions=len(r.collisions))
                                  for r in c.results]} for c in configs}
        Path(a.json).write_text(json.dumps(dump, indent=1, default=str))
    return 3 if a.strict and missed else 0


# ---------------------------------------------------------------- self-test

MS = 1_000_000


def R(test, start_ms, end_ms, cpus, rank=0, cputime_ms=0):
    return Rank(test, rank, 1, int(start_ms * MS), int(end_ms * MS), frozenset(cpus), int(cputime_ms * MS), 0)


class AnalysisTest(unittest.TestCase):
    CORES = {0: 0, 1: 1}

    def test_idle_parts_follow_one_core_from_test_to_test(self):
        # a: submitted 0, spawned 0.5, ranks 1..10, reaped 11; b: submitted 5 (waits:
        # the core is a's), spawned 11.5, ranks 12..20, reaped 21. Counted from the
        # first rank's start to the last one's end.
        ranks = [R("a", 1, 10, [0]), R("b", 12, 20, [0])]
        jobs = [("a", 0, int(0.5 * MS), 11 * MS, [0]), ("b", 5 * MS, int(11.5 * MS), 21 * MS, [0])]
        got = {k: round(v * 1e3, 3) for k, v in idle_parts(jobs, ranks, 1).items()}
        self.assertEqual(got, {"busy": 17, "reap": 1, "launch": 0.5, "spawn": 0.5, "packing": 0, "reserved": 0,
                               "make": 0})

    def test_idle_parts_name_packing_and_make(self):
        # two cores: a (1 wide) runs 0..10 on core 0; w (2 wide) waits from 2 and runs 10..20;
        # nothing is submitted on core 1 before 2
        ranks = [R("a", 0, 10, [0]), R("w", 10, 20, [0]), R("w", 10, 20, [1], 1)]
        jobs = [("a", 0, 0, 10 * MS, [0]), ("w", 2 * MS, 10 * MS, 20 * MS, [0, 1])]
        got = {k: round(v * 1e3, 3) for k, v in idle_parts(jobs, ranks, 2).items()}
        self.assertEqual(got, {"busy": 30, "make": 2, "packing": 8, "reserved": 0, "launch": 0, "spawn": 0,
                               "reap": 0})

    def test_idle_parts_name_a_reservation(self):
        # as above, and b (1 wide, submitted at 3) waits behind w until w ends
        ranks = [R("a", 0, 10, [0]), R("w", 10, 20, [0]), R("w", 10, 20, [1], 1), R("b", 20, 25, [0])]
        jobs = [("a", 0, 0, 10 * MS, [0]), ("w", 2 * MS, 10 * MS, 20 * MS, [0, 1]),
                ("b", 3 * MS, 20 * MS, 25 * MS, [0])]
        got = {k: round(v * 1e3, 3) for k, v in idle_parts(jobs, ranks, 2).items()}
        self.assertEqual((got["packing"], got["reserved"], got["make"]), (1, 7, 2 + 5))

    def test_packing_bound_fills_both_cores(self):
        tests = [Test(f"t{i}", "plain", 1, 0, 0, 0) for i in range(4)]
        ranks = [R(f"t{i}", 0, 10, [0]) for i in range(4)]  # each ran 10 ms
        self.assertAlmostEqual(packing_bound(tests, ranks, 2, 4), 0.020)
        self.assertAlmostEqual(packing_bound(tests, ranks, 2, 1), 0.040)  # make -j1: one at a time

    def test_packing_bound_backfills_only_what_ends_before_the_head(self):
        # a (10 ms) and b (100 ms) start; c needs both cores: reserved from b's end
        # (100 ms); d (50 ms) fits on a's core before that, e (95 ms) would not
        t = lambda i, w: Test(i, "plain", w, 0, 0, 0)
        tests = [t("a", 1), t("b", 1), t("c", 2), t("d", 1), t("e", 1)]
        ranks = [R("a", 0, 10, [0]), R("b", 0, 100, [1]), R("c", 0, 10, [0]), R("c", 0, 10, [1], 1),
                 R("d", 0, 50, [0]), R("e", 0, 95, [0])]
        # d runs 10..60; c 100..110; e after c: 110..205
        self.assertAlmostEqual(packing_bound(tests, ranks, 2, 5), 0.205)

    def test_packing_bound_with_a_slack_lets_a_test_end_by_the_heads_deadline(self):
        # as above, with slack 1: c's deadline, fixed at 10 when d is timed, is
        # 10 + 2 x (100 - 10) = 190; d runs 10..60, then e 60..155 (it ends by
        # 190, though after c's shadow), then c 155..165
        t = lambda i, w: Test(i, "plain", w, 0, 0, 0)
        tests = [t("a", 1), t("b", 1), t("c", 2), t("d", 1), t("e", 1)]
        ranks = [R("a", 0, 10, [0]), R("b", 0, 100, [1]), R("c", 0, 10, [0]), R("c", 0, 10, [1], 1),
                 R("d", 0, 50, [0]), R("e", 0, 95, [0])]
        self.assertAlmostEqual(packing_bound(tests, ranks, 2, 5, slack=1), 0.165)
        self.assertAlmostEqual(packing_bound(tests, ranks, 2, 5, slack=0), 0.205)

    def test_packing_bound_runs_a_wide_test_alone(self):
        t = lambda i, w: Test(i, "plain", w, 0, 0, 0)
        tests = [t("a", 1), t("w", 3), t("b", 1)]
        ranks = [R("a", 0, 10, [0]), R("w", 0, 30, [0, 1]), R("b", 0, 5, [1])]
        # a 0..10 and b 0..5 (b ends before w could start: backfilled); w 10..40
        self.assertAlmostEqual(packing_bound(tests, ranks, 2, 3), 0.040)

    def test_gap_split_cuts_a_gap_at_the_history_times(self):
        # a's rank ends at 10, a reaped at 10.5; b submitted at 5 (waiting), spawned
        # at 11, its rank starts at 14: exit 0.5, make 0, handoff 0.5, load 3
        gaps, _, _ = core_gaps([R("a", 0, 10, [0]), R("b", 14, 20, [0])], self.CORES)
        jobs = [("a", 0, 0, int(10.5 * MS), [0]), ("b", 5 * MS, 11 * MS, 21 * MS, [0])]
        ((g, parts),) = gap_split(gaps, jobs)
        self.assertEqual(parts, {"exit": MS // 2, "make": 0, "handoff": MS // 2, "load": 3 * MS})
        # b's launcher started only at 12 (make's own work after a ended): make 1.5, handoff 0
        jobs[1] = ("b", 12 * MS, 13 * MS, 21 * MS, [0])
        ((g, parts),) = gap_split(gaps, jobs)
        self.assertEqual(parts, {"exit": MS // 2, "make": int(1.5 * MS), "handoff": MS, "load": MS})
        self.assertEqual(sum(parts.values()), g.ns)

    def test_gap_between_tests_on_one_core(self):
        gaps, coll, bound = core_gaps([R("a", 0, 10, [0]), R("b", 13, 20, [0]), R("c", 20, 30, [0])], self.CORES)
        self.assertEqual([(g.core, g.ns, g.prev, g.next) for g in gaps], [(0, 3 * MS, "a", "b")])
        self.assertEqual((coll, bound), ([], 3))

    def test_cores_are_separate_timelines(self):
        gaps, _, _ = core_gaps([R("a", 0, 10, [0]), R("b", 5, 12, [1]), R("c", 11, 20, [0]),
                                R("d", 20, 25, [1])], self.CORES)
        self.assertEqual(sorted((g.core, g.ns) for g in gaps), [(0, 1 * MS), (1, 8 * MS)])

    def test_ranks_of_one_test_are_not_gaps_or_collisions(self):
        gaps, coll, _ = core_gaps([R("a", 0, 10, [0], 0), R("a", 12, 15, [0], 1)], self.CORES)
        self.assertEqual((gaps, coll), ([], []))

    def test_gap_counts_from_the_latest_end(self):
        # b ends inside a's interval (same core: a collision); c's gap is from a's end
        gaps, coll, _ = core_gaps([R("a", 0, 10, [0]), R("b", 2, 4, [0]), R("c", 12, 14, [0])], self.CORES)
        self.assertEqual([(g.ns, g.prev) for g in gaps], [(2 * MS, "a")])
        self.assertEqual(len(coll), 1)
        self.assertEqual(coll[0].overlap_ns(), 2 * MS)

    def test_collisions_count_every_overlapping_pair(self):
        _, coll, _ = core_gaps([R("a", 0, 10, [1]), R("b", 5, 20, [1]), R("c", 8, 9, [1]),
                                R("d", 10, 11, [1])], self.CORES)
        self.assertEqual(sorted((x.a.test, x.b.test) for x in coll), [("a", "b"), ("a", "c"), ("b", "c"), ("b", "d")])

    def test_touching_intervals_are_neither(self):
        gaps, coll, _ = core_gaps([R("a", 0, 10, [0]), R("b", 10, 20, [0])], self.CORES)
        self.assertEqual((gaps, coll), ([], []))

    def test_unbound_ranks_fill_the_gaps_they_cover(self):
        # a wide job (ranks on both cores) runs 12..18 between a and b on core 0
        ranks = [R("a", 0, 10, [0]), R("w", 12, 18, [0, 1], 0), R("w", 12, 17, [0, 1], 1), R("b", 20, 30, [0])]
        gaps, coll, bound = core_gaps(ranks, self.CORES)
        self.assertEqual([g.ns for g in gaps], [4 * MS])  # 10..12 and 18..20
        self.assertEqual((coll, bound), ([], 2))

    def test_unbound_ranks_alone_have_no_core_gaps(self):
        gaps, coll, bound = core_gaps([R("a", 0, 10, [0, 1]), R("b", 20, 30, [0, 1])], self.CORES)
        self.assertEqual((gaps, coll, bound), ([], [], 0))

    def test_hyperthreads_of_one_core_are_one_core(self):
        cores = {0: 0, 1: 0, 2: 2, 3: 2}
        gaps, coll, bound = core_gaps([R("a", 0, 10, [0, 1]), R("b", 11, 20, [1]), R("c", 5, 15, [2, 3])], cores)
        self.assertEqual([(g.core, g.ns) for g in gaps], [(0, 1 * MS)])
        self.assertEqual((coll, bound), ([], 3))

    def test_machine_idle_and_oversubscription(self):
        # 2 cores: 0..10 one rank (10 idle core-ms), 10..20 three ranks (10 over), 20..30 none (20 idle)
        ranks = [R("a", 0, 20, [0, 1]), R("b", 10, 20, [0, 1]), R("c", 10, 20, [0, 1]), R("d", 30, 40, [0, 1])]
        idle, over = machine_usage(ranks, 2)
        self.assertEqual((idle, over), ((10 + 20 + 10) * MS, 10 * MS))

    def test_log_lines_parse_and_missing_ranks_are_found(self):
        text = ("id=t0001 rank=1 size=2 pid=7 start=100 end=200 cpus=1 cpu=1 cputime=90 burn=80 rc=0\n"
                "id=t0001 rank=0 size=2 pid=6 start=90 end=210 cpus=0,1 cpu=0 cputime=95 burn=80 rc=0\n"
                "id=t0002 rank=0 size=1 pid=8 start=300 end=400 cpus=0 cpu=0 cputime=10 burn=5 rc=3\n")
        ranks = parse_log(text)
        self.assertEqual(ranks[1].cpus, frozenset({0, 1}))
        self.assertEqual(ranks[2].cputime, 10)
        tests = [Test("t0001", "mpich", 2, 1, 0, 0), Test("t0002", "plain", 1, 1, 0, 3),
                 Test("t0003", "ompi", 2, 1, 0, 0)]
        self.assertEqual(len(check_log(ranks, tests)), 1)
        self.assertIn("t0003", check_log(ranks, tests)[0])
        with self.assertRaises(BenchError):
            parse_log("id=t1 rank=x\n")

    def test_generator_is_seeded_and_shaped(self):
        mix = dict(zip(KINDS, (40, 30, 30)))
        a = generate(2000, 7, 2, mix, 0.03, 0.03)
        self.assertEqual(a, generate(2000, 7, 2, mix, 0.03, 0.03))
        self.assertNotEqual(a, generate(2000, 8, 2, mix, 0.03, 0.03))
        self.assertTrue(all(1 <= t.width <= 4 and 5 <= t.burn_ms <= 100 for t in a))
        self.assertTrue(all(t.width == 1 for t in a if t.code))
        wide = sum(t.width > 2 for t in a) / len(a)
        self.assertTrue(0.01 < wide < 0.06, wide)
        share = {k: sum(t.kind == k for t in a) / len(a) for k in KINDS}
        self.assertTrue(0.35 < share["mpich"] < 0.45 and 0.25 < share["plain"] < 0.35, share)

    def test_a_small_suite_has_a_wide_test_and_an_expected_failure(self):
        mix = dict(zip(KINDS, (40, 30, 30)))
        for seed in range(20):
            t = generate(10, seed, 2, mix, 0.03, 0.03)
            self.assertTrue(any(x.width > 2 for x in t) and any(x.code and x.width == 1 for x in t), seed)


def self_test():
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(AnalysisTest)
    ok = unittest.TextTestRunner(verbosity=2).run(suite).wasSuccessful()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
