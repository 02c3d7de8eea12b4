#!/usr/bin/python3
"""What the history costs (issue 9).

    /usr/bin/python3 bench/history_bench.py [--reps N] [--rows N] [--quick]

Part 1, the launch: `jiffy -n 1 /bin/true` with history on against the same
with JIFFY_HISTORY=0, in one run, interleaved in batches (a batch of one,
then a batch of the other, in a shuffled order). Wall: median per launch.
CPU: the launcher's (wait4) plus the daemon's, read from /proc/<pid>/stat
around each batch; after a batch with history on, the daemon is asked to
ingest what the batch wrote (jiffy's `history` message) before its CPU is
read again, so the ingestion is counted in the batch that caused it.
Target: at most 1.05x on wall and on CPU.

Part 2, the readers: a database of --rows jobs (default 1,000,000) spread
over 30 days, the last hour holding --recent of them (default 2,000, a
suite run): `jiffy history --since 1h`, `jiffy history --since 1h --json`,
`jiffy history --slowest 20`, and `jiffy report --since 1h -o run.html -o
run.json -o run.svg`: wall of each (median of 5) and the database's size.

Own JIFFY_RUNTIME_DIR and XDG_STATE_HOME (temporary), so the daemon and the
database are this script's; both are removed at the end. Standard library only.
"""

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from history_db import make_db

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def find_jiffy(arg):
    if arg:
        return str(Path(arg).resolve())
    build = Path(os.environ.get("JIFFY_BUILD_DIR") or REPO / "build")
    return str((build / "jiffy").resolve())


def proc_cpu(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        fields = s[s.rindex(")") + 2:].split()
        return sum(int(x) for x in fields[11:15]) / CLK_TCK
    except (OSError, ValueError):
        return None


def status(jiffy, env):
    cp = subprocess.run([jiffy, "status", "--json"], env=env, capture_output=True, text=True, timeout=10)
    return json.loads(cp.stdout)


def ask_ingest(rdir):
    """Sends the daemon `history` and waits for its answer (the journal ingested)."""
    socks = list(Path(rdir).glob("*.sock"))
    if not socks:
        return None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(str(socks[0]))
    body = json.dumps({"type": "history", "v": 1}).encode()
    s.sendall(struct.pack(">I", len(body)) + body)
    head = b""
    while len(head) < 4:
        chunk = s.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    n = struct.unpack(">I", head)[0]
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    s.close()
    return json.loads(data)


class Runner:
    def __init__(self, env):
        self.env = env
        self.devnull = os.open(os.devnull, os.O_RDWR)

    def once(self, argv):
        fa = [(os.POSIX_SPAWN_DUP2, self.devnull, 0), (os.POSIX_SPAWN_DUP2, self.devnull, 1),
              (os.POSIX_SPAWN_DUP2, self.devnull, 2)]
        t0 = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, self.env, file_actions=fa)
        _, st, ru = os.wait4(pid, 0)
        return time.perf_counter() - t0, ru.ru_utime + ru.ru_stime, os.waitstatus_to_exitcode(st)


def launch_part(jiffy, env, rdir, reps, batch):
    true = shutil.which("true", path="/bin:/usr/bin")
    argv = [jiffy, "-n", "1", true]
    runners = {"on": Runner(env), "off": Runner(dict(env, JIFFY_HISTORY="0"))}
    for _ in range(20):
        for r in runners.values():
            r.once(argv)
    dpid = status(jiffy, env)["daemon"]["pid"]
    ask_ingest(rdir)
    wall = {k: [] for k in runners}
    cpu = {k: 0.0 for k in runners}
    dcpu = {k: 0.0 for k in runners}
    count = {k: 0 for k in runners}
    fails = 0
    rnd = random.Random(1)
    for _ in range(max(1, reps // batch)):
        order = list(runners)
        rnd.shuffle(order)
        for k in order:
            d0 = proc_cpu(dpid)
            for _ in range(batch):
                w, c, rc = runners[k].once(argv)
                fails += rc != 0
                wall[k].append(w)
                cpu[k] += c
                count[k] += 1
            if k == "on":
                ask_ingest(rdir)  # what the batch wrote, ingested (and counted) now
            d1 = proc_cpu(dpid)
            if d0 is not None and d1 is not None:
                dcpu[k] += d1 - d0
    print(f"launches: {count['on']} with history, {count['off']} with JIFFY_HISTORY=0, "
          f"in batches of {batch}; {fails} failed")
    res = {}
    for k in runners:
        med = statistics.median(wall[k]) * 1000
        per_cpu = (cpu[k] + dcpu[k]) / count[k] * 1000
        res[k] = (med, per_cpu)
        print(f"  history {k:3}: median wall {med:.3f} ms, CPU {per_cpu:.3f} ms/launch "
              f"(launcher {cpu[k] / count[k] * 1000:.3f} + daemon {dcpu[k] / count[k] * 1000:.3f})")
    rw = res["on"][0] / res["off"][0]
    rc = res["on"][1] / res["off"][1]
    ok = rw <= 1.05 and rc <= 1.05
    print(f"  on/off: wall {rw:.3f}x, CPU {rc:.3f}x  (target <= 1.05x): {'MET' if ok else 'NOT MET'}")
    return ok


def timed(argv, env, reps=5):
    walls = []
    for _ in range(reps):
        t0 = time.perf_counter()
        cp = subprocess.run(argv, env=env, capture_output=True, timeout=600)
        walls.append(time.perf_counter() - t0)
        if cp.returncode != 0:
            return None, cp.stderr.decode(errors="replace").strip()
    return statistics.median(walls), len(cp.stdout)


def reader_part(jiffy, env, state, rows, recent):
    db = Path(state) / "jiffy" / "history.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    make_db(str(db), rows, days=30, cores=2, recent=recent)
    print(f"database: {rows} jobs ({recent} in the last hour) made in {time.perf_counter() - t0:.0f} s; "
          f"{db.stat().st_size / 2**20:.0f} MiB ({db.stat().st_size / rows:.0f} bytes/job)")
    out = tempfile.mkdtemp(prefix="jfhist-report-")
    cases = [
        ("jiffy history --since 1h", ["history", "--since", "1h"]),
        ("jiffy history --since 1h --json", ["history", "--since", "1h", "--json"]),
        ("jiffy history --slowest 20", ["history", "--slowest", "20"]),
        ("jiffy history --command './ex7 *' --limit 50", ["history", "--command", "./ex7 *", "--limit", "50"]),
        ("jiffy report --since 1h (html, json, svg)",
         ["report", "--since", "1h", "-o", f"{out}/run.html", "-o", f"{out}/run.json", "-o", f"{out}/run.svg"]),
        ("jiffy report --last-run -o run.html", ["report", "--last-run", "-o", f"{out}/last.html"]),
    ]
    for name, args in cases:
        wall, info = timed([jiffy] + args, env)
        if wall is None:
            print(f"  {name}: FAILED: {info}")
        else:
            print(f"  {name}: {wall * 1000:.0f} ms ({info} bytes out)")
    for f in sorted(Path(out).iterdir()):
        print(f"    {f.name}: {f.stat().st_size / 1024:.0f} KiB")
    shutil.rmtree(out, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=2000, help="launches per setting (default 2000)")
    ap.add_argument("--batch", type=int, default=100, help="launches per batch (default 100)")
    ap.add_argument("--rows", type=int, default=1_000_000, help="jobs in the reader database")
    ap.add_argument("--recent", type=int, default=2000, help="of which in the last hour")
    ap.add_argument("--quick", action="store_true", help="reps 300, rows 100,000")
    ap.add_argument("--jiffy", help="jiffy binary (default: $JIFFY_BUILD_DIR or <repo>/build/jiffy)")
    ap.add_argument("--skip-launch", action="store_true")
    ap.add_argument("--skip-readers", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.reps, a.rows = 300, 100_000
    jiffy = find_jiffy(a.jiffy)
    if not os.access(jiffy, os.X_OK):
        sys.exit(f"history_bench: jiffy not found at {jiffy}")
    rdir = tempfile.mkdtemp(prefix="jfhist-", dir="/tmp")
    os.chmod(rdir, 0o700)
    state = tempfile.mkdtemp(prefix="jfhist-state-")
    env = dict(os.environ)
    for v in ("MPIEXEC_TIMEOUT", "JIFFY_HISTORY", "JIFFY_LABEL"):
        env.pop(v, None)
    env.update(JIFFY_RUNTIME_DIR=rdir, XDG_STATE_HOME=state)
    ok = True
    try:
        if not a.skip_launch:
            print("== launch cost, history on vs off")
            ok = launch_part(jiffy, env, rdir, a.reps, a.batch)
            subprocess.run([jiffy, "stop"], env=env, timeout=30)
            shutil.rmtree(state, ignore_errors=True)
            os.makedirs(state, exist_ok=True)
        if not a.skip_readers:
            print(f"== readers over {a.rows} jobs")
            reader_part(jiffy, env, state, a.rows, a.recent)
    finally:
        subprocess.run([jiffy, "stop"], env=env, timeout=30, capture_output=True)
        shutil.rmtree(rdir, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
