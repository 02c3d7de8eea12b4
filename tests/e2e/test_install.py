"""An installed jiffy (cmake --install): jiffy in PREFIX/bin, the internal
programs in PREFIX/libexec/jiffy, found from the front's own location; it
runs with PATH holding only PREFIX/bin and, as root, with the build tree
hidden (a tmpfs over it in a private mount namespace). The Debian package
gets the same checks, installed for real, from scripts/package.sh --check
(CI)."""

import gzip
import os
import shutil
import subprocess

import pytest

from conftest import BUILD, REPO, SANITIZED

MPI = BUILD / "mpi"


@pytest.fixture(scope="module")
def prefix(tmp_path_factory, jiffy_bin):
    p = tmp_path_factory.mktemp("prefix")
    cp = subprocess.run(["cmake", "--install", str(BUILD), "--prefix", str(p)],
                        capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    return p


def test_layout(prefix):
    assert sorted(os.listdir(prefix / "bin")) == ["jiffy"]
    assert sorted(os.listdir(prefix / "libexec" / "jiffy")) == ["jiffy-history", "jiffy-launch", "jiffy-pmix", "jiffyd"]
    # gzip-compressed, as Debian's policy wants, and the page itself
    page = prefix / "share" / "man" / "man1" / "jiffy.1.gz"
    assert gzip.decompress(page.read_bytes()) == (REPO / "man" / "jiffy.1").read_bytes()
    assert (prefix / "share" / "bash-completion" / "completions" / "jiffy").is_file()


def run_installed(jx, prefix, args, tmp_path, hide_build=False, timeout=60):
    """Runs PREFIX/bin/jiffy with PATH=PREFIX/bin only (and, hide_build, the
    build tree hidden under a tmpfs)."""
    env = {k: v for k, v in jx.env.items() if not k.startswith(("PATH",))}
    env["PATH"] = str(prefix / "bin")
    argv = [str(prefix / "bin" / "jiffy"), *map(str, args)]
    if hide_build:
        argv = [shutil.which("unshare"), "--mount", "--propagation", "private", "/bin/sh", "-c",
                '/bin/mount -t tmpfs none "$0" && exec "$@"', str(BUILD), *argv]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


def test_version_names_revision_and_libraries(jx, prefix, tmp_path):
    cp = run_installed(jx, prefix, ["--version"], tmp_path)
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    assert lines[0].startswith("jiffy "), cp.stdout
    assert lines[1].startswith("revision "), cp.stdout
    if shutil.which("git") and (REPO / ".git").exists():
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
        assert head in lines[1] or lines[1] == "revision unknown", cp.stdout
    assert "PMIx " in lines[2] and "hwloc " in lines[2], cp.stdout


@pytest.mark.parametrize("flavour", ["mpich", "openmpi"])
def test_installed_jiffy_runs_mpi_with_only_its_bin_on_path(jx, prefix, tmp_path, flavour):
    hello = MPI / f"hello.{flavour}"
    if not hello.exists():
        pytest.skip(f"{hello} not built")
    prog = tmp_path / hello.name
    shutil.copy(hello, prog)
    # (Not in the sanitizer run: the sanitizers write their reports into
    # the build tree, and one that cannot abort the process.)
    hide = os.geteuid() == 0 and shutil.which("unshare") is not None and not SANITIZED
    cp = run_installed(jx, prefix, ["-n", 2, prog], tmp_path, hide_build=hide)
    assert cp.returncode == 0, cp.stderr
    assert sorted(cp.stdout.splitlines()) == ["hello 0 of 2", "hello 1 of 2"], cp.stdout + cp.stderr
    # The daemon that served it is the installed one.
    st = run_installed(jx, prefix, ["status", "--json"], tmp_path)
    pid = __import__("json").loads(st.stdout)["daemon"]["pid"]
    assert os.readlink(f"/proc/{pid}/exe") == str(prefix / "libexec" / "jiffy" / "jiffyd")
    run_installed(jx, prefix, ["stop"], tmp_path)


def test_installed_views_and_handover(jx, prefix, tmp_path):
    """Paths past the front: a hand-over (-timeout), jiffy-history."""
    cp = run_installed(jx, prefix, ["-timeout", 30, "-n", 1, "/bin/true"], tmp_path)
    assert cp.returncode == 0, cp.stderr
    cp = run_installed(jx, prefix, ["history", "--limit", 1], tmp_path)
    assert cp.returncode == 0, cp.stderr
    assert "/bin/true" in cp.stdout, cp.stdout
    run_installed(jx, prefix, ["stop"], tmp_path)
