#!/usr/bin/python3
"""MPI_Comm_spawn under jiffy against the launchers it replaces (issue 11).

    /usr/bin/python3 bench/spawn_bench.py [--reps N]

A parent spawning 1 child that replies (build/mpi/spawn.<flavour> parent 1),
every command once per round in a shuffled order, median wall
(perf_counter around spawn + wait):

  Open MPI  jiffy -n 1 spawn.openmpi parent 1
            mpirun.openmpi --oversubscribe -n 1 spawn.openmpi parent 1
            jiffy -n 1 hello.openmpi, and the same with the BTL jiffy used
            before spawn (self,vader), for what the TCP BTL costs a job
            that does not spawn
  MPICH     jiffy / mpiexec.hydra -n 1 spawn.mpich parent 1: Debian's MPICH
            (ch4:ucx) cannot spawn (no MPI_Open_port) under either; the
            script says so when both fail
  PMI-1     jiffy --mpi=pmi1 -n 1 python3 tests/e2e/pmi1_spawn_client.py
            parent (a scripted MPICH rank spawning 2: what jiffy's PMI-1
            side costs; no peer runs it)

Every run's exit status and output are checked. The script uses its own
JIFFY_RUNTIME_DIR and a daemon with 8 cores (--cores 8, so a spawn fits on a
small machine), stopped at the end. Standard library only.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("JIFFY_BUILD_DIR") or REPO / "build")
JIFFY = str(BUILD / "jiffy")
MPI = BUILD / "mpi"


def run(argv, env, timeout):
    t = time.perf_counter()
    cp = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    return time.perf_counter() - t, cp


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args()
    runtime = tempfile.mkdtemp(prefix="jiffy-spawn-bench-")
    env = dict(os.environ, JIFFY_RUNTIME_DIR=runtime, OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    for k in list(env):
        if k.startswith(("OMPI_MCA_", "PMIX_")):
            del env[k]
    vader = dict(env, OMPI_MCA_btl="self,vader")
    daemon = subprocess.Popen([JIFFY, "daemon", "--cores", "8", "--foreground", "--idle-timeout", "0"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # `jiffy status` exits 0 with no daemon too: wait until ours answers,
        # or the first launch would start a daemon of the machine's own cores
        for _ in range(200):
            if daemon.poll() is not None:
                sys.exit(f"spawn_bench: jiffy daemon --cores 8 exited with {daemon.returncode}")
            st = subprocess.run([JIFFY, "status", "--json"], env=env, capture_output=True, text=True)
            try:
                if (json.loads(st.stdout).get("daemon") or {}).get("pid") == daemon.pid:
                    break
            except (ValueError, AttributeError):
                pass
            time.sleep(0.05)
        else:
            sys.exit("spawn_bench: jiffy daemon --cores 8 did not answer jiffy status")
        spawn_o, spawn_m = str(MPI / "spawn.openmpi"), str(MPI / "spawn.mpich")
        hello_o = str(MPI / "hello.openmpi")
        client = str(REPO / "tests/e2e/pmi1_spawn_client.py")
        cmds = {
            "jiffy ompi spawn": ([JIFFY, "-n", "1", spawn_o, "parent", "1"], env, "spawned 1 ok"),
            "mpirun ompi spawn": (["mpirun.openmpi", "--oversubscribe", "-n", "1", spawn_o, "parent", "1"], env,
                                  "spawned 1 ok"),
            "jiffy ompi hello -n 2": ([JIFFY, "-n", "2", hello_o], env, "hello"),
            "jiffy ompi hello -n 2 (btl self,vader)": ([JIFFY, "-n", "2", hello_o], vader, "hello"),
            "jiffy mpich spawn": ([JIFFY, "-n", "1", spawn_m, "parent", "1"], env, "spawned 1 ok"),
            "hydra mpich spawn": (["mpiexec.hydra", "-n", "1", spawn_m, "parent", "1"], env, "spawned 1 ok"),
            "jiffy pmi1 client spawn": ([JIFFY, "--mpi=pmi1", "-n", "1", "/usr/bin/python3", client, "parent"],
                                        env, "spawn rc 0"),
        }
        walls = {k: [] for k in cmds}
        failed = {k: 0 for k in cmds}
        why = {}  # the last failure's last stderr line, per command
        for rnd in range(args.reps + 1):  # round 0 warms up, unmeasured
            order = list(cmds)
            random.shuffle(order)
            for k in order:
                argv, e, expect = cmds[k]
                wall, cp = run(argv, e, args.timeout)
                ok = cp.returncode == 0 and expect in cp.stdout
                if rnd == 0:
                    continue
                if ok:
                    walls[k].append(wall)
                else:
                    failed[k] += 1
                    err = [l for l in cp.stderr.splitlines() if l.strip()]
                    why[k] = f"exit {cp.returncode}" + (f": {err[-1].strip()[:150]}" if err else "")
        med = {k: statistics.median(v) * 1000 for k, v in walls.items() if v}
        print(f"spawn_bench: {args.reps} rounds, median wall (ms)")
        for k in cmds:
            if k in med:
                print(f"  {k:40s} {med[k]:8.1f}" + (f"   ({failed[k]} failed)" if failed[k] else ""))
            else:
                print(f"  {k:40s}   failed every time ({why.get(k, '?')})")
        if "jiffy ompi spawn" in med and "mpirun ompi spawn" in med:
            print(f"Open MPI spawn: jiffy {med['jiffy ompi spawn'] / med['mpirun ompi spawn']:.2f}x mpirun")
        if "jiffy ompi hello -n 2" in med and "jiffy ompi hello -n 2 (btl self,vader)" in med:
            r = med["jiffy ompi hello -n 2"] / med["jiffy ompi hello -n 2 (btl self,vader)"]
            print(f"TCP BTL on a job that does not spawn: {r:.2f}x the wall with self,vader")
        if "jiffy mpich spawn" not in med and "hydra mpich spawn" not in med:
            print("MPICH spawn: unsupported by Debian's MPICH (ch4:ucx) under both launchers")
        elif "jiffy mpich spawn" in med and "hydra mpich spawn" in med:
            print(f"MPICH spawn: jiffy {med['jiffy mpich spawn'] / med['hydra mpich spawn']:.2f}x hydra")
    finally:
        subprocess.run([JIFFY, "stop"], env=env, capture_output=True)
        daemon.wait(timeout=30)
        shutil.rmtree(runtime, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
