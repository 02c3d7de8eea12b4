#!/usr/bin/python3
"""Launch cost of jiffy against a bare fork/exec, MPICH's mpiexec.hydra and
Open MPI's mpirun.

    /usr/bin/python3 bench/launch_bench.py [--reps N] [--batch N] [--quick]

What it measures, in one run with the commands interleaved (so machine noise
hits all of them alike):

  single launches   wall (perf_counter around spawn + wait4) and CPU
                    (user+sys of the child and everything it reaped, from
                    wait4's rusage) of
                      /bin/true                                   (bare)
                      jiffy -n 1 /bin/true                        (daemon warm; the
                                                                  front takes a lent slot)
                      the same with JIFFY_LANE=0                  (the front asks the
                                                                  daemon and waits)
                      the same with JIFFY_FAST=0                  (no front: the C++
                                                                  launcher does it all)
                      the same with MPIEXEC_TIMEOUT=60            (as PETSc's harness
                                                                  launches: the front
                                                                  keeps it)
                      mpiexec.hydra -n 1 /bin/true                (if installed)
                      mpirun.openmpi --allow-run-as-root -n 1 /bin/true
                                                                  (if installed, fewer reps)
                    jiffy's daemon is not a child of the launcher, so its CPU
                    is read from /proc/<pid>/stat around the jiffy runs and
                    reported per launch as well ("+daemon").
  batches           N back-to-back launches of -n 1, N back-to-back of -n 4,
                    and N launches as 4 concurrent streams of -n 1: total wall
                    and total CPU, jiffy against hydra (and bare for -n 1).

Targets (issue 2): jiffy at most 2x the bare fork/exec and at least 4x faster
than hydra, on wall and on CPU. Issue 10: with MPIEXEC_TIMEOUT=60 within 1.1x
of without it, on wall.

The script uses its own JIFFY_RUNTIME_DIR (a fresh private directory), so
the daemon it starts is its own; it stops it at the end. Standard library only.
"""

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def find_jiffy(arg):
    if arg:
        return str(Path(arg).resolve())
    build = Path(os.environ.get("JIFFY_BUILD_DIR") or REPO / "build")
    return str((build / "jiffy").resolve())


class Runner:
    def __init__(self, env):
        self.env = env
        self.devnull = os.open(os.devnull, os.O_RDWR)

    def once(self, argv):
        """(wall seconds, cpu seconds, exit status) of one whole command."""
        fa = [(os.POSIX_SPAWN_DUP2, self.devnull, 0), (os.POSIX_SPAWN_DUP2, self.devnull, 1),
              (os.POSIX_SPAWN_DUP2, self.devnull, 2)]
        t0 = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, self.env, file_actions=fa)
        _, status, ru = os.wait4(pid, 0)
        wall = time.perf_counter() - t0
        return wall, ru.ru_utime + ru.ru_stime, os.waitstatus_to_exitcode(status)


def proc_cpu(pid):
    """utime+stime of pid (and its reaped children) in seconds, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        fields = s[s.rindex(")") + 2:].split()
        # fields[11..14] = utime stime cutime cstime (stat fields 14..17)
        return sum(int(x) for x in fields[11:15]) / CLK_TCK
    except (OSError, ValueError):
        return None


def daemon_pid(jiffy, env):
    import json
    cp = subprocess.run([jiffy, "status", "--json"], env=env, capture_output=True, text=True, timeout=10)
    try:
        d = json.loads(cp.stdout).get("daemon")
        return d["pid"] if d else None
    except (ValueError, AttributeError, KeyError):
        return None


def median_ms(xs):
    return statistics.median(xs) * 1000 if xs else float("nan")


def fmt_ratio(x):
    return "n/a" if x is None or x != x else f"{x:.2f}x"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=200, help="single launches per command (default 200)")
    ap.add_argument("--batch", type=int, default=500, help="launches per batch (default 500)")
    ap.add_argument("--ompi-reps", type=int, default=None, help="mpirun.openmpi reps (default reps/10)")
    ap.add_argument("--quick", action="store_true", help="reps 30, batch 100")
    ap.add_argument("--jiffy", help="jiffy binary (default: $JIFFY_BUILD_DIR or <repo>/build/jiffy)")
    ap.add_argument("--no-ompi", action="store_true", help="skip mpirun.openmpi")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.quick:
        a.reps, a.batch = 30, 100
    ompi_reps = a.ompi_reps if a.ompi_reps is not None else max(5, a.reps // 10)

    jiffy = find_jiffy(a.jiffy)
    if not os.access(jiffy, os.X_OK):
        sys.exit(f"launch_bench: jiffy not found at {jiffy} (build it or pass --jiffy)")
    true = shutil.which("true", path="/bin:/usr/bin")
    hydra = shutil.which("mpiexec.hydra")
    ompi = None if a.no_ompi else shutil.which("mpirun.openmpi")

    rdir = tempfile.mkdtemp(prefix="jfbench-", dir="/tmp")
    os.chmod(rdir, 0o700)
    env = dict(os.environ)
    for v in ("MPIEXEC_TIMEOUT", "JIFFY_RUNTIME_DIR"):
        env.pop(v, None)
    env["JIFFY_RUNTIME_DIR"] = rdir
    env_ompi = dict(env, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    r = Runner(env)
    r_ompi = Runner(env_ompi)
    r_nofront = Runner(dict(env, JIFFY_FAST="0"))
    r_ask = Runner(dict(env, JIFFY_LANE="0"))
    r_timeout = Runner(dict(env, MPIEXEC_TIMEOUT="60"))
    runners = {"ompi": r_ompi, "nofront": r_nofront, "ask": r_ask, "timeout": r_timeout}

    cmds = {
        "bare": [true],
        "jiffy": [jiffy, "-n", "1", true],
        "ask": [jiffy, "-n", "1", true],
        "nofront": [jiffy, "-n", "1", true],
        "timeout": [jiffy, "-n", "1", true],
    }
    if hydra:
        cmds["hydra"] = [hydra, "-n", "1", true]
    if ompi:
        cmds["ompi"] = [ompi, "--allow-run-as-root", "-n", "1", true]
    labels = {"bare": "/bin/true (bare fork/exec)", "jiffy": "jiffy -n 1 /bin/true",
              "ask": "  same, JIFFY_LANE=0 (asks)",
              "nofront": "  same, JIFFY_FAST=0 (no front)",
              "timeout": "  same, MPIEXEC_TIMEOUT=60",
              "hydra": "mpiexec.hydra -n 1 /bin/true",
              "ompi": "mpirun.openmpi -n 1 /bin/true"}

    try:
        # warm up: start the daemon, fault in the binaries
        for _ in range(10):
            for k, c in cmds.items():
                if k != "ompi":
                    runners.get(k, r).once(c)
        dpid = daemon_pid(jiffy, env)
        if not dpid:
            sys.exit("launch_bench: jiffy's daemon did not start")

        # ---- single launches, interleaved
        wall = {k: [] for k in cmds}
        cpu = {k: [] for k in cmds}
        fails = {k: 0 for k in cmds}
        daemon_cpu = 0.0
        rnd = random.Random(a.seed)
        for i in range(a.reps):
            order = [k for k in cmds if k != "ompi" or i < ompi_reps]
            rnd.shuffle(order)
            for k in order:
                runner = runners.get(k, r)
                if k == "jiffy":
                    d0 = proc_cpu(dpid)
                w, c, rc = runner.once(cmds[k])
                if k == "jiffy":
                    d1 = proc_cpu(dpid)
                    if d0 is not None and d1 is not None:
                        daemon_cpu += d1 - d0
                if rc != 0:
                    fails[k] += 1
                    continue
                wall[k].append(w)
                cpu[k].append(c)
        daemon_per_launch = daemon_cpu / max(1, a.reps)

        # ---- batches
        def batch_serial(argv, n):
            d0 = proc_cpu(dpid)
            t0 = time.perf_counter()
            tot_cpu, bad = 0.0, 0
            for _ in range(n):
                _, c, rc = r.once(argv)
                tot_cpu += c
                bad += rc != 0
            w = time.perf_counter() - t0
            d1 = proc_cpu(dpid)
            return w, tot_cpu, bad, (d1 - d0) if (d0 is not None and d1 is not None) else 0.0

        def batch_streams(argv, n, streams=4):
            per = [n // streams + (1 if s < n % streams else 0) for s in range(streams)]
            res = [[0.0, 0] for _ in range(streams)]

            def go(s):
                for _ in range(per[s]):
                    _, c, rc = r.once(argv)
                    res[s][0] += c
                    res[s][1] += rc != 0

            d0 = proc_cpu(dpid)
            ts = [threading.Thread(target=go, args=(s,)) for s in range(streams)]
            t0 = time.perf_counter()
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            w = time.perf_counter() - t0
            d1 = proc_cpu(dpid)
            return (w, sum(x[0] for x in res), sum(x[1] for x in res),
                    (d1 - d0) if (d0 is not None and d1 is not None) else 0.0)

        batches = []  # (label, who, wall, cpu, fails, daemon cpu)
        n = a.batch
        plan = [("-n 1 back-to-back", "bare", lambda: batch_serial([true], n)),
                ("-n 1 back-to-back", "jiffy", lambda: batch_serial([jiffy, "-n", "1", true], n)),
                ("-n 4 back-to-back", "jiffy", lambda: batch_serial([jiffy, "-n", "4", true], n)),
                ("4 streams of -n 1", "bare", lambda: batch_streams([true], n)),
                ("4 streams of -n 1", "jiffy", lambda: batch_streams([jiffy, "-n", "1", true], n))]
        if hydra:
            plan += [("-n 1 back-to-back", "hydra", lambda: batch_serial([hydra, "-n", "1", true], n)),
                     ("-n 4 back-to-back", "hydra", lambda: batch_serial([hydra, "-n", "4", true], n)),
                     ("4 streams of -n 1", "hydra", lambda: batch_streams([hydra, "-n", "1", true], n))]
        # interleave jiffy and hydra batches: same label back to back
        plan.sort(key=lambda p: ["-n 1 back-to-back", "-n 4 back-to-back", "4 streams of -n 1"].index(p[0]))
        for label, who, fn in plan:
            w, c, bad, dc = fn()
            batches.append((label, who, w, c, bad, dc if who == "jiffy" else 0.0))
    finally:
        subprocess.run([jiffy, "stop"], env=env, capture_output=True, timeout=30)
        shutil.rmtree(rdir, ignore_errors=True)

    # ---- report
    print(f"jiffy: {jiffy}")
    print(f"machine: {os.cpu_count()} CPUs; reps {a.reps} (mpirun.openmpi {ompi_reps}); batch {a.batch}")
    print()
    print("Single launches (medians)")
    print(f"{'command':<34} {'wall ms':>9} {'CPU ms':>9} {'runs':>6} {'failed':>7}")
    for k in cmds:
        print(f"{labels[k]:<34} {median_ms(wall[k]):9.2f} {median_ms(cpu[k]):9.2f} {len(wall[k]):6d} {fails[k]:7d}")
    jw, jc = median_ms(wall["jiffy"]), median_ms(cpu["jiffy"])
    jcd = jc + daemon_per_launch * 1000
    print(f"{'jiffy daemon CPU per launch':<34} {'':9} {daemon_per_launch * 1000:9.2f}")
    print(f"{'jiffy launcher + daemon CPU':<34} {'':9} {jcd:9.2f}")
    print()
    bw, bc = median_ms(wall["bare"]), median_ms(cpu["bare"])
    rows = [("jiffy / bare", "wall", jw / bw if bw else None, "<= 2", lambda x: x <= 2),
            ("jiffy / bare", "CPU", jc / bc if bc else None, "<= 2", lambda x: x <= 2),
            ("jiffy+daemon / bare", "CPU", jcd / bc if bc else None, "<= 2", lambda x: x <= 2)]
    if hydra:
        hw, hc = median_ms(wall["hydra"]), median_ms(cpu["hydra"])
        rows += [("hydra / jiffy", "wall", hw / jw if jw else None, ">= 4", lambda x: x >= 4),
                 ("hydra / jiffy", "CPU", hc / jc if jc else None, ">= 4", lambda x: x >= 4),
                 ("hydra / (jiffy+daemon)", "CPU", hc / jcd if jcd else None, ">= 4", lambda x: x >= 4)]
    if wall.get("ask"):
        aw, ac = median_ms(wall["ask"]), median_ms(cpu["ask"])
        rows += [("asking / jiffy", "wall", aw / jw if jw else None, "", None),
                 ("asking / jiffy", "CPU", ac / jc if jc else None, "", None)]
    if wall.get("nofront"):
        nw, nc = median_ms(wall["nofront"]), median_ms(cpu["nofront"])
        rows += [("no front / jiffy", "wall", nw / jw if jw else None, "", None),
                 ("no front / jiffy", "CPU", nc / jc if jc else None, "", None)]
    if wall.get("timeout"):
        tw, tc = median_ms(wall["timeout"]), median_ms(cpu["timeout"])
        rows += [("MPIEXEC_TIMEOUT=60 / jiffy", "wall", tw / jw if jw else None, "<= 1.1", lambda x: x <= 1.1),
                 ("MPIEXEC_TIMEOUT=60 / jiffy", "CPU", tc / jc if jc else None, "", None)]
    if ompi and wall.get("ompi"):
        ow, oc = median_ms(wall["ompi"]), median_ms(cpu["ompi"])
        rows += [("mpirun.openmpi / jiffy", "wall", ow / jw if jw else None, "", None),
                 ("mpirun.openmpi / jiffy", "CPU", oc / jc if jc else None, "", None)]
    print(f"{'ratio':<28} {'metric':<6} {'value':>8} {'target':>7}  met")
    for name, metric, val, tgt, ok in rows:
        met = "" if ok is None or val is None else ("yes" if ok(val) else "NO")
        print(f"{name:<28} {metric:<6} {fmt_ratio(val):>8} {tgt:>7}  {met}")
    if not hydra:
        print("(mpiexec.hydra not installed: hydra ratios skipped)")
    print()
    print(f"Batches of {a.batch} launches")
    print(f"{'batch':<20} {'who':<6} {'total s':>8} {'ms/launch':>10} {'CPU s':>8} {'+daemon s':>10} {'failed':>7}")
    for label, who, w, c, bad, dc in batches:
        print(f"{label:<20} {who:<6} {w:8.2f} {w / a.batch * 1000:10.2f} {c:8.2f} {dc:10.2f} {bad:7d}")
    if hydra:
        print()
        print(f"{'batch':<20} {'hydra/jiffy wall':>17} {'hydra/jiffy CPU':>16} {'hydra/(jiffy+daemon) CPU':>25}")
        by = {(l, w_): (w, c, dc) for l, w_, w, c, _, dc in batches}
        for label in ["-n 1 back-to-back", "-n 4 back-to-back", "4 streams of -n 1"]:
            j, h = by.get((label, "jiffy")), by.get((label, "hydra"))
            if j and h:
                print(f"{label:<20} {fmt_ratio(h[0] / j[0]):>17} {fmt_ratio(h[1] / j[1] if j[1] else None):>16} "
                      f"{fmt_ratio(h[1] / (j[1] + j[2]) if (j[1] + j[2]) else None):>25}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
