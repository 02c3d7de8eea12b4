"""The MPI bootstrap: real MPICH and Open MPI programs (tests/mpi/*.c, built
as build/mpi/NAME.mpich and build/mpi/NAME.openmpi) run under jiffy with no
flags, as under their own mpiexec.

Covers: hello/ring/allreduce at every size up to twice the machine; MPI_Abort
(exit 7) and exit without MPI_Finalize for both MPIs; MPMD appnums; --mpi
forcing and the "ranks never contacted the server" warning; the variables
tools sniff (MPI_LOCALNRANKS..., OMPI_COMM_WORLD_*); the speed-ups (the
topology cache, on by default, with hwloc's view in the ranks compared with
and without it, under taskset and in a cpuset cgroup; --single-node-ompi;
their JIFFY_* variables); the
per-job Open MPI directory (created under $TMPDIR, distinct per job, removed
afterwards); a SIGKILLed rank; mixed MPICH and Open MPI jobs running
concurrently with no core shared; 200 MPI jobs of sizes 1-4 through make -j8.

Every test runs with TMPDIR set to a private directory, so leftover job
directories are found exactly (the `mx` fixture fails a test that leaves one).
A flavour whose programs are missing is skipped with the reason.
"""

import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import (BUILD, JobTrace, check_rank_affinity, core_cpu_map, find_overlaps,
                      is_jiffy_server, one_line_error, parse_cpu_list, pid_alive, procs_with_marker, read_records,
                      run_concurrently, wait_until)

MPI_DIR = BUILD / "mpi"
FLAVOURS = ("mpich", "openmpi")
PROGRAMS = ("hello", "ring", "allreduce", "abort", "nofinalize", "mpmd")

# Caller variables that would change what the ranks or jiffy do; the MPI
# tests start from an environment without them.
SCRUB_PREFIXES = ("OMPI_", "PMIX_", "HWLOC_", "PRTE_", "I_MPI_", "MPICH_", "HYDRA_")
SCRUB_VARS = ("JIFFY_TOPOLOGY_CACHE", "JIFFY_SINGLE_NODE_OMPI", "JIFFY_IN_PMIX_LAUNCHER",
              "MPI_LOCALNRANKS", "MPI_LOCALRANKID", "PMI_PORT", "PMI_ID", "PMI_VERSION",
              "PMI_SUBVERSION", "FLUX_JOB_ID", "SLURM_JOBID", "SLURM_JOB_ID", "TMPDIR",
              "JIFFY_LOCAL_RANK", "JIFFY_LOCAL_SIZE", "JIFFY_APPNUM")

JOB_DIR_RE = re.compile(r"^jiffy-(\d+)-job(\d+)-[A-Za-z0-9]{6}$")


# --------------------------------------------------------------------------
# helpers


def prog(name: str, flavour: str) -> str:
    p = MPI_DIR / f"{name}.{flavour}"
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.skip(f"MPI test program not built: {p} ({flavour} missing? "
                    f"install it and rebuild: cmake --build build)")
    return str(p)


def job_dirs(directory) -> list:
    """Names of jiffy's per-job directories in directory."""
    try:
        return sorted(n for n in os.listdir(directory) if JOB_DIR_RE.match(n))
    except FileNotFoundError:
        return []


def lines(text: str) -> list:
    return [l for l in text.splitlines() if l.strip()]


def jiffy_lines(text: str) -> list:
    return [l for l in text.splitlines() if l.startswith("jiffy:")]


def expected_output(name: str, n: int) -> list:
    """Sorted stdout lines of a successful run of tests/mpi/NAME with n ranks."""
    if name == "hello":
        return sorted(f"hello {r} of {n}" for r in range(n))
    if name == "ring":
        return [f"ring ok {n}"]
    if name == "allreduce":
        return [f"allreduce ok {n * (n - 1) // 2}"]
    raise ValueError(name)


def prog_args(name: str, n: int) -> list:
    return [str(n)] if name == "ring" else []


def children(pid: int) -> list:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def exe_of(pid: int):
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def environ_of(pid: int) -> dict:
    with open(f"/proc/{pid}/environ", "rb") as f:
        raw = f.read()
    out = {}
    for item in raw.split(b"\0"):
        if b"=" in item:
            k, v = item.split(b"=", 1)
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out


def labelled_env(stdout: str) -> dict:
    """{rank: {NAME: value}} from `jiffy -l ... printenv` output."""
    out = {}
    for line in stdout.splitlines():
        m = re.match(r"^\[(\d+)\] ([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if m:
            out.setdefault(int(m.group(1)), {})[m.group(2)] = m.group(3)
    return out


def machine_cores(jx) -> dict:
    """{core id: CPUs} of the test's daemon (started by a first launch)."""
    cp = jx.run(["-n", 1, "true"])
    assert cp.returncode == 0, cp.stderr
    return core_cpu_map(jx.status())


def rank_processes(jx) -> list:
    """Processes of this test other than daemons: ranks, launchers, children."""
    return [p for p in procs_with_marker(jx.marker) if not is_jiffy_server(p)]


def assert_no_ranks_left(jx, what):
    left = rank_processes(jx)
    assert not left, f"{what}: processes still alive after jiffy returned: {left}"


class StuckJob:
    """A world of 2 whose ranks are both past MPI_Init and blocked forever:
    rank 0 runs abort.X (not the last rank, so it waits in MPI_Barrier) and
    rank 1 runs ring.X (it waits in MPI_Recv from rank 0)."""

    def __init__(self, jx, flavour, opts=(), env=None, settle=1.0):
        self.jx = jx
        self.flavour = flavour
        self.progs = [prog("abort", flavour), prog("ring", flavour)]
        args = list(opts) + ["-n", 1, self.progs[0], ":", "-n", 1, self.progs[1]]
        self.p = jx.popen(args, env=env)
        self.launcher = self.p.pid

        def ranks():
            if self.p.poll() is not None:
                out, err = self.p.communicate()
                raise AssertionError(f"stuck job ended early: rc={self.p.returncode} {err!r}")
            kids = children(self.launcher)
            if len(kids) != 2:
                return None
            exes = [exe_of(k) for k in kids]
            if sorted(exes, key=str) != sorted(self.progs):
                return None
            # /proc/PID/exe names the new program a moment before execve has
            # set up its environment (read then, environ is empty).
            envs = {k: environ_of(k) for k in kids}
            if not all("JIFFY_RANK" in e for e in envs.values()):
                return None
            return kids, envs

        kids, env0 = wait_until(ranks, 30, 0.02, f"both ranks of the stuck {flavour} job to exec")
        self.pids = sorted(kids, key=lambda k: int(env0[k]["JIFFY_RANK"]))
        self.env = [env0[k] for k in self.pids]
        time.sleep(settle)  # let both get through MPI_Init into their wait
        assert self.p.poll() is None, f"stuck job ended early: rc={self.p.returncode}"

    def kill_rank(self, rank, sig=signal.SIGKILL, timeout=30):
        t0 = time.monotonic()
        os.kill(self.pids[rank], sig)
        try:
            out, err = self.p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"jiffy did not end within {timeout}s after rank {rank} got {sig.name}")
        return self.p.returncode, out, err, time.monotonic() - t0


# --------------------------------------------------------------------------
# fixtures


@pytest.fixture(params=FLAVOURS)
def flavour(request):
    return request.param


@pytest.fixture
def mx(jx):
    """jx with MPI-related caller variables removed and TMPDIR set to a
    private directory (jx.tmpdir); fails the test if a job directory is left
    there."""
    for k in list(jx.env):
        if k.startswith(SCRUB_PREFIXES) or k in SCRUB_VARS:
            del jx.env[k]
    tmp = tempfile.mkdtemp(prefix="jfmpi-", dir="/tmp")
    jx.env["TMPDIR"] = tmp
    jx.tmpdir = tmp
    yield jx
    still_running = [p for p in jx.popens if p.poll() is None]
    left = job_dirs(tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    if not still_running and left:
        pytest.fail(f"teardown: job directories left in TMPDIR: {left}", pytrace=False)


# --------------------------------------------------------------------------
# basic programs, both MPIs, every size up to twice the machine


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("name", ["hello", "ring", "allreduce"])
def test_programs_all_sizes(mx, flavour, name, n):
    exe = prog(name, flavour)
    cp = mx.run(["-n", n, exe] + prog_args(name, n), timeout=60)
    assert cp.returncode == 0, f"rc={cp.returncode} stderr={cp.stderr!r}"
    assert sorted(lines(cp.stdout)) == expected_output(name, n), cp.stdout
    assert jiffy_lines(cp.stderr) == [], f"unexpected jiffy message: {cp.stderr!r}"
    assert job_dirs(mx.tmpdir) == [], "the job directory is removed when the job ends"


def test_oversubscribed_job_runs_alone_and_completes(mx, flavour):
    """-n 4 on this machine (2 cores here) waits for the whole machine and its
    ranks are spread over all of it; the MPI world is still whole."""
    ncores = len(machine_cores(mx))
    n = 2 * ncores
    cp = mx.run(["-l", "-n", n, prog("ring", flavour), n], timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == f"[0] ring ok {n}"


@pytest.mark.parametrize("factor", [4, 8])
def test_allreduce_up_to_the_oversubscription_limit(mx, flavour, factor):
    """The default limit is 8x the machine: MPI start-up still works there."""
    n = factor * len(machine_cores(mx))
    cp = mx.run(["-n", n, prog("allreduce", flavour)], timeout=120)
    assert cp.returncode == 0, cp.stderr
    assert lines(cp.stdout) == expected_output("allreduce", n)


@pytest.mark.parametrize("opts", [["-genvnone"], ["-genvlist", "PATH"], ["-bind-to", "none"],
                                  ["--tag-output"]], ids=["genvnone", "genvlist", "bind-none", "tag"])
def test_bootstrap_with_launch_options(mx, flavour, opts):
    """The bootstrap variables reach the ranks whatever the user's environment
    options pass on."""
    cp = mx.run(opts + ["-n", 2, prog("ring", flavour), 2], timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert lines(cp.stdout)[0].endswith("ring ok 2"), cp.stdout


# --------------------------------------------------------------------------
# failure semantics


@pytest.mark.parametrize("n", [2, 3])
def test_mpi_abort_exits_7_and_kills_all_ranks(mx, flavour, n):
    t0 = time.monotonic()
    cp = mx.run(["-n", n, prog("abort", flavour)], timeout=60)
    took = time.monotonic() - t0
    assert cp.returncode == 7, f"rc={cp.returncode} stderr={cp.stderr!r}"
    assert took < 10, f"abort should end the job at once, took {took:.1f}s"
    jl = jiffy_lines(cp.stderr)
    assert any("MPI_Abort" in l for l in jl), f"no jiffy line mentions MPI_Abort: {cp.stderr!r}"
    assert any(re.search(rf"\brank {n - 1}\b", l) for l in jl), f"the aborting rank is named: {jl}"
    assert_no_ranks_left(mx, "after MPI_Abort")


def test_mpi_abort_single_rank(mx, flavour):
    cp = mx.run(["-n", 1, prog("abort", flavour)], timeout=60)
    assert cp.returncode == 7, f"rc={cp.returncode} stderr={cp.stderr!r}"
    assert "MPI_Abort" in cp.stderr, cp.stderr


def test_exit_without_finalize_kills_the_job(mx, flavour):
    t0 = time.monotonic()
    cp = mx.run(["-n", 3, prog("nofinalize", flavour)], timeout=60)
    took = time.monotonic() - t0
    assert cp.returncode == 1, f"rc={cp.returncode} stderr={cp.stderr!r}"
    assert took < 10, f"the blocked ranks should be killed at once, took {took:.1f}s"
    jl = jiffy_lines(cp.stderr)
    assert any("without calling MPI_Finalize" in l and re.search(r"\brank 0\b", l) for l in jl), \
        cp.stderr
    assert_no_ranks_left(mx, "after exit without MPI_Finalize")


def test_rank_sigkilled_mid_job(mx, flavour):
    job = StuckJob(mx, flavour)
    others = [job.pids[0], job.launcher]
    rc, out, err, took = job.kill_rank(1)
    assert rc == 128 + signal.SIGKILL, f"rc={rc} stderr={err!r}"
    assert took < 10, f"the job should end at once, took {took:.1f}s"
    jl = jiffy_lines(err)
    assert any(re.search(r"\brank 1\b", l) and ("signal 9" in l or "SIGKILL" in l) for l in jl), err
    for pid in others:
        assert not pid_alive(pid), f"pid {pid} survived"
    assert_no_ranks_left(mx, "after a rank was SIGKILLed")
    assert job_dirs(mx.tmpdir) == []
    st = mx.status()
    assert st["running"] == [] and st["queued"] == []


def test_timeout_kills_stuck_mpi_job(mx, flavour):
    t0 = time.monotonic()
    job = StuckJob(mx, flavour, opts=["-timeout", "3"], settle=0)
    try:
        out, err = job.p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("-timeout 3 did not end a stuck MPI job within 30 s")
    took = time.monotonic() - t0
    assert job.p.returncode == 255, err
    assert "APPLICATION TIMED OUT" in err, err
    assert took < 15, f"took {took:.1f}s"
    for pid in job.pids:
        assert not pid_alive(pid)
    assert job_dirs(mx.tmpdir) == []


def test_sigterm_to_launcher_of_stuck_mpi_job(mx, flavour):
    job = StuckJob(mx, flavour)
    job.p.send_signal(signal.SIGTERM)
    try:
        out, err = job.p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("SIGTERM did not end a stuck MPI job within 30 s")
    assert job.p.returncode != 0, err
    for pid in job.pids:
        assert not pid_alive(pid)
    assert_no_ranks_left(mx, "after SIGTERM")
    assert job_dirs(mx.tmpdir) == []


# --------------------------------------------------------------------------
# MPMD


def test_mpmd_appnum(mx, flavour):
    exe = prog("mpmd", flavour)
    cp = mx.run(["-n", 1, exe, "A", ":", "-n", 2, exe, "B"], timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert sorted(lines(cp.stdout)) == [
        "mpmd A rank 0 of 3 appnum 0",
        "mpmd B rank 1 of 3 appnum 1",
        "mpmd B rank 2 of 3 appnum 1",
    ], cp.stdout


def test_mpmd_three_groups(mx, flavour):
    exe = prog("mpmd", flavour)
    cp = mx.run(["-n", 2, exe, "A", ":", "-n", 1, exe, "B", ":", "-n", 1, exe, "C"], timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert sorted(lines(cp.stdout)) == [
        "mpmd A rank 0 of 4 appnum 0",
        "mpmd A rank 1 of 4 appnum 0",
        "mpmd B rank 2 of 4 appnum 1",
        "mpmd C rank 3 of 4 appnum 2",
    ], cp.stdout


# --------------------------------------------------------------------------
# --mpi forcing and the never-contacted warning


def assert_singletons_warning(cp, n, what):
    assert cp.returncode == 0, f"{what}: rc={cp.returncode} {cp.stderr!r}"
    assert sorted(lines(cp.stdout)) == ["hello 0 of 1"] * n, f"{what}: {cp.stdout!r}"
    warn = [l for l in jiffy_lines(cp.stderr) if "warning" in l]
    assert len(warn) == 1, f"{what}: expected one jiffy warning, got {cp.stderr!r}"
    assert "contact" in warn[0] and "singleton" in warn[0], warn[0]


def test_mpi_none_mpich_runs_singletons_with_warning(mx):
    cp = mx.run(["--mpi=none", "-n", 2, prog("hello", "mpich")], timeout=60)
    assert_singletons_warning(cp, 2, "--mpi=none hello.mpich")


def test_mpi_pmi1_openmpi_runs_singletons_with_warning(mx):
    cp = mx.run(["--mpi=pmi1", "-n", 2, prog("hello", "openmpi")], timeout=60)
    assert_singletons_warning(cp, 2, "--mpi=pmi1 hello.openmpi")


def test_mpi_pmix_mpich_runs_singletons_with_warning(mx):
    cp = mx.run(["--mpi", "pmix", "-n", 2, prog("hello", "mpich")], timeout=60)
    assert_singletons_warning(cp, 2, "--mpi pmix hello.mpich")


@pytest.mark.parametrize("mode,fl", [("pmi1", "mpich"), ("pmix", "openmpi"), ("auto", "mpich"),
                                     ("auto", "openmpi")])
def test_mpi_matching_mode_works(mx, mode, fl):
    cp = mx.run([f"--mpi={mode}", "-n", 2, prog("hello", fl)], timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert sorted(lines(cp.stdout)) == expected_output("hello", 2)
    assert jiffy_lines(cp.stderr) == [], cp.stderr


def test_no_warning_for_single_rank_or_non_mpi(mx):
    cp = mx.run(["--mpi=none", "-n", 1, prog("hello", "mpich")], timeout=60)
    assert cp.returncode == 0 and cp.stdout.strip() == "hello 0 of 1"
    assert jiffy_lines(cp.stderr) == [], "a job of size 1 gets no warning"
    cp = mx.run(["-n", 2, "true"])
    assert cp.returncode == 0 and cp.stderr == "", "a non-MPI program gets no warning"


def test_mpi_bad_value(mx):
    msg = one_line_error(mx.run(["--mpi=bogus", "-n", 1, "true"]), "--mpi=bogus")
    assert "bogus" in msg and "--mpi" in msg, msg


# --------------------------------------------------------------------------
# variables that tools sniff


def test_mpich_style_variables_plain_program(mx):
    cp = mx.run(["-l", "-n", 2, "printenv"])
    assert cp.returncode == 0, cp.stderr
    envs = labelled_env(cp.stdout)
    assert sorted(envs) == [0, 1]
    fds = set()
    for r, e in envs.items():
        assert e.get("PMI_RANK") == str(r), e
        assert e.get("PMI_SIZE") == "2", e
        assert e.get("MPI_LOCALNRANKS") == "2", e
        assert e.get("MPI_LOCALRANKID") == str(r), e
        assert e.get("PMI_FD", "").isdigit() and int(e["PMI_FD"]) > 2, e
        fds.add(e["PMI_FD"])
        # A plain program may wrap an Open MPI one: it gets the PMIx
        # rendezvous (the server starts only if a rank connects).
        assert e.get("PMIX_NAMESPACE", "").startswith("jiffy."), e
        assert e.get("PMIX_RANK") == str(r), e
    cp = mx.run(["-n", 1, "printenv"])
    e = dict(l.split("=", 1) for l in cp.stdout.splitlines() if "=" in l)
    assert e.get("MPI_LOCALNRANKS") == "1" and e.get("MPI_LOCALRANKID") == "0", cp.stdout


@pytest.mark.parametrize("extra", [{}, {"JIFFY_FAST": "0"}])
def test_plain_program_names_neither_mpiexec_family(mx, extra):
    """PETSc's configure runs `$MPIEXEC -n 1 printenv` and stops when the
    variables name the other family than its MPI's: OMPI_COMM_WORLD_SIZE
    means Open MPI's mpirun, MPIR_CVAR_CH3 MPICH's hydra. jiffy serves both,
    so a program of neither shows neither (it still gets the PMIx
    rendezvous, which a wrapped Open MPI program needs, and PMI-1)."""
    cp = mx.run(["-n", 1, "printenv"], env=extra)
    assert cp.returncode == 0, cp.stderr
    assert "OMPI_COMM_WORLD_SIZE" not in cp.stdout and "MPIR_CVAR_CH3" not in cp.stdout, cp.stdout
    assert "PMIX_NAMESPACE=" in cp.stdout and "PMI_RANK=0" in cp.stdout, cp.stdout


def test_openmpi_style_variables_forced_pmix(mx):
    cp = mx.run(["--mpi=pmix", "-l", "-n", 2, "printenv"])
    assert cp.returncode == 0, cp.stderr
    envs = labelled_env(cp.stdout)
    assert sorted(envs) == [0, 1]
    for r, e in envs.items():
        want = {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": str(r),
                "OMPI_COMM_WORLD_LOCAL_RANK": str(r), "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
                "OMPI_COMM_WORLD_NODE_RANK": str(r), "PMIX_RANK": str(r)}
        for k, v in want.items():
            assert e.get(k) == v, f"rank {r}: {k}={e.get(k)!r}, want {v!r}"
        assert e.get("PMIX_NAMESPACE"), e
        assert e.get("OMPI_MCA_schizo") == "^orte", "Open MPI 4.1 needs schizo/orte out of the way"
    assert envs[0]["PMIX_NAMESPACE"] == envs[1]["PMIX_NAMESPACE"]
    assert "PMI_FD" not in envs[0], "--mpi=pmix serves PMIx only"


def test_variables_of_real_programs(mx, flavour):
    """The variables of real MPI ranks launched with no flags (read from
    /proc/PID/environ while they wait in MPI)."""
    job = StuckJob(mx, flavour)
    try:
        for r, e in enumerate(job.env):
            assert e.get("PMI_RANK") == str(r) and e.get("PMI_SIZE") == "2", e
            assert e.get("MPI_LOCALNRANKS") == "2" and e.get("MPI_LOCALRANKID") == str(r)
            assert e.get("JIFFY_RANK") == str(r) and e.get("JIFFY_SIZE") == "2"
            if flavour == "openmpi":
                for k, v in {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": str(r),
                             "OMPI_COMM_WORLD_LOCAL_RANK": str(r),
                             "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
                             "OMPI_COMM_WORLD_NODE_RANK": str(r), "PMIX_RANK": str(r)}.items():
                    assert e.get(k) == v, f"rank {r}: {k}={e.get(k)!r}, want {v!r}"
                assert e.get("PMIX_NAMESPACE") == job.env[0]["PMIX_NAMESPACE"]
            else:
                assert not any(k.startswith("PMIX_") for k in e), \
                    "an MPICH program needs no PMIx server"
                assert "OMPI_COMM_WORLD_SIZE" not in e
    finally:
        rc, _, err, _ = job.kill_rank(0)
    assert rc == 137, err


# --------------------------------------------------------------------------
# opt-in speed-ups


def printenv_ranks(jx, opts, env=None):
    cp = jx.run(list(opts) + ["-l", "-n", 2, "printenv"], env=env)
    assert cp.returncode == 0, cp.stderr
    envs = labelled_env(cp.stdout)
    assert sorted(envs) == [0, 1], cp.stdout
    return envs


def check_topology_file(jx, path):
    p = Path(path)
    assert p.is_absolute() and p.is_file(), f"HWLOC_XMLFILE {path} is not a file"
    assert p.parent == Path(jx.runtime_dir), f"{path} should be in the runtime dir"
    assert os.access(p, os.R_OK)
    head = p.read_text()[:4000]
    assert head.startswith("<?xml") and "<topology" in head, head[:200]


# src/launch/rank_defaults.h: HWLOC_PLUGINS_PATH beside the topology cache.
NO_HWLOC_PLUGINS = "/nonexistent-jiffy-no-hwloc-plugins"

# Both launchers: the front (the daemon runs) and jiffy-launch (JIFFY_FAST=0).
LAUNCHERS = {"front": {}, "jiffy-launch": {"JIFFY_FAST": "0"}}


@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.parametrize("how", ["default", "option", "env"])
def test_topology_cache(mx, how, launcher):
    opts, env = {"default": ([], {}), "option": (["--topology-cache"], {}),
                 "env": ([], {"JIFFY_TOPOLOGY_CACHE": "1"})}[how]
    mx.run(["-n", 1, "true"])  # the daemon runs and has written its XML
    envs = printenv_ranks(mx, opts, {**env, **LAUNCHERS[launcher]})
    for e in envs.values():
        assert e.get("HWLOC_THISSYSTEM") == "1", e
        check_topology_file(mx, e["HWLOC_XMLFILE"])
        # With the XML, hwloc needs no plugin: none is loaded.
        assert e.get("HWLOC_PLUGINS_PATH") == NO_HWLOC_PLUGINS, e
        assert not Path(e["HWLOC_PLUGINS_PATH"]).exists()
    assert envs[0]["HWLOC_XMLFILE"] == envs[1]["HWLOC_XMLFILE"]


@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.parametrize("opts,env", [
    (["--no-topology-cache"], {}),
    ([], {"JIFFY_TOPOLOGY_CACHE": "0"}),
    (["--no-topology-cache"], {"JIFFY_TOPOLOGY_CACHE": "1"}),  # the option beats the variable
    (["--mpi=none"], {}),                                      # not an MPI job
])
def test_topology_cache_opt_out(mx, opts, env, launcher):
    mx.run(["-n", 1, "true"])
    for e in printenv_ranks(mx, opts, {**env, **LAUNCHERS[launcher]}).values():
        assert "HWLOC_XMLFILE" not in e and "HWLOC_THISSYSTEM" not in e and "HWLOC_PLUGINS_PATH" not in e, e


def test_topology_cache_option_beats_variable(mx):
    for e in printenv_ranks(mx, ["--topology-cache"], {"JIFFY_TOPOLOGY_CACHE": "0"}).values():
        check_topology_file(mx, e["HWLOC_XMLFILE"])


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_topology_cache_respects_user_value(mx, tmp_path, launcher):
    """A user's own XML may describe another machine: neither variable is
    touched."""
    mx.run(["-n", 1, "true"])
    mine = tmp_path / "mine.xml"
    mine.write_text("<?xml version=\"1.0\"?>\n")
    for e in printenv_ranks(mx, [], {"HWLOC_XMLFILE": str(mine), **LAUNCHERS[launcher]}).values():
        assert e["HWLOC_XMLFILE"] == str(mine)
        assert "HWLOC_THISSYSTEM" not in e and "HWLOC_PLUGINS_PATH" not in e, e
    for e in printenv_ranks(mx, ["--topology-cache"], {"HWLOC_THISSYSTEM": "0", "HWLOC_PLUGINS_PATH": str(tmp_path),
                                                       **LAUNCHERS[launcher]}).values():
        assert e["HWLOC_THISSYSTEM"] == "0" and e["HWLOC_PLUGINS_PATH"] == str(tmp_path)
        check_topology_file(mx, e["HWLOC_XMLFILE"])


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_topology_cache_without_xml(mx, launcher):
    """The XML gone (removed; a daemon that could not write it): the ranks
    get no variable (hwloc would fail on a missing file) and MPI works."""
    path = Path(printenv_ranks(mx, [])[0]["HWLOC_XMLFILE"])
    path.unlink()
    env = LAUNCHERS[launcher]
    for e in printenv_ranks(mx, [], env).values():
        assert "HWLOC_XMLFILE" not in e and "HWLOC_THISSYSTEM" not in e and "HWLOC_PLUGINS_PATH" not in e, e
    for flavour in FLAVOURS:
        cp = mx.run(["-n", 2, prog("hello", flavour)], env=env, timeout=60)
        assert cp.returncode == 0 and sorted(lines(cp.stdout)) == expected_output("hello", 2), cp.stderr


def hwloc_views(jx, opts, n, env=None, preexec_fn=None):
    """{rank: [lines of tests/programs/hwloc_view]} of `jiffy opts -l -n n
    hwloc_view`."""
    argv = [jx.bin] + list(opts) + ["-l", "-n", str(n), str(BUILD / "test-programs" / "hwloc_view")]
    cp = subprocess.run(argv, env=jx._env(env), preexec_fn=preexec_fn, capture_output=True, text=True,
                        timeout=60, stdin=subprocess.DEVNULL)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    views = {}
    for line in lines(cp.stdout):
        m = re.match(r"^\[(\d+)\] (.*)$", line)
        assert m, line
        views.setdefault(int(m.group(1)), []).append(m.group(2))
    assert sorted(views) == list(range(n)), cp.stdout
    for r, v in views.items():
        assert len(v) == 5 and "load-failed" not in cp.stdout, cp.stdout
        # hwloc's binding is what the kernel says (MPI's binding queries read either).
        affinity = parse_cpu_list(v[-1].split("=", 1)[1])
        for line in v[:-1]:
            bind = re.search(r" bind=(\S+)", line).group(1)
            assert parse_cpu_list(bind) == affinity, (r, line, v[-1])
    return views


def assert_same_views(mx, n, env=None, preexec_fn=None):
    mx.run(["-n", 1, "true"], env=env)
    cached = hwloc_views(mx, [], n, env, preexec_fn)
    discovered = hwloc_views(mx, ["--no-topology-cache"], n, env, preexec_fn)
    assert cached == discovered
    return cached


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_topology_cache_shows_ranks_the_machine(mx, launcher):
    """hwloc in a rank sees from the daemon's XML exactly what it finds by
    itself: counts, allowed sets, binding, the object tree, loaded as MPICH
    loads it (default flags), as Open MPI does (disallowed objects kept) and
    with I/O objects (NIC and GPU locality)."""
    n = min(2, len(os.sched_getaffinity(0)))
    views = assert_same_views(mx, n, LAUNCHERS[launcher])
    assert all("thissystem=1" in line for v in views.values() for line in v[:-1])


def test_topology_cache_under_an_affinity_mask(mx):
    """Under taskset the daemon is another one (its key is the mask), yet
    the mask is not hwloc's "allowed": ranks see the whole machine and their
    binding, as without the XML."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs 2 CPUs")

    def pin():
        os.sched_setaffinity(0, {cpus[0]})

    try:
        views = assert_same_views(mx, 1, preexec_fn=pin)
        assert views[0][-1] == f"affinity={cpus[0]}"
        path = subprocess.run([mx.bin, "-n", "1", "printenv", "HWLOC_XMLFILE"], env=mx.env, preexec_fn=pin,
                              capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL).stdout.strip()
        check_topology_file(mx, path)
        assert path != printenv_ranks(mx, [])[0]["HWLOC_XMLFILE"], "each resource set has its own file"
        h = subprocess.run([mx.bin, "-n", "1", prog("hello", "mpich")], env=mx.env, preexec_fn=pin,
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert h.returncode == 0 and h.stdout.strip() == "hello 0 of 1", h.stderr
    finally:
        subprocess.run([mx.bin, "stop"], env=mx.env, preexec_fn=pin, timeout=15, capture_output=True)


def cpuset_cgroup(cpu):
    """A cgroup v1 cpuset holding only cpu, or None where we cannot make one
    (not root, no writable cpuset hierarchy)."""
    root = Path("/sys/fs/cgroup/cpuset")
    try:
        d = root / f"jiffy-test-{os.getpid()}-{time.monotonic_ns()}"
        d.mkdir()
    except OSError:
        return None
    try:
        (d / "cpuset.cpus").write_text(str(cpu))
        (d / "cpuset.mems").write_text((root / "cpuset.mems").read_text().strip())
    except OSError:
        d.rmdir()
        return None
    return d


def test_topology_cache_within_a_cgroup_cpuset(mx):
    """In a cpuset cgroup, hwloc's allowed set is the cgroup's: the XML the
    daemon there writes gives ranks the same view as their own discovery
    (MPICH's load drops the disallowed CPUs, Open MPI's keeps them)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs 2 CPUs")
    cg = cpuset_cgroup(cpus[-1])
    if cg is None:
        pytest.skip("cannot create a cgroup v1 cpuset here (needs root and /sys/fs/cgroup/cpuset)")

    def enter():
        (cg / "cgroup.procs").write_text(str(os.getpid()))

    try:
        views = assert_same_views(mx, 1, preexec_fn=enter)
        default = views[0][0]
        assert f"allowed={cpus[-1]} " in default and "cores=1 " in default, default
        disallowed = views[0][1]
        assert f"allowed={cpus[-1]} " in disallowed and f"cores=1 " not in disallowed, disallowed
    finally:
        subprocess.run([mx.bin, "stop"], env=mx.env, preexec_fn=enter, timeout=15, capture_output=True)
        # the daemon left with `stop`; its successor's rmdir waits for the last process
        wait_until(lambda: not (cg / "cgroup.procs").read_text().strip(), timeout=15)
        cg.rmdir()


def mpi_env(jx, flavour, opts, names, env=None, n=2):
    """{rank: {name: value or None}} as an MPI program's ranks got them."""
    cp = jx.run(list(opts) + ["-n", n, prog("getenv", flavour)] + list(names), env=env, timeout=60)
    assert cp.returncode == 0, cp.stderr
    out = {}
    for line in lines(cp.stdout):
        r, rest = line.split(" ", 1)
        name, value = (rest.split("=", 1) if "=" in rest else (rest.split(" ")[0], None))
        out.setdefault(int(r), {})[name] = value
    assert sorted(out) == list(range(n)), cp.stdout
    return out


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_mpich_ranks_get_ucx_shared_memory(mx, launcher):
    mx.run(["-n", 1, "true"])
    names = ["UCX_TLS", "UCX_MODULES", "UCX_MM_RX_BUFS_GROW", "HWLOC_XMLFILE"]
    for e in mpi_env(mx, "mpich", [], names, LAUNCHERS[launcher]).values():
        assert e["UCX_TLS"] == "self,sm", e
        assert e["UCX_MODULES"] == "^ib,rdmacm", e  # nor the modules of the transports left out
        assert e["UCX_MM_RX_BUFS_GROW"] == "32", e  # nor megabytes of receive buffers at MPI_Init
        check_topology_file(mx, e["HWLOC_XMLFILE"])


@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.parametrize("opts,env,want,modules,grow", [
    (["--no-ucx-shm"], {}, None, None, None),
    ([], {"JIFFY_UCX_SHM": "0"}, None, None, None),
    (["--no-ucx-shm"], {"JIFFY_UCX_SHM": "1"}, None, None, None),  # the option beats the variable
    (["--ucx-shm"], {"JIFFY_UCX_SHM": "0"}, "self,sm", "^ib,rdmacm", "32"),
    ([], {"UCX_TLS": "tcp,self"}, "tcp,self", None, None),         # the user's own: nothing of ours
    ([], {"UCX_MODULES": "^cma"}, "self,sm", "^cma", "32"),        # the user's own modules
    ([], {"UCX_MM_RX_BUFS_GROW": "256"}, "self,sm", "^ib,rdmacm", "256"),  # the user's own growth
])
def test_ucx_shared_memory_opt_out(mx, opts, env, want, modules, grow, launcher):
    mx.run(["-n", 1, "true"])
    names = ["UCX_TLS", "UCX_MODULES", "UCX_MM_RX_BUFS_GROW"]
    for e in mpi_env(mx, "mpich", opts, names, {**env, **LAUNCHERS[launcher]}).values():
        assert e["UCX_TLS"] == want and e["UCX_MODULES"] == modules and e["UCX_MM_RX_BUFS_GROW"] == grow, e


def test_ucx_shared_memory_only_for_mpich_without_gpus(mx):
    got = mpi_env(mx, "openmpi", [], ["UCX_TLS", "UCX_MODULES", "UCX_MM_RX_BUFS_GROW"])
    assert all(v is None for e in got.values() for v in e.values()), got
    for e in printenv_ranks(mx, []).values():  # a plain program (or a wrapper of anything)
        assert "UCX_TLS" not in e and "UCX_MODULES" not in e and "UCX_MM_RX_BUFS_GROW" not in e
    # A job given GPUs needs UCX's GPU transports.
    gpus = {"JIFFY_GPUS": "2"}
    mx.run(["-n", 1, "true"], env=gpus)
    try:
        got = mpi_env(mx, "mpich", ["-g", 1], ["UCX_TLS", "UCX_MODULES", "UCX_MM_RX_BUFS_GROW"], gpus)
        assert all(v is None for e in got.values() for v in e.values()), got
        got = mpi_env(mx, "mpich", [], ["UCX_TLS"], gpus)  # the same set, no GPU asked for
        assert all(e["UCX_TLS"] == "self,sm" for e in got.values()), got
    finally:
        mx.run(["stop"], env=gpus)


# Shared memory within a world, TCP on loopback between the worlds of an
# MPI_Comm_spawn (vader reaches its own job's ranks only).
OMPI_BTL = "self,vader,tcp"


@pytest.mark.parametrize("how", ["default", "option", "env"])
def test_single_node_ompi(mx, how):
    opts, env = {"default": ([], None), "option": (["--single-node-ompi"], {"JIFFY_SINGLE_NODE_OMPI": "0"}),
                 "env": ([], {"JIFFY_SINGLE_NODE_OMPI": "1"})}[how]
    for e in printenv_ranks(mx, ["--mpi=pmix"] + opts, env).values():
        assert e.get("OMPI_MCA_pml") == "ob1", e.get("OMPI_MCA_pml")
        assert e.get("OMPI_MCA_btl") == OMPI_BTL, e.get("OMPI_MCA_btl")
        assert e.get("OMPI_MCA_btl_tcp_if_include") == "lo", e.get("OMPI_MCA_btl_tcp_if_include")
    for e in mpi_env(mx, "openmpi", opts, ["OMPI_MCA_pml", "OMPI_MCA_btl"], env).values():
        assert e == {"OMPI_MCA_pml": "ob1", "OMPI_MCA_btl": OMPI_BTL}, e


@pytest.mark.parametrize("opts,env", [
    (["--no-single-node-ompi"], None),
    ([], {"JIFFY_SINGLE_NODE_OMPI": "0"}),
    (["--no-single-node-ompi"], {"JIFFY_SINGLE_NODE_OMPI": "1"}),  # the option beats the variable
])
def test_single_node_ompi_opt_out(mx, opts, env):
    for e in printenv_ranks(mx, ["--mpi=pmix"] + opts, env).values():
        assert e.get("OMPI_MCA_pml") != "ob1", e.get("OMPI_MCA_pml")
        assert "OMPI_MCA_btl" not in e, e.get("OMPI_MCA_btl")
    cp = mx.run(opts + ["-n", 2, prog("allreduce", "openmpi")], env=env, timeout=60)
    assert cp.returncode == 0 and cp.stdout.strip() == "allreduce ok 1", cp.stderr


def test_single_node_ompi_not_for_gpu_jobs(mx):
    gpus = {"JIFFY_GPUS": "2"}
    mx.run(["-n", 1, "true"], env=gpus)
    try:
        got = mpi_env(mx, "openmpi", ["-g", 1], ["OMPI_MCA_btl"], gpus)
        assert all(e["OMPI_MCA_btl"] is None for e in got.values()), got
        got = mpi_env(mx, "openmpi", [], ["OMPI_MCA_btl"], gpus)  # the same set, no GPU asked for
        assert all(e["OMPI_MCA_btl"] == OMPI_BTL for e in got.values()), got
    finally:
        mx.run(["stop"], env=gpus)


@pytest.mark.parametrize("how", ["-x", "env", "--mca", "-genv"])
def test_single_node_ompi_respects_user_pml(mx, how):
    opts, env = ["--mpi=pmix", "--single-node-ompi"], None
    if how == "-x":
        opts += ["-x", "OMPI_MCA_pml=ucx"]
    elif how == "--mca":
        opts += ["--mca", "pml", "ucx"]
    elif how == "-genv":
        opts += ["-genv", "OMPI_MCA_pml", "ucx"]
    else:
        env = {"OMPI_MCA_pml": "ucx", "OMPI_MCA_btl": "self,tcp"}
    for e in printenv_ranks(mx, opts, env).values():
        assert e.get("OMPI_MCA_pml") == "ucx", f"{how}: the user's pml is kept, got {e.get('OMPI_MCA_pml')}"
        if how == "env":
            assert e.get("OMPI_MCA_btl") == "self,tcp"


@pytest.mark.parametrize("var", ["JIFFY_TOPOLOGY_CACHE", "JIFFY_SINGLE_NODE_OMPI"])
def test_speedup_env_bad_value(mx, var):
    cp = mx.run(["-n", 1, "true"], env={var: "yes"})
    msg = one_line_error(cp, f"{var}=yes")
    assert var in msg and "yes" in msg, msg
    assert rank_processes(mx) == []


@pytest.mark.parametrize("how", ["options", "env"])
def test_hello_with_speedups(mx, flavour, how):
    opts, env = ((["--single-node-ompi"], None) if how == "options"
                 else ([], {"JIFFY_SINGLE_NODE_OMPI": "1"}))
    for n in (1, 2, 4):
        cp = mx.run(opts + ["-n", n, prog("hello", flavour)], env=env, timeout=60)
        assert cp.returncode == 0, cp.stderr
        assert sorted(lines(cp.stdout)) == expected_output("hello", n)
        assert jiffy_lines(cp.stderr) == [], cp.stderr
    cp = mx.run(opts + ["-n", 2, prog("allreduce", flavour)], env=env, timeout=60)
    assert cp.returncode == 0 and cp.stdout.strip() == "allreduce ok 1", cp.stderr


def test_speedups_reach_real_openmpi_ranks(mx):
    job = StuckJob(mx, "openmpi", opts=["--single-node-ompi"])  # the topology cache is the default
    try:
        for e in job.env:
            assert e.get("OMPI_MCA_pml") == "ob1" and e.get("OMPI_MCA_btl") == OMPI_BTL, e
            assert e.get("HWLOC_THISSYSTEM") == "1"
            check_topology_file(mx, e["HWLOC_XMLFILE"])
    finally:
        job.kill_rank(1)


# What an application process served by jiffy's PMIx never uses: mpirun's,
# its daemons', tools', batch systems' components (Bootstrap's
# kOmpiAppProcess), left unopened.
OMPI_APP_PROCESS = {
    "OMPI_MCA_ess": "^env,hnp,singleton,tool,slurm,alps,lsf,tm",
    "OMPI_MCA_pmix": "^isolated,flux,s1,s2,cray",
    "OMPI_MCA_state": "^hnp,orted,novm,tool,dvm",
    "OMPI_MCA_errmgr": "^default_hnp,default_orted,default_tool,dvm",
    "OMPI_MCA_schizo": "^orte,slurm,flux,jsm,alps,moab,singularity",
}


@pytest.mark.parametrize("opts", [[], ["--no-single-node-ompi"], ["--mpi=pmix"]])
def test_openmpi_ranks_skip_the_components_of_mpirun_and_its_daemons(mx, opts):
    for e in mpi_env(mx, "openmpi", opts, list(OMPI_APP_PROCESS)).values():
        assert e == OMPI_APP_PROCESS, e


def test_openmpi_app_process_components_not_for_others(mx, wx):
    names = list(OMPI_APP_PROCESS)
    # A PMIx job of another program (it may run mpirun, whose daemons need
    # them), and an Open MPI program behind a wrapper: only schizo's B7 entry.
    for e in printenv_ranks(mx, ["--mpi=pmix"]).values():
        assert {n: e.get(n) for n in names} == {**dict.fromkeys(names), "OMPI_MCA_schizo": "^orte"}, e
    cp = wx.run(["-n", 2] + wrapped(wx, "env", [prog("getenv", "openmpi")] + names), timeout=60)
    assert cp.returncode == 0, cp.stderr
    for line in lines(cp.stdout):
        if "OMPI_MCA_schizo" in line:
            assert line.endswith("=^orte"), line
        else:
            assert "=" not in line, line


@pytest.mark.parametrize("how", ["--mca", "env"])
def test_openmpi_app_process_components_respect_the_users(mx, how):
    opts, env = (["--mca", "ess", "pmi", "--mca", "schizo", "ompi"], None) if how == "--mca" \
        else ([], {"OMPI_MCA_ess": "pmi", "OMPI_MCA_schizo": "ompi"})
    for e in mpi_env(mx, "openmpi", opts, list(OMPI_APP_PROCESS), env).values():
        assert e == {**OMPI_APP_PROCESS, "OMPI_MCA_ess": "pmi", "OMPI_MCA_schizo": "ompi"}, e


@pytest.mark.parametrize("n", [2, 3])
def test_openmpi_parts_left_to_open_mpi_still_work(mx, tmp_path, n):
    # One-sided (osc), MPI-IO (io, fcoll, fs), non-blocking collectives and
    # communicators (coll) under every default of ours. (At -n 1 Open MPI
    # 4.1's MPI_Win_create fails under mpirun too: no osc component takes a
    # one-process window.)
    cp = mx.run(["-n", n, prog("features", "openmpi"), tmp_path], timeout=120)
    assert cp.returncode == 0 and cp.stdout.strip() == "features ok", (cp.stdout, cp.stderr)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------
# the per-job Open MPI directory


def check_job_dir(job, parent):
    e = job.env[0]
    d = e.get("OMPI_MCA_btl_vader_backing_directory")
    assert d, "Open MPI ranks get a vader backing directory"
    p = Path(d)
    assert p.parent == Path(parent), f"{d} should be in {parent}"
    m = JOB_DIR_RE.match(p.name)
    assert m, f"unexpected job directory name {p.name}"
    assert int(m.group(1)) == os.geteuid() and m.group(2) == e["JIFFY_JOB_ID"], p.name
    st = p.stat()
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
    assert stat.S_IMODE(st.st_mode) & 0o077 == 0, f"{d} is private: {oct(st.st_mode)}"
    for other in job.env[1:]:
        assert other["OMPI_MCA_btl_vader_backing_directory"] == d, "one directory per job"
    k = "OMPI_MCA_orte_tmpdir_base"
    assert e[k] == d or e[k].startswith(d + "/"), f"{k}={e[k]} is outside {d}"
    # libpmix's own files are the shared server's (launch/pmix_shared.h), in
    # the private runtime directory: none of the job's
    server_dir = Path(e["PMIX_SERVER_TMPDIR"])
    assert server_dir.parent == Path(job.jx.runtime_dir) and server_dir.name.startswith("pmix-"), server_dir
    assert stat.S_IMODE(server_dir.stat().st_mode) & 0o077 == 0, oct(server_dir.stat().st_mode)
    return p


def test_openmpi_job_dir_in_tmpdir_removed_after(mx):
    job = StuckJob(mx, "openmpi")
    d = check_job_dir(job, mx.tmpdir)
    assert job_dirs(mx.tmpdir) == [d.name]
    rc, _, err, _ = job.kill_rank(0)
    assert rc == 137, err
    assert not d.exists(), f"{d} is removed after the job"


def test_openmpi_job_dir_default_tmp(mx):
    env = dict(mx.env)
    env.pop("TMPDIR")
    mx.env = env
    job = StuckJob(mx, "openmpi")
    d = check_job_dir(job, "/tmp")
    rc, _, err, _ = job.kill_rank(1)
    assert rc == 137, err
    assert not d.exists(), f"{d} is removed after the job"


def test_openmpi_job_dir_removed_after_abort_and_nofinalize(mx):
    assert mx.run(["-n", 2, prog("abort", "openmpi")], timeout=60).returncode == 7
    assert mx.run(["-n", 2, prog("nofinalize", "openmpi")], timeout=60).returncode == 1
    assert mx.run(["-n", 2, prog("hello", "openmpi")], timeout=60).returncode == 0
    assert job_dirs(mx.tmpdir) == []


def test_concurrent_openmpi_jobs_have_distinct_dirs(mx, fake_daemon):
    fake_daemon(cores=4)
    a = StuckJob(mx, "openmpi", settle=0)
    b = StuckJob(mx, "openmpi")
    da, db = check_job_dir(a, mx.tmpdir), check_job_dir(b, mx.tmpdir)
    assert da != db, "concurrent jobs never share Open MPI's shared-memory directory"
    assert a.env[0]["PMIX_NAMESPACE"] != b.env[0]["PMIX_NAMESPACE"]
    assert a.p.poll() is None and b.p.poll() is None, "both jobs run at once"
    assert sorted(job_dirs(mx.tmpdir)) == sorted([da.name, db.name])
    assert a.kill_rank(1)[0] == 137
    assert not da.exists() and db.exists(), "only the finished job's directory goes"
    assert b.kill_rank(1)[0] == 137
    assert not db.exists()


def test_openmpi_job_dir_removed_after_launcher_sigkill(mx):
    """A launcher killed by SIGKILL cannot clean up: its ranks die with it
    and the job's directory still goes (the daemon removes it)."""
    job = StuckJob(mx, "openmpi")
    d = check_job_dir(job, mx.tmpdir)
    job.p.kill()
    job.p.communicate(timeout=10)
    for pid in job.pids:
        wait_until(lambda: not pid_alive(pid), 10, what=f"rank {pid} to die with its launcher")
    try:
        wait_until(lambda: not d.exists(), 5, what=f"{d} to be removed")
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------
# nested launches


NESTED_PY = """\
import subprocess, sys
cp = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stdout.write(cp.stdout)
sys.stderr.write(cp.stderr)
sys.exit(cp.returncode)
"""


def test_nested_jiffy_under_pmix_job(mx, fake_daemon, tmp_path):
    """A driver script run under jiffy (an interpreter, so it gets PMIx) that
    itself launches an Open MPI job (as a test harness would)."""
    fake_daemon(cores=4)
    script = tmp_path / "nested.py"
    script.write_text(NESTED_PY)
    py = os.path.realpath(sys.executable)
    # -bind-to none: the driver keeps the whole cpuset, so the inner jiffy
    # reaches the same (fake, 4-core) daemon instead of starting its own
    cp = mx.run(["-bind-to", "none", "-n", 1, py, script, mx.bin, "-n", 2, prog("hello", "openmpi")],
                timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert sorted(lines(cp.stdout)) == expected_output("hello", 2), cp.stderr


# --------------------------------------------------------------------------
# concurrency: mixed MPICH and Open MPI jobs


# Runs in each rank: records the grant (JIFFY_CORES, affinity) and times around
# the MPI program, which it runs as a child with the inherited PMI fd and PMIx
# variables. An interpreter, so jiffy serves both PMI-1 and PMIx with no flags.
RECORDER_PY = """\
import os, subprocess, sys, time
out, tag = sys.argv[1], sys.argv[2]
e = os.environ
path = os.path.join(out, tag + "." + e["JIFFY_RANK"])
def w(s):
    with open(path, "a") as f:
        f.write(s)
cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
w("job=%s\\nrank=%s\\nsize=%s\\ncores=%s\\ncpus=%s\\nvader=%s\\nstart_ns=%d\\n" % (
    e["JIFFY_JOB_ID"], e["JIFFY_RANK"], e["JIFFY_SIZE"], e.get("JIFFY_CORES", ""), cpus,
    e.get("OMPI_MCA_btl_vader_backing_directory", ""), time.monotonic_ns()))
rc = subprocess.run(sys.argv[3:], close_fds=False).returncode
w("rc=%d\\nend_ns=%d\\n" % (rc, time.monotonic_ns()))
sys.exit(rc if rc >= 0 else 128 - rc)
"""


def test_mixed_mpich_openmpi_concurrent(mx, tmp_path):
    for f in FLAVOURS:
        prog("ring", f), prog("allreduce", f)
    cmap = machine_cores(mx)
    recorder = tmp_path / "recorder.py"
    recorder.write_text(RECORDER_PY)
    outdir = tmp_path / "rec"
    outdir.mkdir()
    py = os.path.realpath(sys.executable)
    rnd = random.Random(7)
    jobs = []
    for i in range(96):
        name = rnd.choice(["ring", "allreduce"])
        fl = FLAVOURS[i % 2]
        n = rnd.choice([1, 2]) if len(cmap) >= 2 else 1
        jobs.append({"tag": f"m{i}", "name": name, "flavour": fl, "n": n})

    def one(j):
        return mx.run(["-n", j["n"], py, recorder, outdir, j["tag"], prog(j["name"], j["flavour"])]
                      + prog_args(j["name"], j["n"]), timeout=120)

    t0 = time.monotonic()
    results = run_concurrently(12, jobs, one)
    took = time.monotonic() - t0
    bad = [(j["tag"], j["flavour"], j["name"], j["n"], cp.returncode, cp.stdout, cp.stderr[-300:])
           for j, cp in zip(jobs, results)
           if cp.returncode != 0 or lines(cp.stdout) != expected_output(j["name"], j["n"])
           or jiffy_lines(cp.stderr)]
    assert not bad, f"{len(bad)} wrong results, e.g. {bad[:5]}"
    recs = read_records(outdir)
    traces = []
    vader = {}
    for j in jobs:
        ranks = recs.get(j["tag"], {})
        assert sorted(ranks) == list(range(j["n"])), f"{j['tag']}: ranks {sorted(ranks)}"
        assert len({r["job"] for r in ranks.values()}) == 1
        for r, rec in ranks.items():
            assert rec.get("rc") == "0" and "end_ns" in rec, (j["tag"], rec)
            assert rec["size"] == str(j["n"])
            check_rank_affinity(rec, cmap, j["tag"], ranks)
        per_rank = [parse_cpu_list(r["cores"]) for r in ranks.values()]
        assert len(set().union(*per_rank)) == sum(map(len, per_rank)), f"{j['tag']}: {per_rank}"
        dirs = {r["vader"] for r in ranks.values()}
        assert len(dirs) == 1, f"{j['tag']}: ranks disagree on the vader directory {dirs}"
        d = dirs.pop()
        assert d.startswith(mx.tmpdir + "/"), f"{j['tag']}: vader directory {d!r} not in TMPDIR"
        vader[j["tag"]] = d
        traces.append(JobTrace(j["tag"], ranks))
    bad = find_overlaps(traces)
    assert not bad, f"{len(bad)} overlapping jobs share cores, e.g. {bad[:3]}"
    assert len(set(vader.values())) == len(vader), "every job has its own vader directory"
    overlapping = sum(1 for i, a in enumerate(traces) for b in traces[i + 1:]
                      if a.start < b.end and b.start < a.end)
    st = mx.status()
    assert st["running"] == [] and st["queued"] == []
    print(f"96 mixed MPI jobs from 12 clients in {took:.1f}s; {overlapping} overlapping pairs")
    if len(cmap) >= 2:
        assert overlapping > 0, "some jobs ran at the same time (else nothing was tested)"


# --------------------------------------------------------------------------
# 200 MPI jobs through make -j8


def plan_make_jobs(count, seed, ncores):
    rnd = random.Random(seed)
    jobs = []
    for i in range(count):
        name = rnd.choice(["ring", "allreduce", "hello"])
        fl = rnd.choice(FLAVOURS)
        # sizes 1-4, weighted to the ones that fit beside others; 3 and 4 run
        # alone on a 2-core machine
        n = rnd.choice([1, 1, 2, 2, 2, 3, 4])
        jobs.append({"tag": f"j{i:03d}", "name": name, "flavour": fl, "n": n})
    return jobs


def test_200_mpi_jobs_make_j8(mx, tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    for f in FLAVOURS:
        for name in ("ring", "allreduce", "hello"):
            prog(name, f)
    ncores = len(machine_cores(mx))
    jobs = plan_make_jobs(200, 11, ncores)
    out = tmp_path / "out"
    out.mkdir()
    rules = []
    for j in jobs:
        args = " ".join(prog_args(j["name"], j["n"]))
        rules.append(f"out/{j['tag']}:\n"
                     f"\t$(JIFFY) -n {j['n']} $(MPI)/{j['name']}.{j['flavour']} {args} "
                     f"> $@.tmp 2> $@.err && mv $@.tmp $@\n")
    makefile = tmp_path / "Makefile"
    makefile.write_text(f"JIFFY := {mx.bin}\nMPI := {MPI_DIR}\n"
                        ".PHONY: all\nall: " + " ".join(f"out/{j['tag']}" for j in jobs) + "\n\n"
                        + "\n".join(rules))
    t0 = time.monotonic()
    try:
        cp = subprocess.run(["make", "-k", "-j8", "-C", str(tmp_path)], env=mx.env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=400)
    except subprocess.TimeoutExpired:
        pytest.fail("make -j8 of 200 MPI jobs did not finish in 400 s")
    took = time.monotonic() - t0
    bad = []
    for j in jobs:
        p = out / j["tag"]
        err = (out / f"{j['tag']}.err").read_text() if (out / f"{j['tag']}.err").exists() else ""
        if not p.exists():
            bad.append((j, "failed", err[-300:]))
            continue
        got = sorted(lines(p.read_text()))
        if got != expected_output(j["name"], j["n"]):
            bad.append((j, got, err[-300:]))
        elif jiffy_lines(err):
            bad.append((j, "jiffy message", err[-300:]))
    assert not bad, f"{len(bad)} of 200 jobs wrong, e.g. {bad[:5]}; make said {cp.stderr[-1000:]!r}"
    assert cp.returncode == 0, cp.stderr[-2000:]
    st = mx.status()
    assert st["running"] == [] and st["queued"] == []
    sizes = {k: sum(1 for j in jobs if j["n"] == k) for k in (1, 2, 3, 4)}
    print(f"200 MPI jobs through make -j8 in {took:.1f}s (sizes {sizes})")


# --------------------------------------------------------------------------
# MPI programs behind a wrapper (valgrind, env, sh -c, a script...): jiffy
# cannot see the program, so every plain program's ranks get the PMIx
# rendezvous (launch/bootstrap.h). An Open MPI rank that connects gets its
# server then; it must never run as a singleton.

WRAPPERS = {
    "valgrind": ["valgrind", "--tool=none", "-q"],
    "env": ["env"],
    "nice": ["nice"],
    "timeout": ["timeout", "60"],
    "strace": ["strace", "-f", "-o", "/dev/null"],
    "sh-c": ["sh", "-c"],
    "bash-c": ["bash", "-c"],
    "script": None,  # a #!/bin/sh script that execs the program
}


def wrapped(mx, wrapper: str, argv: list) -> list:
    """argv run behind the wrapper, as a command line."""
    w = WRAPPERS[wrapper]
    if w is None:
        script = Path(mx.tmpdir).parent / f"jfwrap-{os.getpid()}-{random.getrandbits(32):x}.sh"
        script.write_text('#!/bin/sh\nexec "$@"\n')
        script.chmod(0o755)
        mx.wrapper_scripts = getattr(mx, "wrapper_scripts", []) + [script]
        return [str(script)] + argv
    if shutil.which(w[0]) is None:
        pytest.skip(f"{w[0]} is not installed")
    if w[-1] == "-c":
        return w + [" ".join(argv)]
    return w + argv


@pytest.fixture
def wx(mx):
    yield mx
    for s in getattr(mx, "wrapper_scripts", []):
        s.unlink(missing_ok=True)


def assert_one_world(cp, name, n, what):
    assert cp.returncode == 0, f"{what}: rc={cp.returncode} stderr={cp.stderr!r}"
    assert sorted(lines(cp.stdout)) == expected_output(name, n), f"{what}: {cp.stdout!r}"
    assert jiffy_lines(cp.stderr) == [], f"{what}: {cp.stderr!r}"


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_wrapped_program_forms_one_world(wx, flavour, wrapper):
    cmd = wrapped(wx, wrapper, [prog("hello", flavour)])
    cp = wx.run(["-n", 2] + cmd, timeout=120)
    assert_one_world(cp, "hello", 2, f"{wrapper} hello.{flavour}")
    assert job_dirs(wx.tmpdir) == [], "the job directory is removed when the job ends"


@pytest.mark.parametrize("wrapper", ["sh-c", "env", "script"])
def test_wrapped_ring_of_three(wx, flavour, wrapper):
    exe = prog("ring", flavour)
    cp = wx.run(["-n", 3] + wrapped(wx, wrapper, [exe] + prog_args("ring", 3)), timeout=120)
    assert_one_world(cp, "ring", 3, f"{wrapper} ring.{flavour}")


@pytest.mark.parametrize("how", [{"JIFFY_FAST": "0"}, {"MPIEXEC_TIMEOUT": "60"}])
def test_wrapped_openmpi_from_jiffy_launch(wx, how):
    """JIFFY_FAST=0: jiffy-launch serves the rendezvous from the start;
    MPIEXEC_TIMEOUT: the front runs the launch, and hands it over with its
    deadline when the rank connects."""
    cp = wx.run(["-n", 2, "env", prog("hello", "openmpi")], env=how, timeout=120)
    assert_one_world(cp, "hello", 2, f"{how} env hello.openmpi")


def test_wrapped_openmpi_with_labels(wx):
    cp = wx.run(["-l", "-n", 2, "sh", "-c", prog("hello", "openmpi")], timeout=120)
    assert cp.returncode == 0, cp.stderr
    assert sorted(lines(cp.stdout)) == ["[0] hello 0 of 2", "[1] hello 1 of 2"], cp.stdout


def test_wrapped_openmpi_abort_and_nofinalize(wx):
    cp = wx.run(["-n", 2, "env", prog("abort", "openmpi")], timeout=120)
    assert cp.returncode == 7, cp.stderr
    assert any("MPI_Abort" in l for l in jiffy_lines(cp.stderr)), cp.stderr
    cp = wx.run(["-n", 2, "env", prog("nofinalize", "openmpi")], timeout=120)
    assert cp.returncode != 0, cp.stderr
    assert any("without calling MPI_Finalize" in l for l in jiffy_lines(cp.stderr)), cp.stderr


@pytest.mark.parametrize("wrapper", ["env", "sh-c", "valgrind"])
def test_wrapped_matches_mpirun(wx, flavour, wrapper):
    mpirun = {"openmpi": ["mpirun.openmpi", "--allow-run-as-root", "--oversubscribe"],
              "mpich": ["mpiexec.mpich"]}[flavour]
    if shutil.which(mpirun[0]) is None:
        pytest.skip(f"{mpirun[0]} is not installed")
    cmd = wrapped(wx, wrapper, [prog("hello", flavour)])
    ref = subprocess.run(mpirun + ["-n", "2"] + cmd, capture_output=True, text=True, timeout=120,
                         env=wx._env(), stdin=subprocess.DEVNULL)
    assert ref.returncode == 0, ref.stderr
    cp = wx.run(["-n", 2] + cmd, timeout=120)
    assert cp.returncode == ref.returncode
    assert sorted(lines(cp.stdout)) == sorted(lines(ref.stdout)) == expected_output("hello", 2)


def test_plain_program_gets_the_rendezvous_but_no_server(wx):
    """Every rank of a plain program can reach the same PMIx rendezvous;
    nothing starts a server (no job directory) unless a rank connects."""
    cp = wx.run(["-l", "-n", 2, "printenv", "PMIX_NAMESPACE", "PMIX_RANK", "PMIX_SERVER_URI41"])
    assert cp.returncode == 0, cp.stderr
    envs = {}
    for l in lines(cp.stdout):
        r, v = l.split(" ", 1)
        envs.setdefault(r, []).append(v)
    assert envs["[0]"][0] == envs["[1]"][0] and envs["[0]"][0].startswith("jiffy.")
    assert envs["[0]"][1:2] == ["0"] and envs["[1]"][1:2] == ["1"]
    assert envs["[0]"][2] == envs["[1]"][2] and "tcp4://127.0.0.1:" in envs["[0]"][2]
    assert job_dirs(wx.tmpdir) == []


def test_wrapped_openmpi_without_jiffy_pmix_fails_clearly(wx, tmp_path):
    """An installation without jiffy-pmix cannot serve a wrapped Open MPI
    program: the job fails with a message, never as N singletons."""
    for name in ("jiffy", "jiffy-launch", "jiffyd"):
        shutil.copy2(Path(wx.bin).parent / name, tmp_path / name)
    wx.bin = str(tmp_path / "jiffy")
    cp = wx.run(["-n", 2, "env", prog("hello", "openmpi")], timeout=120)
    assert cp.returncode != 0, cp.stdout
    assert "hello 0 of 1" not in cp.stdout
    assert any("PMIx server" in l for l in jiffy_lines(cp.stderr)), cp.stderr


def test_forced_pmi1_on_a_wrapped_openmpi_program_fails_clearly(mx):
    """--mpi=pmi1 on a wrapper hiding an Open MPI program: its ranks would
    run as singletons and exit 0. The rendezvous tells that a rank wants
    PMIx, and the job fails saying so; a wrapped MPICH program runs."""
    cp = mx.run(["--mpi=pmi1", "-n", 2, "sh", "-c", f'exec "{prog("hello", "openmpi")}"'], timeout=120)
    assert cp.returncode != 0, cp.stdout
    assert "hello 0 of 1" not in cp.stdout, cp.stdout
    assert any("--mpi=pmi1" in l and "Open MPI" in l for l in jiffy_lines(cp.stderr)), cp.stderr
    cp = mx.run(["--mpi=pmi1", "-n", 2, "sh", "-c", f'exec "{prog("hello", "mpich")}"'], timeout=120)
    assert cp.returncode == 0, cp.stderr
    assert sorted(lines(cp.stdout)) == expected_output("hello", 2), cp.stdout
    assert jiffy_lines(cp.stderr) == [], cp.stderr


def shared_pmix_servers(jx) -> list:
    """The pids of the test's shared PMIx servers (launch/pmix_shared.h)."""
    return [p[0] for p in procs_with_marker(jx.marker) if is_jiffy_server(p) and p[1] == "jiffy-pmix"]


def served_by(cp) -> str:
    """The PMIx server's URI a getenv PMIX_SERVER_URI41 rank was told."""
    assert cp.returncode == 0, cp.stderr
    m = re.search(r"PMIX_SERVER_URI41=(\S+;tcp4://127\.0\.0\.1:\d+)", cp.stdout)
    assert m, cp.stdout
    return m.group(1)


def test_openmpi_is_served_by_the_shared_pmix_server_else_by_jiffy_pmix(mx, tmp_path):
    """An Open MPI launch is served by the resource set's shared PMIx server:
    the first starts it, the next ones use it (one process; the URI the
    ranks get is the same). A user who configures libpmix (PMIX_MCA_*) gets a
    server of that configuration: jiffy-pmix serves the job in its own
    process. With no jiffy-pmix at all, jiffy-launch says what is missing."""
    getenv = ["-n", 1, prog("getenv", "openmpi"), "PMIX_SERVER_URI41"]
    first, second = served_by(mx.run(getenv, timeout=60)), served_by(mx.run(getenv, timeout=60))
    servers = shared_pmix_servers(mx)
    assert len(servers) == 1 and second == first, (first, second, servers)
    own = served_by(mx.run(getenv, env={"PMIX_MCA_pmix_server_base_verbose": "0"}, timeout=60))
    assert own != first and shared_pmix_servers(mx) == servers
    assert mx.stop().returncode == 0
    wait_until(lambda: shared_pmix_servers(mx) == [], 10, what="the shared PMIx server gone after jiffy stop")
    for name in ("jiffy", "jiffy-launch", "jiffyd"):
        shutil.copy2(Path(mx.bin).parent / name, tmp_path / name)
    mx.bin = str(tmp_path / "jiffy")
    cp = mx.run(["-n", 2, prog("hello", "openmpi")], timeout=120)
    assert "jiffy-pmix not found" in cp.stderr, cp.stderr

@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_openmpi_finalize_does_not_wait_for_a_delayed_ack(mx, launcher):
    """Open MPI's MPI_Finalize sends three PMIx messages that get no answer,
    then the request it waits for, over TCP with Nagle on: unless our PMIx
    server ACKs at once (src/pmi/quick_ack.cc), that request sits ~40 ms in
    the rank's send buffer (Linux's delayed ACK), every time. Not a timing
    test of speed: the fastest of six finalizes must miss the 40 ms floor
    that the bug puts under every one of them."""
    best = None
    for _ in range(3):
        cp = mx.run(["-n", 2, prog("finalize_time", "openmpi")], env=LAUNCHERS[launcher], timeout=60)
        assert cp.returncode == 0, cp.stderr
        got = [int(line.split("=")[1]) for line in lines(cp.stdout)]
        assert len(got) == 2, cp.stdout
        best = min([best or got[0]] + got)
    assert best < 25_000, f"the fastest MPI_Finalize took {best / 1000:.1f} ms"


@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.parametrize("env,want", [({}, "hash"), ({"PMIX_MCA_gds": "ds21,hash"}, "ds21,hash")])
def test_openmpi_ranks_use_pmix_hash_store(mx, launcher, env, want):
    """PMIx's shared-memory store cost each Open MPI rank ~11 ms of waiting
    in MPI_Init (src/pmi/pmix_host.cc): ranks get the hash store, unless the
    user chose the stores."""
    got = mpi_env(mx, "openmpi", [], ["PMIX_GDS_MODULE", "PMIX_MCA_gds"], {**env, **LAUNCHERS[launcher]})
    assert all(e["PMIX_GDS_MODULE"] == want for e in got.values()), got
    # the server's own setting is not passed on to the ranks
    assert all(e["PMIX_MCA_gds"] == env.get("PMIX_MCA_gds") for e in got.values()), got
