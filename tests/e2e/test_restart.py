"""Riding through daemon restarts (issue 10 item 6): launches and every
client of the daemon go on while the daemon is killed (SIGKILL), stopped
(SIGTERM, `jiffy stop`) and started again by whoever needs it next, over and
over. Nobody may see the restart: every launch exits with its program's
code, nothing prints a socket's errno ("Connection reset", "Broken pipe"),
no core is held by two jobs at once, and no rank outlives the test."""
import json
import os
import random
import signal
import threading
import time

from conftest import JobTrace, find_overlaps, process_gone, read_records, wait_until

RESTARTS = 12  # four of each kind
SOCKET_ERRNOS = ("Connection reset", "Broken pipe", "Connection refused", "No such file")


class Clients:
    """Launchers and status/top/history askers looping from threads until
    stopped; every run is kept for the checks."""

    def __init__(self, jx, probe, out):
        self.jx, self.probe, self.out = jx, probe, out
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.launches = []  # (tag, expected code, CompletedProcess)
        self.asks = []  # (argv, CompletedProcess)
        self.threads = []

    def start(self, launchers, askers):
        for i in range(launchers):
            self.threads.append(threading.Thread(target=self._launch_loop, args=(i,)))
        for i in range(askers):
            self.threads.append(threading.Thread(target=self._ask_loop, args=(i,)))
        for t in self.threads:
            t.start()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join()

    def launched(self):
        with self.lock:
            return len(self.launches)

    def _launch_loop(self, i):
        rng = random.Random(i)
        # The front on the lane, the front asking the daemon, jiffy-launch.
        # Some jobs run 300 ms: a restart meets them running (re-attach).
        ways = [{}, {"JIFFY_LANE": "0"}, {"JIFFY_FAST": "0"}]
        k = 0
        while not self.stopping.is_set():
            tag = f"L{i}x{k}"
            k += 1
            n = rng.choice([1, 1, 2])
            code = rng.choice([0, 0, 0, 3]) if n == 1 else 0  # (a rank failing ends its peers, loudly)
            args = ["-n", n, self.probe, f"out={self.out}", f"tag={tag}", f"sleep={rng.choice([rng.randint(0, 30), 300])}",
                    f"exit={code}"]
            cp = self.jx.run(args, timeout=120, env=ways[k % len(ways)])
            with self.lock:
                self.launches.append((tag, code, cp))

    def _ask_loop(self, i):
        asks = [["status"], ["status", "--json"], ["top", "-b", "-n", "1"], ["history", "--json"]]
        k = i
        while not self.stopping.is_set():
            argv = asks[k % len(asks)]
            k += 1
            cp = self.jx.run(argv, timeout=120)
            with self.lock:
                self.asks.append((argv, cp))


def live_daemon(jx, other_than):
    """The pid of a daemon that answers, if it is not other_than."""
    cp = jx.run(["status", "--json"], timeout=60)
    d = json.loads(cp.stdout).get("daemon") if cp.returncode == 0 else None
    return d["pid"] if d and d["pid"] != other_than else None


def test_launches_and_status_ride_through_daemon_restarts(jx, probe_bin, tmp_path):
    assert jx.run(["-n", 1, "true"]).returncode == 0
    clients = Clients(jx, probe_bin, tmp_path)
    clients.start(launchers=3, askers=2)
    kinds = ["SIGKILL", "SIGTERM", "jiffy stop"]
    old = None
    try:
        for r in range(RESTARTS):
            # A daemon that serves (the launchers start it), and work under way.
            pid = wait_until(lambda: live_daemon(jx, old), 60, 0.02, f"daemon #{r + 1}")
            done = clients.launched()
            wait_until(lambda: clients.launched() >= done + 2, 60, 0.02, "launches under this daemon")
            kind = kinds[r % len(kinds)]
            if kind == "jiffy stop":
                cp = jx.run(["stop"], timeout=60)
                assert cp.returncode == 0 and cp.stderr == "", cp.stderr
            else:
                os.kill(pid, signal.SIGKILL if kind == "SIGKILL" else signal.SIGTERM)
            wait_until(lambda: process_gone(pid), 30, 0.01, f"daemon {pid} gone after {kind}")
            old = pid
        done = clients.launched()
        wait_until(lambda: clients.launched() >= done + 3, 60, 0.02, "launches after the last restart")
    finally:
        clients.stop()

    for tag, code, cp in clients.launches:
        assert cp.returncode == code, f"{tag}: exit {cp.returncode}, want {code}: {cp.stderr!r}"
        assert cp.stderr == "", f"{tag}: {cp.stderr!r}"
    for argv, cp in clients.asks:
        said = cp.stdout + cp.stderr
        assert cp.returncode == 0, f"jiffy {' '.join(argv)}: exit {cp.returncode}: {cp.stderr!r}"
        assert not any(e in said for e in SOCKET_ERRNOS), f"jiffy {' '.join(argv)}: {said!r}"

    # Every rank started and ended (none was lost or killed by a daemon that
    # thought its launcher gone), and no core was held twice at a time.
    recs = read_records(tmp_path)
    traces = []
    for tag, _, cp in clients.launches:
        ranks = recs.get(tag, {})
        assert ranks and all("end_ns" in rec for rec in ranks.values()), f"{tag}: {ranks}"
        traces.append(JobTrace(tag, ranks))
    assert not find_overlaps(traces), find_overlaps(traces)[:3]
    print(f"{len(clients.launches)} launches, {len(clients.asks)} asks, {RESTARTS} restarts")
