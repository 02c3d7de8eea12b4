"""CI's share of the soak (scripts/soak.py): a few hundred launches under
faults, two daemon SIGKILLs among them, and no violation allowed. The full
run (20,000 launches, 10 daemon kills) is done by hand; see the script."""
import subprocess
import sys

from conftest import BUILD, REPO


def test_short_soak_has_no_violation(jiffy_bin, probe_bin):
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "soak.py"), "--launches", "300",
                        "--clients", "6", "--daemon-kills", "2", "--build", str(BUILD), "--quiet"],
                       capture_output=True, text=True, timeout=300)
    print(r.stdout, r.stderr)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "double-bookings: 0" in r.stdout
    assert "stray processes: 0" in r.stdout
