#!/usr/bin/python3
"""Soak test: many launches under faults, then a ledger of violations.

Runs --launches jiffy jobs (mixed sizes) from --clients concurrent clients.
Each rank is tests/programs/probe, which records its granted cores and its
start and end times. Faults are injected at random: ranks that exit 3 or die
of SIGSEGV, ranks that leave a child behind, ranks that write garbage to
every descriptor they inherited, launchers killed with SIGKILL, and
--daemon-kills SIGKILLs of the daemon spread over the first part of the run
(the rest measures the last daemon's memory over many launches).

The launches use the user's default daemon (the one every environment
must meet), half of the clients with $XDG_RUNTIME_DIR set and half without:
a daemon per environment would show as double-bookings. Stop your own
jobs first, the daemon is killed. --runtime-dir runs a private instance
instead (JIFFY_RUNTIME_DIR).

Printed at the end, and all violation counts must be 0:
  launches, faults injected, double-bookings (two jobs' ranks on one core at
  the same time), lost or wrongly reported jobs (wrong exit code, or a hang),
  stray processes (anything of the run alive after it), daemon RSS at the
  start and the end of the final daemon's life.

Usage: scripts/soak.py [--launches 20000] [--clients 8] [--daemon-kills 10]
                       [--build DIR] [--seed N] [--runtime-dir DIR]
Exit status 0 when every violation count is 0.
"""
import argparse
import collections
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH_TIMEOUT_S = 120


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--launches", type=int, default=20000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--daemon-kills", type=int, default=10)
    p.add_argument("--build", default=os.environ.get("JIFFY_BUILD_DIR", os.path.join(ROOT, "build")))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--runtime-dir", help="a private instance (JIFFY_RUNTIME_DIR) instead of the default daemon")
    return p.parse_args()


class Plan:
    """One launch: its command line and what its exit code must be."""

    def __init__(self, index, rng, probe, out):
        self.index = index
        self.tag = "soak%d" % index
        self.n = rng.choice([1, 1, 1, 2, 2, 2, 3, 4])
        self.args = [probe, "out=" + out, "tag=" + self.tag, "sleep=%d" % rng.randint(0, 8)]
        self.expect = {0}
        self.kill_after = None
        self.fault = None
        r = rng.random()
        rank = rng.randrange(self.n)
        if r < 0.06:
            self.fault = "rank exits 3"
            self.args.append("exit@%d=3" % rank)
            self.expect = {3}
        elif r < 0.09:
            self.fault = "rank SIGSEGV"
            self.args.append("segv@%d=1" % rank)
            self.expect = {139}
        elif r < 0.13:
            self.fault = "rank leaves a child"
            self.args.append("spawn@%d=1" % rank)
        elif r < 0.18:
            # garbage on a PMI channel fails the job: any exit code is right
            self.fault = "rank writes garbage to its descriptors"
            self.args.append("garbage@%d=1" % rank)
            self.expect = None
        elif r < 0.21:
            self.fault = "launcher SIGKILL"
            self.kill_after = rng.uniform(0.0, 0.02)
            self.expect = {0, -signal.SIGKILL}


class Soak:
    def __init__(self, a):
        self.a = a
        self.jiffy = os.path.join(a.build, "jiffy")
        self.probe = os.path.join(a.build, "test-programs", "probe")
        for f in (self.jiffy, self.probe):
            if not os.access(f, os.X_OK):
                sys.exit("soak: %s is missing; build first (cmake --build %s)" % (f, a.build))
        self.tmp = tempfile.mkdtemp(prefix="jiffy-soak-")
        self.out = os.path.join(self.tmp, "records")
        os.mkdir(self.out)
        self.marker = uuid.uuid4().hex
        self.env = dict(os.environ, JIFFY_SOAK_MARKER=self.marker, JIFFY_KILL_GRACE="0.5")
        for v in ("MPIEXEC_TIMEOUT", "JIFFY_RUNTIME_DIR", "XDG_RUNTIME_DIR"):
            self.env.pop(v, None)
        if a.runtime_dir:
            self.env["JIFFY_RUNTIME_DIR"] = a.runtime_dir
        # Its daemons' history (docs/history.md) stays with the soak, not the user's.
        self.env["XDG_STATE_HOME"] = os.path.join(self.tmp, "state")
        # the other environment: a desktop session's
        xdg = os.path.join(self.tmp, "xdg")
        os.mkdir(xdg, 0o700)
        self.envs = [self.env, dict(self.env, XDG_RUNTIME_DIR=xdg)]
        self.rundir = None  # the daemon's directory and key, once it runs
        self.key = None
        self.rng = random.Random(a.seed)
        self.plans = [Plan(i, self.rng, self.probe, self.out) for i in range(a.launches)]
        self.next = 0
        self.done = 0
        self.lock = threading.Lock()
        self.wrong = []          # (index, why)
        self.kill_times = {}     # tag -> monotonic ns when its launcher was SIGKILLed
        self.faults = collections.Counter()
        self.daemon_kills = 0
        self.rss = []            # (launches done, pid, kB) samples of the live daemon

    # --- running ---------------------------------------------------------
    def take(self):
        with self.lock:
            if self.next >= len(self.plans):
                return None
            p = self.plans[self.next]
            self.next += 1
            return p

    def client(self, env):
        while True:
            p = self.take()
            if p is None:
                return
            if p.fault:
                with self.lock:
                    self.faults[p.fault] += 1
            cmd = [self.jiffy, "-n", str(p.n)] + p.args
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if p.kill_after is not None:
                time.sleep(p.kill_after)
                proc.kill()
                with self.lock:
                    self.kill_times[p.tag] = time.monotonic_ns()
            try:
                _, err = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
                code = proc.returncode
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
                code = "hang"
            with self.lock:
                self.done += 1
                if code == "hang" or (p.expect is not None and code not in p.expect):
                    last = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
                    self.wrong.append((p.index, "exit %s, expected %s (%s): %s" %
                                       (code, sorted(p.expect or ["any"]), " ".join(cmd[1:]), last[0])))

    def daemon_pid(self):
        for f in glob.glob(os.path.join(self.rundir, self.key + ".lock")):
            try:
                with open(f) as fh:
                    return int(fh.read().strip() or 0)
            except (OSError, ValueError):
                pass
        return 0

    def daemon_rss_kb(self, pid):
        try:
            with open("/proc/%d/status" % pid) as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def killer(self):
        """Kills the daemon --daemon-kills times during the first 60% of the
        run, then samples the last daemon's RSS."""
        total = len(self.plans)
        marks = [int(total * 0.6 * (k + 1) / (self.a.daemon_kills + 1))
                 for k in range(self.a.daemon_kills)]
        while True:
            with self.lock:
                done = self.done
                finished = self.done >= total
            if finished:
                break
            if marks and done >= marks[0]:
                pid = self.daemon_pid()
                if pid > 0:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        self.daemon_kills += 1
                        marks.pop(0)
                    except ProcessLookupError:
                        pass
            elif not marks:
                pid = self.daemon_pid()
                kb = self.daemon_rss_kb(pid) if pid else 0
                if kb:
                    self.rss.append((done, pid, kb))
            time.sleep(0.05)

    def run(self):
        t0 = time.time()
        subprocess.run([self.jiffy, "-n", "1", "true"], env=self.env, check=True, timeout=60)
        st = json.loads(subprocess.run([self.jiffy, "status", "--json"], env=self.env, check=True, timeout=60,
                                       capture_output=True, text=True).stdout)
        self.rundir = os.path.dirname(st["daemon"]["socket"])
        self.key = st["daemon"]["key"]
        threads = [threading.Thread(target=self.client, args=(self.envs[i % 2],)) for i in range(self.a.clients)]
        killer = threading.Thread(target=self.killer)
        for t in threads:
            t.start()
        killer.start()
        last = 0
        while any(t.is_alive() for t in threads):
            time.sleep(1)
            if not self.a.quiet and self.done - last >= 1000:
                last = self.done
                print("soak: %d/%d launches, %.0f s" % (self.done, len(self.plans), time.time() - t0),
                      flush=True)
        for t in threads:
            t.join()
        killer.join()
        pid = self.daemon_pid()
        if pid and self.daemon_rss_kb(pid):
            self.rss.append((self.done, pid, self.daemon_rss_kb(pid)))
        self.elapsed = time.time() - t0
        subprocess.run([self.jiffy, "stop"], env=self.env, timeout=60)
        time.sleep(1.0)  # let killed groups and the daemon finish dying

    # --- checking ----------------------------------------------------------
    def records(self):
        for path in glob.glob(os.path.join(self.out, "*")):
            rec = {}
            try:
                with open(path, errors="replace") as fh:
                    for line in fh:
                        k, _, v = line.rstrip("\n").partition("=")
                        rec[k] = v
            except OSError:
                continue
            tag = os.path.basename(path).rsplit(".", 1)[0]
            yield tag, rec

    def double_bookings(self):
        """Intervals of ranks per core; two jobs' intervals on one core must
        not overlap. A rank whose launcher was SIGKILLed has no end record:
        its end is taken as the kill time (too early, never a false alarm)."""
        per_core = collections.defaultdict(list)
        for tag, rec in self.records():
            try:
                start = int(rec["start_ns"])
            except (KeyError, ValueError):
                continue
            end = int(rec["end_ns"]) if rec.get("end_ns", "").isdigit() else self.kill_times.get(tag)
            if end is None:
                continue
            for core in filter(None, rec.get("cores", "").split(",")):
                per_core[core].append((start, end, tag))
        self.intervals = sum(len(v) for v in per_core.values())
        clashes = []
        for core, spans in per_core.items():
            spans.sort()
            latest_end, latest_tag = -1, None
            for start, end, tag in spans:
                if start < latest_end and tag != latest_tag:
                    clashes.append((core, latest_tag, tag))
                if end > latest_end:
                    latest_end, latest_tag = end, tag
        return clashes

    def strays(self):
        found = []
        for env_path in glob.glob("/proc/[0-9]*/environ"):
            pid = int(env_path.split("/")[2])
            if pid == os.getpid():
                continue
            try:
                with open(env_path, "rb") as fh:
                    if self.marker.encode() not in fh.read():
                        continue
                with open("/proc/%d/stat" % pid) as fh:
                    state = fh.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state not in ("Z", "X"):
                found.append(pid)
        return found

    def report(self):
        clashes = self.double_bookings()
        strays = self.strays()
        rss_start = self.rss[0] if self.rss else (0, 0, 0)
        rss_end = self.rss[-1] if self.rss else (0, 0, 0)
        faults = sum(self.faults.values()) + self.daemon_kills
        print("soak: %d launches in %.0f s from %d clients" % (self.done, self.elapsed, self.a.clients))
        print("soak: faults injected: %d (%s, daemon SIGKILL: %d)" % (
            faults, ", ".join("%s: %d" % kv for kv in sorted(self.faults.items())), self.daemon_kills))
        print("soak: double-bookings: %d (%d rank-on-core intervals checked)" % (len(clashes), self.intervals))
        for c in clashes[:10]:
            print("soak:   core %s: %s and %s overlap" % c)
        print("soak: lost or wrongly reported jobs: %d" % len(self.wrong))
        for w in self.wrong[:10]:
            print("soak:   launch %d: %s" % w)
        print("soak: stray processes: %d %s" % (len(strays), strays[:10] if strays else ""))
        print("soak: daemon RSS: %d kB after %d launches, %d kB after %d launches (pid %d)" % (
            rss_start[2], rss_start[0], rss_end[2], rss_end[0], rss_end[1]))
        ok = not clashes and not self.wrong and not strays and self.daemon_kills == self.a.daemon_kills
        if self.daemon_kills != self.a.daemon_kills:
            print("soak: only %d of %d daemon kills happened" % (self.daemon_kills, self.a.daemon_kills))
        print("soak: %s" % ("PASS" if ok else "FAIL"))
        return ok


def main():
    a = parse_args()
    s = Soak(a)
    try:
        s.run()
        ok = s.report()
    finally:
        shutil.rmtree(s.tmp, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
