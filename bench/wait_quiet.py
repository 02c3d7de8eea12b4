#!/usr/bin/python3
"""Waits until the machine is quiet: the 1-minute load average below
--below for --hold seconds in a row, or --max seconds have passed (then it
goes on anyway and says so). Prints one line on stderr either way.

    /usr/bin/python3 bench/wait_quiet.py [--below 1.0] [--hold 30] [--max 300]

Used by run_all.sh before each benchmark so that the figures are not taken
while other work competes for the cores. Standard library only.
"""

import argparse
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--below", type=float, default=1.0, help="load threshold (default 1.0)")
    ap.add_argument("--hold", type=float, default=30, help="seconds the load must stay below it (default 30)")
    ap.add_argument("--max", type=float, default=300, help="give up waiting after this many seconds (default 300)")
    a = ap.parse_args()
    t0 = time.monotonic()
    quiet_since = None
    while True:
        now = time.monotonic()
        load = os.getloadavg()[0]
        if load < a.below:
            quiet_since = now if quiet_since is None else quiet_since
            if now - quiet_since >= a.hold:
                print(f"wait_quiet: load {load:.2f} < {a.below} for {a.hold:.0f} s "
                      f"(waited {now - t0:.0f} s)", file=sys.stderr)
                return 0
        else:
            quiet_since = None
        if now - t0 >= a.max:
            print(f"wait_quiet: WARNING: load still {load:.2f} after {a.max:.0f} s; "
                  f"measuring anyway (figures may be noisy)", file=sys.stderr)
            return 0
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
