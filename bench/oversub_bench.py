#!/usr/bin/python3
"""Jobs wider than the machine (issue 14): ranks that share a core must not
spin against each other.

    /usr/bin/python3 bench/oversub_bench.py [--reps N] [--calls N] [--quick]

Runs build/mpi/allreduce_loop.{openmpi,mpich} (N MPI_Allreduce calls; the
program prints the loop's own wall time) at 1.5x and 2x the machine's CPU
count, and at the CPU count itself (fits the machine: must not get slower),
under jiffy, mpirun.openmpi --oversubscribe and mpiexec.hydra, every command
once per round in a shuffled order so that machine noise hits all alike.
Prints the median loop time of each and the ratios jiffy / peer.

Targets (issue 14), on median loop time at 2x the CPUs:
  Open MPI  jiffy <= 2x mpirun --oversubscribe
  MPICH     jiffy <= 1x mpiexec.hydra

A private JIFFY_RUNTIME_DIR (its own daemon, stopped at the end). Standard
library only.
"""

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOOP_RE = re.compile(r"allreduce_loop (\d+) calls ([0-9.]+) s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="reps 2, calls 500")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--jiffy", default=os.environ.get("JIFFY_BUILD_DIR", str(REPO / "build")) + "/jiffy")
    a = ap.parse_args()
    if a.quick:
        a.reps, a.calls = 2, 500
    build = Path(a.jiffy).parent
    cpus = len(os.sched_getaffinity(0))
    widths = sorted({cpus, (3 * cpus + 1) // 2, 2 * cpus})
    rundir = tempfile.mkdtemp(prefix="jiffy-oversub-")
    env = dict(os.environ, JIFFY_RUNTIME_DIR=rundir)
    for v in ("OMPI_MCA_mpi_yield_when_idle", "MPIR_CVAR_POLLS_BEFORE_YIELD", "MPIEXEC_TIMEOUT"):
        env.pop(v, None)
    commands = {}
    for n in widths:
        for mpi, peer in (("openmpi", shutil.which("mpirun.openmpi")), ("mpich", shutil.which("mpiexec.hydra"))):
            prog = str(build / "mpi" / f"allreduce_loop.{mpi}")
            if not os.access(prog, os.X_OK):
                sys.exit(f"oversub_bench: {prog} missing; build first")
            commands[("jiffy", mpi, n)] = [a.jiffy, "-n", str(n), prog, str(a.calls)]
            if peer:
                extra = ["--allow-run-as-root", "--oversubscribe"] if mpi == "openmpi" else []
                commands[("peer", mpi, n)] = [peer] + extra + ["-n", str(n), prog, str(a.calls)]
    times = {k: [] for k in commands}
    rng = random.Random(1)
    try:
        subprocess.run([a.jiffy, "-n", "1", "true"], env=env, check=True, timeout=60)
        for rnd in range(a.reps):
            order = list(commands)
            rng.shuffle(order)
            for k in order:
                cp = subprocess.run(commands[k], env=env, capture_output=True, text=True, timeout=a.timeout)
                m = LOOP_RE.search(cp.stdout)
                if cp.returncode != 0 or not m:
                    sys.exit(f"oversub_bench: {' '.join(commands[k])} failed ({cp.returncode}): {cp.stderr[-500:]}")
                times[k].append(float(m.group(2)))
            print(f"oversub_bench: round {rnd + 1}/{a.reps} done", file=sys.stderr, flush=True)
    finally:
        subprocess.run([a.jiffy, "stop"], env=env, timeout=60)
        shutil.rmtree(rundir, ignore_errors=True)
    print(f"allreduce_loop, {a.calls} calls, median of {a.reps} (s); {cpus} CPUs")
    print(f"{'MPI':8} {'ranks':>5} {'jiffy':>9} {'peer':>9} {'jiffy/peer':>10}")
    ok = True
    for mpi, name, target in (("openmpi", "mpirun", 2.0), ("mpich", "hydra", 1.0)):
        for n in widths:
            j = statistics.median(times[("jiffy", mpi, n)])
            p = statistics.median(times[("peer", mpi, n)]) if times.get(("peer", mpi, n)) else None
            ratio = j / p if p else float("nan")
            mark = ""
            if n == 2 * cpus and p:
                met = ratio <= target
                ok &= met
                mark = f"  target <= {target}x {name}: {'met' if met else 'NOT MET'}"
            print(f"{mpi:8} {n:>5} {j:>9.3f} {p if p is not None else float('nan'):>9.3f} {ratio:>10.2f}{mark}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
