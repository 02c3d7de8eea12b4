"""The slurm backend (docs/slurm.md) against a real Slurm of two nodes on this
machine (slurm_cluster.py): Debian's munged, slurmctld and slurmd.

A launch inside an allocation of several nodes (or with --backend=slurm)
becomes one Slurm step run by srun: MPICH and Open MPI ranks on both nodes,
mpiexec's exit codes, the timeout, signals, a SIGKILLed jiffy leaving no
step, concurrent launches never sharing a core of a node, `jiffy status`
showing the step, and a make-driven suite of 100 tests.

Needs root (the cluster's nodes are namespaces); skipped otherwise.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import BUILD, PROBE, parse_cpu_list, read_records, wait_until
import slurm_cluster

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a Slurm cluster of namespaces needs root")

MPI = BUILD / "mpi"


@pytest.fixture(scope="module")
def cluster():
    missing = slurm_cluster.missing_binaries()
    if missing:
        pytest.fail(f"Slurm is not installed ({', '.join(missing)}): run scripts/setup.sh")
    c = slurm_cluster.SlurmCluster()
    try:
        c.start()
    except Exception:
        c.stop()
        raise
    yield c
    c.stop()


@pytest.fixture
def sx(jx, cluster):
    """The test's jiffy world, pointed at the cluster; no steps left behind."""
    jx.env["SLURM_CONF"] = str(cluster.conf)
    # Both nodes are this machine: loopback is the network between them.
    # Open MPI would also try the machine's other address, which a sandbox
    # may not let it reach (seen: connect() to eth0's own address failed
    # and the rank crashed, once in three suites).
    jx.env["OMPI_MCA_btl_tcp_if_include"] = "lo"
    for k in list(jx.env):
        if k.startswith("SLURM_") and k != "SLURM_CONF":
            del jx.env[k]
    jx.cluster = cluster
    yield jx
    # A job still COMPLETING (its processes being reaped, its epilog) is
    # over: what counts is one that runs or waits.
    live = lambda: [j for j in cluster.jobs() if not j.endswith("COMPLETING")]  # noqa: E731
    clean = wait_until_or_none(lambda: not cluster.steps() and not live(), 60)
    if not clean:
        left = f"{cluster.steps()} {cluster.jobs()}"
        # A job left behind would hold its nodes from every later test.
        cluster.run(["scancel", "--quiet", "--user=root"], check=False)
        pytest.fail(f"steps or jobs left after the test: {left}")


def wait_until_or_none(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def salloc(sx, nodes, argv, timeout=120, exclusive=True, env=None):
    """Runs argv inside `salloc -N nodes` (the whole nodes: --exclusive), as a
    user of an allocation does; argv[0] 'jiffy' is this build's."""
    argv = [sx.bin if a == "jiffy" else str(a) for a in argv]
    cmd = ["salloc", "--quiet", f"-N{nodes}"] + (["--exclusive"] if exclusive else []) + argv
    e = dict(sx.env)
    if env:
        e.update(env)
    return subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def where_lines(out):
    """{rank: (host, cpus, sum)} from where.c's lines."""
    ranks = {}
    for line in out.splitlines():
        m = re.match(r"rank (\d+) of (\d+) host (\S+) cpus (\S+) sum (\d+)", line)
        if m:
            ranks[int(m.group(1))] = (m.group(3), parse_cpu_list(m.group(4)), int(m.group(5)))
    return ranks


# ---------------------------------------------------------------------------
# MPI across the nodes


@pytest.mark.parametrize("flavour", ["mpich", "openmpi"])
def test_mpi_ranks_run_on_both_nodes_inside_an_allocation(sx, flavour):
    n = 2 * sx.cluster.cpus
    cp = salloc(sx, 2, ["jiffy", "-n", n, MPI / f"where.{flavour}"])
    assert cp.returncode == 0, cp.stderr
    ranks = where_lines(cp.stdout)
    assert sorted(ranks) == list(range(n)), cp.stdout
    assert {h for h, _, _ in ranks.values()} == {"n1", "n2"}, cp.stdout
    assert all(s == n for _, _, s in ranks.values()), "every rank reached the others"
    # Bound, one core each, none shared on a node.
    for node in ("n1", "n2"):
        cpus = [c for h, c, _ in ranks.values() if h == node]
        assert all(len(c) == 1 for c in cpus), cp.stdout
        assert len(set().union(*cpus)) == len(cpus), f"ranks share a CPU on {node}: {cp.stdout}"


@pytest.mark.parametrize("flavour", ["mpich", "openmpi"])
def test_backend_slurm_outside_an_allocation_makes_its_own(sx, flavour):
    cp = sx.run(["--backend=slurm", "-n", 2, "-N", 1, MPI / f"where.{flavour}"], timeout=120)
    assert cp.returncode == 0, cp.stderr
    ranks = where_lines(cp.stdout)
    assert sorted(ranks) == [0, 1] and {h for h, _, _ in ranks.values()} == {"n1", "n2"}, cp.stdout


def test_one_node_allocation_stays_local(sx, tmp_path):
    cp = salloc(sx, 1, ["jiffy", "-n", 1, PROBE, f"out={tmp_path}", "tag=t", "env=JIFFY_RANK,SLURM_STEP_ID"])
    assert cp.returncode == 0, cp.stderr
    rec = read_records(tmp_path)["t"][0]
    assert rec["env.JIFFY_RANK"] == "0", rec  # jiffy's own ranks
    assert "unset.SLURM_STEP_ID" in rec, rec
    assert not sx.status()["forwarded"]


@pytest.mark.parametrize("how", ["JIFFY_BACKEND=slurm", "--backend=slurm"])
def test_backend_choice_by_variable_or_option(sx, tmp_path, how):
    env, args = {}, []
    if how.startswith("JIFFY_BACKEND"):
        env["JIFFY_BACKEND"] = "slurm"
    else:
        args.append(how)
    cp = sx.run(args + ["-n", 1, PROBE, f"out={tmp_path}", "tag=t"], env=env, timeout=60)
    assert cp.returncode == 0, cp.stderr
    rec = read_records(tmp_path)["t"][0]
    assert rec["host"] in ("n1", "n2") and "step" in rec, rec


def test_backend_local_beats_the_allocation(sx, tmp_path):
    cp = salloc(sx, 2, ["jiffy", "--backend=local", "-n", 1, PROBE, f"out={tmp_path}", "tag=t"])
    assert cp.returncode == 0, cp.stderr
    rec = read_records(tmp_path)["t"][0]
    assert "step" not in rec and rec["host"] not in ("n1", "n2"), rec


# ---------------------------------------------------------------------------
# mpiexec's semantics


def test_exit_code_of_the_failing_rank(sx):
    cp = salloc(sx, 2, ["jiffy", "-n", 2, PROBE, "exit@1=3"])
    assert cp.returncode == 3, cp.stderr


@pytest.mark.parametrize("label", [False, True], ids=["plain", "labelled"])
@pytest.mark.parametrize("flavour", ["mpich", "openmpi"])
def test_mpi_abort_code(sx, flavour, label):
    """MPI_Abort(comm, 7) exits 7, as under mpiexec. Slurm's pmi2 plugin
    answers MPICH's abort by killing the step (srun says 137): jiffy takes
    the code from MPICH's own word on the rank's stderr (docs/slurm.md)."""
    cp = salloc(sx, 2, ["jiffy", *(["-l"] if label else []), "-n", 2, MPI / f"abort.{flavour}"])
    assert cp.returncode == 7, (cp.returncode, cp.stderr)
    assert "MPI_Abort" in cp.stderr or "MPI_ABORT" in cp.stderr, cp.stderr


def test_mpich_abort_code_is_lost_with_stderr_in_files(sx, tmp_path):
    """With the ranks' stderr in files, MPICH's word of its abort never
    passes jiffy: 137, as srun says (docs/slurm.md)."""
    cp = salloc(sx, 2, ["jiffy", "-n", 2, "-errfile-pattern", str(tmp_path / "err.%r"),
                        MPI / "abort.mpich"])
    assert cp.returncode == 128 + signal.SIGKILL, (cp.returncode, cp.stderr)
    assert "MPI_Abort" in "".join(f.read_text() for f in tmp_path.glob("err.*"))


def test_a_rank_that_only_prints_an_abort_word_keeps_its_code(sx):
    """The abort word counts only when the step was killed: a rank that
    prints it and exits 3 by itself exits 3."""
    word = "Abort(7) on node 0 (rank 0 in comm 0): application called MPI_Abort(MPI_COMM_WORLD, 7)"
    cp = salloc(sx, 2, ["jiffy", "--mpi=pmi1", "-n", 1, "sh", "-c", f"echo '{word}' >&2; exit 3"])
    assert cp.returncode == 3, (cp.returncode, cp.stderr)


def test_rank_killed_by_a_signal_ends_the_others(sx):
    t0 = time.monotonic()
    cp = salloc(sx, 2, ["jiffy", "-n", 2, PROBE, "segv@0=1", "sleep@1=600000"])
    assert cp.returncode == 128 + signal.SIGSEGV, (cp.returncode, cp.stderr)
    assert time.monotonic() - t0 < 60


def test_failing_rank_ends_the_others(sx):
    t0 = time.monotonic()
    cp = salloc(sx, 2, ["jiffy", "-n", 2, PROBE, "exit@0=5", "sleep@1=600000"])
    assert cp.returncode == 5, (cp.returncode, cp.stderr)
    assert time.monotonic() - t0 < 60


def test_timeout_cancels_the_step(sx, tmp_path):
    t0 = time.monotonic()
    cp = salloc(sx, 2, ["jiffy", "-timeout", 3, "-n", 2, PROBE, "sleep=600000", f"out={tmp_path}"],
                env={"MPIEXEC_TIMEOUT": ""})
    assert cp.returncode == 255, (cp.returncode, cp.stderr)
    assert "APPLICATION TIMED OUT" in cp.stderr, cp.stderr
    assert time.monotonic() - t0 < 60
    assert wait_until_or_none(lambda: not sx.cluster.steps(), 20), sx.cluster.steps()


def test_mpiexec_timeout_variable(sx):
    cp = sx.run(["--backend=slurm", "-n", 1, PROBE, "sleep=600000"], env={"MPIEXEC_TIMEOUT": "2"},
                timeout=60)
    assert cp.returncode == 255 and "APPLICATION TIMED OUT" in cp.stderr, (cp.returncode, cp.stderr)


def start_held(sx, tmp_path, n=2, extra=()):
    """A launch whose ranks run until killed; returns (popen, records) once
    every rank has started."""
    p = sx.popen(["--backend=slurm", "-n", n, PROBE, "sleep=600000", f"out={tmp_path}", "tag=t",
                  *extra])
    recs = wait_until(lambda: (lambda r: r if len(r.get("t", {})) == n else None)(read_records(tmp_path)),
                      60, 0.1, "the ranks to start")
    return p, recs["t"]


def test_ctrl_c_is_forwarded_to_the_ranks(sx, tmp_path):
    p, _ = start_held(sx, tmp_path, extra=("trap=exit",))
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, (p.returncode, err)
    recs = read_records(tmp_path)["t"]
    assert all(r.get("signals") == [signal.SIGINT] for r in recs.values()), recs


def test_second_ctrl_c_kills(sx, tmp_path):
    p, _ = start_held(sx, tmp_path, extra=("trap=stay",))
    p.send_signal(signal.SIGINT)
    wait_until(lambda: all("signals" in r for r in read_records(tmp_path)["t"].values()), 30, 0.1,
               "the ranks to see the first SIGINT")
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, (p.returncode, err)
    assert wait_until_or_none(lambda: not sx.cluster.steps(), 30), sx.cluster.steps()


def test_sigterm_reaches_the_ranks(sx, tmp_path):
    p, _ = start_held(sx, tmp_path, extra=("trap=exit",))
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM, (p.returncode, err)
    recs = read_records(tmp_path)["t"]
    assert all(signal.SIGTERM in r.get("signals", []) for r in recs.values()), recs


def srun_group_of(launcher_pid):
    """The process group of the srun a launcher runs (srun and its shepherd)."""
    def find():
        for k in children_of(launcher_pid):
            try:
                if os.readlink(f"/proc/{k}/exe").endswith("/srun"):
                    return os.getpgid(k)
            except OSError:
                pass
        return None
    return wait_until(find, 20, 0.05, "the launcher's srun")


def kill_all_at_once(p):
    """SIGKILL of the launcher and of srun's whole group (srun and its
    shepherd) at once: srun's group is stopped first, so that the shepherd
    cannot cancel the step before it dies, nor jiffy see srun go."""
    group = srun_group_of(p.pid)
    os.killpg(group, signal.SIGSTOP)
    p.kill()
    p.wait(timeout=10)
    os.killpg(group, signal.SIGKILL)


def children_of(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


@pytest.mark.parametrize("also_srun", [False, True], ids=["jiffy", "jiffy-and-srun"])
def test_sigkilled_jiffy_leaves_no_step(sx, tmp_path, also_srun):
    """A SIGKILLed jiffy takes srun along (parent-death signal), and srun's
    shepherd cancels the step; with srun and its shepherd SIGKILLed too
    (everything of the launch gone at once), the daemon must."""
    p, recs = start_held(sx, tmp_path, extra=("ignoreterm=1",))
    step = recs[0]["step"]
    assert any(s.startswith(step + " ") for s in sx.cluster.steps()), sx.cluster.steps()
    if also_srun:
        # The daemon knows the step's id first: this case is the id's.
        wait_until(lambda: [r for r in sx.status()["forwarded"] if r["step"] == step], 20, 0.1,
                   "the daemon to know the step")
        kill_all_at_once(p)
    else:
        p.kill()
    p.wait(timeout=10)
    assert wait_until_or_none(lambda: not sx.cluster.steps(), 30), sx.cluster.steps()
    pids = [int(r["pid"]) for r in recs.values()]
    assert wait_until_or_none(lambda: not any(os.path.exists(f"/proc/{q}") for q in pids), 30)


def test_a_restarted_daemon_is_told_again(sx, tmp_path):
    """The daemon dies while a step runs: its successor lists the launch
    again (status and top) and, when the launcher then vanishes with srun's
    whole group, cancels the step."""
    p, recs = start_held(sx, tmp_path, extra=("ignoreterm=1",))
    step = recs[0]["step"]
    listed = lambda: [r for r in sx.status().get("forwarded", []) if r["step"] == step]  # noqa: E731
    wait_until(listed, 20, 0.1, "the daemon to know the step")
    first = sx.daemon_pid()
    os.kill(first, signal.SIGKILL)
    rows = wait_until(lambda: sx.daemon_pid() not in (None, first) and listed(), 60, 0.1,
                      "a successor daemon to list the launch again")
    assert rows[0]["pid"] == p.pid and rows[0]["ntasks"] == 2, rows
    top = sx.run(["top", "-n", 1], env={"COLUMNS": "120", "LINES": "40"}, timeout=30)
    assert top.returncode == 0, top.stderr
    assert f"slurm step {step} on {rows[0]['nodes']}" in top.stdout, top.stdout
    kill_all_at_once(p)  # srun's shepherd too: only the new daemon is left
    assert wait_until_or_none(lambda: not sx.cluster.steps(), 30), sx.cluster.steps()
    pids = [int(r["pid"]) for r in recs.values()]
    assert wait_until_or_none(lambda: not any(os.path.exists(f"/proc/{q}") for q in pids), 30)


def test_status_shows_the_step(sx, tmp_path):
    p, recs = start_held(sx, tmp_path)
    step = recs[0]["step"]
    rows = wait_until(lambda: [r for r in sx.status()["forwarded"] if r["step"] and r["nodes"]], 20,
                      0.1, "the step and its nodes in status")
    assert rows[0]["step"] == step and rows[0]["backend"] == "slurm" and rows[0]["pid"] == p.pid
    assert rows[0]["ntasks"] == 2
    squeue = [line.split() for line in sx.cluster.steps()]
    assert [step, rows[0]["nodes"]] in squeue, (rows, squeue)
    text = sx.run(["status"]).stdout
    assert f"slurm step {step} on {rows[0]['nodes']}" in text, text
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=60)
    wait_until(lambda: not sx.status()["forwarded"], 20, 0.1, "the launch to leave status")


# ---------------------------------------------------------------------------
# the command line


def test_untranslatable_options_are_refused_by_name(sx):
    for opt in (["--tag-output"], ["-prepend-pattern", "%r:"], ["--output-filename", "/tmp/x"],
                ["-map-by", "socket"]):
        cp = sx.run(["--backend=slurm", *opt, "-n", 1, "/bin/true"], timeout=60)
        assert cp.returncode != 0, opt
        assert "has no srun translation" in cp.stderr and opt[0] in cp.stderr, (opt, cp.stderr)
    assert not sx.cluster.steps()


def test_verbose_prints_the_srun_line(sx):
    cp = sx.run(["--backend=slurm", "-v", "-n", 2, "-c", 1, "/bin/true"], timeout=60)
    assert cp.returncode == 0, cp.stderr
    line = [l for l in cp.stderr.splitlines() if "slurm backend:" in l]
    assert line and "srun --ntasks=2 --cpus-per-task=1" in line[0] and "--exact" in line[0], cp.stderr


def test_label_stdin_and_environment(sx):
    cp = sx.run(["--backend=slurm", "-l", "-genv", "GREETING", "hi there", "-n", 2, "sh", "-c",
                 'echo "$GREETING $SLURM_PROCID $(cat)"'], input="from stdin\n", timeout=60)
    assert cp.returncode == 0, cp.stderr
    lines = sorted(cp.stdout.splitlines())
    assert lines == ["0: hi there 0 from stdin", "1: hi there 1 "], cp.stdout


def test_mpmd_runs_as_multi_prog(sx, tmp_path):
    cp = sx.run(["--backend=slurm", "-n", 2, MPI / "where.mpich", ":", "-n", 1, MPI / "where.mpich"],
                timeout=120)
    assert cp.returncode == 0, cp.stderr
    assert sorted(where_lines(cp.stdout)) == [0, 1, 2], cp.stdout
    assert not list(tmp_path.glob("jiffy-multi-prog-*"))
    cp = sx.run(["--backend=slurm", "-n", 1, "echo", "one word", ":", "-n", 1, "echo", "two"],
                env={"TMPDIR": str(tmp_path)}, timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert sorted(cp.stdout.splitlines()) == ["one word", "two"], cp.stdout
    assert not list(tmp_path.glob("jiffy-multi-prog-*")), "the --multi-prog file is removed"


def test_missing_program_is_127_before_any_step(sx):
    cp = sx.run(["--backend=slurm", "-n", 2, "no-such-program-xyz"], timeout=60)
    assert cp.returncode == 127, cp.stderr
    assert "no-such-program-xyz" in cp.stderr


# ---------------------------------------------------------------------------
# concurrency and a suite


def step_traces(directory):
    """[(start, end, {(host, cpu)})] per launch, from probe records."""
    out = []
    for tag, ranks in read_records(directory).items():
        start = min(int(r["start_ns"]) for r in ranks.values())
        end = max(int(r.get("end_ns", r["start_ns"])) for r in ranks.values())
        res = {(r["host"], c) for r in ranks.values() for c in parse_cpu_list(r["cpus"])}
        out.append((start, end, res, tag))
    return out


def shared_cpus(traces):
    bad = []
    for i, a in enumerate(traces):
        for b in traces[i + 1:]:
            if a[0] < b[1] and b[0] < a[1] and a[2] & b[2]:
                bad.append((a[3], b[3], a[2] & b[2]))
    return bad


def test_concurrent_launches_never_share_a_core(sx, tmp_path):
    script = " ".join(f'"$J" -n 2 {PROBE} sleep=400 out={tmp_path} tag=l{i} &' for i in range(8)) + " wait"
    cp = salloc(sx, 2, ["sh", "-c", script], env={"J": sx.bin}, timeout=180)
    assert cp.returncode == 0, cp.stderr
    traces = step_traces(tmp_path)
    assert len(traces) == 8 and all(len(t[2]) == 2 for t in traces), traces
    assert not shared_cpus(traces)
    # Some ran at once: 8 launches of 2 ranks on 2x2 CPUs.
    assert any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(traces) for b in traces[i + 1:])


@pytest.mark.slow
def test_make_suite_of_100_tests(sx, tmp_path):
    out = tmp_path / "rec"
    out.mkdir()
    rules, names = [], []
    for i in range(100):
        n = 1 + i % 3
        name = f"t{i:03d}"
        names.append(name)
        if i % 10 == 9:  # an MPI test now and then
            prog = f"{MPI}/where.{'mpich' if i % 20 == 9 else 'openmpi'}"
            rules.append(f"{name}:\n\t$(MPIEXEC) -n {n} {prog} > {tmp_path}/{name}.out\n")
        else:
            rules.append(f"{name}:\n\t$(MPIEXEC) -n {n} {PROBE} sleep={20 + (i * 7) % 80} "
                         f"out={out} tag={name} > {tmp_path}/{name}.out\n")
    (tmp_path / "Makefile").write_text(
        "MPIEXEC ?= jiffy\n.PHONY: all " + " ".join(names) + "\nall: " + " ".join(names) + "\n" +
        "".join(rules))
    t0 = time.monotonic()
    cp = salloc(sx, 2, ["make", "-s", "-j8", "-C", tmp_path, f"MPIEXEC={sx.bin}"], timeout=600,
                env={"MPIEXEC_TIMEOUT": "120"})
    assert cp.returncode == 0, cp.stderr[-3000:]
    traces = step_traces(out)
    assert len(traces) == 90, len(traces)
    assert not shared_cpus(traces), shared_cpus(traces)[:3]
    for i in range(9, 100, 10):
        text = (tmp_path / f"t{i:03d}.out").read_text()
        assert len(where_lines(text)) == 1 + i % 3, text
    print(f"100 tests through --backend=slurm in {time.monotonic() - t0:.1f} s")


def test_sigkilled_jiffy_step_never_named_is_cancelled_by_name(sx, tmp_path):
    """A launcher that never learnt its step's id (here: no squeue on its
    PATH) and is SIGKILLed: the daemon finds the step by its name."""
    sx.start_daemon(cores=2)  # with the full PATH: it has squeue and scancel
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("srun", "sh"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    rec = tmp_path / "rec"
    rec.mkdir()
    # (srun's shepherd child, which cancels srun's own allocation when srun
    # dies, holds our output a while: not read here.)
    p = sx.popen(["--backend=slurm", "-n", 2, PROBE, "sleep=600000", f"out={rec}", "tag=t", "ignoreterm=1"],
                 env={"PATH": str(bin_dir)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    recs = wait_until(lambda: (lambda r: r if len(r.get("t", {})) == 2 else None)(read_records(rec)),
                      60, 0.1, "the ranks to start")["t"]
    time.sleep(0.5)  # past the launcher's first lookup, which found no squeue
    rows = sx.status()["forwarded"]
    assert len(rows) == 1 and rows[0]["step"] == "", rows
    kill_all_at_once(p)  # srun's shepherd too: only the daemon is left
    assert wait_until_or_none(lambda: not sx.cluster.steps(), 30), sx.cluster.steps()
    pids = [int(r["pid"]) for r in recs.values()]
    assert wait_until_or_none(lambda: not any(os.path.exists(f"/proc/{q}") for q in pids), 30)


def test_inside_a_step_jiffy_is_local(sx, tmp_path):
    """`srun jiffy ...` (a task of a step): that task's node, jiffy's own cores."""
    cp = salloc(sx, 2, ["srun", "-N1", "-n1", "jiffy", "-n", 1, PROBE, f"out={tmp_path}", "tag=t",
                        "env=JIFFY_RANK"])
    assert cp.returncode == 0, cp.stderr
    rec = read_records(tmp_path)["t"][0]
    assert rec["env.JIFFY_RANK"] == "0" and rec["host"] in ("n1", "n2"), rec


def test_wdir_and_output_files(sx, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    cp = sx.run(["--backend=slurm", "-wdir", work, "-outfile-pattern", "out.%r", "-errfile-pattern",
                 f"{tmp_path}/err.%r", "-n", 2, "sh", "-c", 'pwd; echo "e$SLURM_PROCID" >&2'], timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == "", cp.stdout
    for r in (0, 1):
        assert (work / f"out.{r}").read_text() == f"{work}\n"
        assert (tmp_path / f"err.{r}").read_text() == f"e{r}\n"


def test_a_step_waits_for_cores_the_allocation_lacks(sx, tmp_path):
    """Two launches each wanting every CPU of both nodes: the second step
    waits for the first, as Slurm queues steps, and then runs."""
    n = 2 * sx.cluster.cpus
    script = (f'"$J" -n {n} {PROBE} sleep=1000 out={tmp_path} tag=a & sleep 0.3; '
              f'"$J" -n {n} {PROBE} sleep=100 out={tmp_path} tag=b; wait')
    cp = salloc(sx, 2, ["sh", "-c", script], env={"J": sx.bin}, timeout=180)
    assert cp.returncode == 0, cp.stderr
    traces = {t[3]: t for t in step_traces(tmp_path)}
    assert traces["b"][0] >= traces["a"][1], "b started before a ended"


def test_history_remembers_the_step_and_its_nodes(sx, tmp_path):
    # Long enough for the squeue that learns the step (after 0.1 s) on a loaded machine.
    cp = salloc(sx, 2, ["jiffy", "-n", 4, PROBE, "sleep=2000", f"out={tmp_path}", "tag=t"])
    assert cp.returncode == 0, cp.stderr
    recs = read_records(tmp_path)["t"]
    step = recs[0]["step"]
    rows = sx.wait_history(1)
    row = rows[-1]
    assert row["step"] == step and row["slurm"] is True, row
    squeue_nodes = {r["host"] for r in recs.values()}
    assert row["nodes"] == "n[1-2]" and squeue_nodes == {"n1", "n2"}, (row, squeue_nodes)
    assert row["outcome"] == "ok" and row["ntasks"] == 4 and row["cores"] == [], row
    table = sx.run(["history"]).stdout
    assert f" {step} " in table, table


def test_srun_killed_from_outside_leaves_no_step(sx, tmp_path):
    """srun and its shepherd SIGKILLed, jiffy alive: jiffy exits 137 and the
    step does not run on (the daemon cancels it: jiffy leaves without
    saying finished)."""
    p, recs = start_held(sx, tmp_path, extra=("ignoreterm=1",))
    wait_until(lambda: [r for r in sx.status()["forwarded"] if r["step"]], 20, 0.1, "the step's id")
    os.killpg(srun_group_of(p.pid), signal.SIGKILL)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 128 + signal.SIGKILL, (p.returncode, err)
    assert wait_until_or_none(lambda: not sx.cluster.steps(), 30), sx.cluster.steps()


def test_gpus_per_task_and_per_job(sx):
    """-g and -G become --gpus-per-task and --gpus: Slurm hands out the
    cluster's GRES (two per node), one each to the ranks of a node, and the
    ranks see which."""
    show = 'echo "$SLURMD_NODENAME $SLURM_STEP_GPUS"'
    cp = sx.run(["--backend=slurm", "-g", 1, "-n", 4, "-N", 2, "sh", "-c", show], timeout=60)
    assert cp.returncode == 0, cp.stderr
    lines = sorted(cp.stdout.splitlines())
    assert lines == ["n1 0", "n1 1", "n2 0", "n2 1"], lines  # each rank its own, as jiffy gives them
    cp = sx.run(["--backend=slurm", "-G", 1, "-n", 1, "sh", "-c", show], timeout=60)
    assert cp.returncode == 0, cp.stderr
    (line,) = cp.stdout.splitlines()
    assert line.split()[1] in ("0", "1"), line
    cp = sx.run(["--backend=slurm", "-g", 3, "-n", 1, "true"], timeout=60)
    assert cp.returncode != 0, "3 GPUs on a node of 2"
