#!/usr/bin/python3
"""The slurm backend's cost: jiffy against plain srun with the same options,
inside one allocation of a real two-node Slurm on this machine (the tests'
cluster, tests/e2e/slurm_cluster.py; needs root and Debian's Slurm).

    /usr/bin/python3 bench/slurm_bench.py [--reps N]

In one `salloc -N2 --exclusive`, every round runs each pair once in a
shuffled order (machine noise hits both alike), wall measured around
spawn + wait:

  jiffy -n 1 /bin/true                        vs  srun <jiffy's options> -n 1 /bin/true
  jiffy -n 2 build/mpi/hello.mpich            vs  srun <jiffy's options> --mpi=pmi2 ...
  jiffy -n 2 build/mpi/hello.openmpi          vs  srun <jiffy's options> --mpi=pmix ...
  and, for scale, plain `srun -n 1 /bin/true` (Slurm's defaults).

"jiffy's options" are the ones it passes (`jiffy -v` prints its srun line):
--exact, --cpu-bind=cores, --kill-on-bad-exit=1, --input=0, --disable-status,
--export=ALL, the --mpi plugin. jiffy adds its front and launcher, a daemon
message, the stderr relay and, for a step that runs over 0.1 s, one squeue
(how jiffy learns the step's id and nodes, off the launch's path).

Target (issue 12): jiffy at most 1.1x srun's median wall. Every run's exit
status and output are checked. Standard library only.
"""

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))
import slurm_cluster  # noqa: E402

BUILD = Path(os.environ.get("JIFFY_BUILD_DIR") or REPO / "build")
JIFFY = BUILD / "jiffy"
MPI = BUILD / "mpi"
COMMON = ["--cpus-per-task=1", "--cpu-bind=cores", "--exact", "--kill-on-bad-exit=1", "--input=0",
          "--disable-status", "--export=ALL"]

INNER = r'''
import os, random, statistics, subprocess, sys, time, json
cases = json.loads(sys.argv[1]); reps = int(sys.argv[2])
walls = {name: [] for name, _, _ in cases}
for r in range(reps + 1):
    order = list(cases)
    random.shuffle(order)
    for name, argv, expect in order:
        t0 = time.perf_counter()
        cp = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
        wall = time.perf_counter() - t0
        if cp.returncode != 0 or sorted(cp.stdout.splitlines()) != expect:
            print(json.dumps({"error": name, "rc": cp.returncode, "out": cp.stdout, "err": cp.stderr}))
            sys.exit(1)
        if r > 0:  # the first round warms caches and starts the daemon
            walls[name].append(wall)
print(json.dumps(walls))
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("slurm_bench: needs root (the cluster's nodes are namespaces)")
    cluster = slurm_cluster.SlurmCluster()
    runtime = tempfile.mkdtemp(prefix="jfsb-", dir="/tmp")
    try:
        cluster.start()
        hello = lambda n: sorted(f"hello {r} of {n}" for r in range(n))  # noqa: E731
        cases = [
            ("jiffy true", [str(JIFFY), "-n", "1", "/bin/true"], []),
            ("srun true", ["srun", *COMMON, "--ntasks=1", "--mpi=none", "/bin/true"], []),
            ("plain srun true", ["srun", "-n", "1", "/bin/true"], []),
            ("jiffy hello.mpich", [str(JIFFY), "-n", "2", str(MPI / "hello.mpich")], hello(2)),
            ("srun hello.mpich", ["srun", *COMMON, "--ntasks=2", "--mpi=pmi2", str(MPI / "hello.mpich")],
             hello(2)),
            ("jiffy hello.openmpi", [str(JIFFY), "-n", "2", str(MPI / "hello.openmpi")], hello(2)),
            ("srun hello.openmpi",
             ["srun", *COMMON, "--ntasks=2", "--mpi=pmix", str(MPI / "hello.openmpi")], hello(2)),
        ]
        import json
        env = dict(cluster.env)
        env["JIFFY_RUNTIME_DIR"] = runtime
        env.pop("MPIEXEC_TIMEOUT", None)
        cp = subprocess.run(["salloc", "--quiet", "-N2", "--exclusive", sys.executable, "-c", INNER,
                             json.dumps(cases), str(args.reps)],
                            env=env, capture_output=True, text=True, timeout=3600)
        out = cp.stdout.strip().splitlines()
        result = json.loads(out[-1]) if out else {}
        if cp.returncode != 0 or "error" in result:
            sys.exit(f"slurm_bench: a run failed: {result or cp.stderr}")
        med = {k: statistics.median(v) * 1000 for k, v in result.items()}
        print(f"slurm_bench: {args.reps} interleaved rounds in one salloc -N2 --exclusive "
              f"({cluster.cpus} CPUs per node), median wall in ms")
        for k in ("plain srun true", "srun true", "jiffy true", "srun hello.mpich", "jiffy hello.mpich",
                  "srun hello.openmpi", "jiffy hello.openmpi"):
            print(f"  {k:22s} {med[k]:8.1f}")
        for what in ("true", "hello.mpich", "hello.openmpi"):
            ratio = med[f"jiffy {what}"] / med[f"srun {what}"]
            print(f"  jiffy / srun, {what:14s} {ratio:5.2f}x  (target <= 1.10x)")
    finally:
        subprocess.run([str(JIFFY), "stop"], env={**os.environ, "JIFFY_RUNTIME_DIR": runtime},
                       capture_output=True, timeout=30)
        cluster.stop()


if __name__ == "__main__":
    main()
