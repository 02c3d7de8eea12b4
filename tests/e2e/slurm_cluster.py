"""A real Slurm cluster of two nodes on this one machine, for the slurm
backend's tests (test_slurm.py). Debian's munged, slurmctld and slurmd,
started by hand (no systemd) from a generated slurm.conf in a private
directory, on free loopback ports.

Two nodes on one machine: each slurmd runs in its own UTS namespace (its own
host name, n1 or n2, which is how slurmd knows which node it is) and its own
mount namespace (a private directory over PMIXCLI_TMP: Slurm's PMIx plugin
names its per-step client directory by job and step only, so two nodes on
one file system would collide). They share the network: each slurmd listens
on its own port of 127.0.0.1 (NodeAddr and Port per node). Both nodes
declare this machine's CPUs (`slurmd -C`), so a CPU of n1 and the same CPU
of n2 are one physical CPU: "no core shared" is checked per node.

Needs root (namespaces; Slurm's daemons run as root here).
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

NODES = ("n1", "n2")
GPUS_PER_NODE = 2
BINARIES = ("munged", "slurmctld", "slurmd", "srun", "sinfo", "squeue", "scancel", "salloc")


def missing_binaries():
    return [b for b in BINARIES if shutil.which(b) is None and not os.path.exists(f"/usr/sbin/{b}")]


def _free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _sbin(name):
    return shutil.which(name) or f"/usr/sbin/{name}"


def _node_hardware():
    """This machine's CPU layout as slurmd -C sees it: 'CPUs=2 Boards=1 ...'
    without the name and memory."""
    out = subprocess.run([_sbin("slurmd"), "-C"], capture_output=True, text=True, timeout=30).stdout
    line = out.splitlines()[0]
    keep = [w for w in line.split() if w.split("=")[0] in
            ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")]
    return " ".join(keep)


class SlurmCluster:
    def __init__(self):
        # Short: munge's and Slurm's sockets live inside.
        self.dir = Path(tempfile.mkdtemp(prefix="jfslurm-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.conf = self.dir / "slurm.conf"
        self.procs = []
        self.env = dict(os.environ)
        self.env["SLURM_CONF"] = str(self.conf)
        for k in list(self.env):
            if k.startswith("SLURM_") and k != "SLURM_CONF":
                del self.env[k]
        self.cpus = int(_node_hardware().split("CPUs=")[1].split()[0])

    # ---- start and stop
    def start(self, timeout=60):
        d = self.dir
        for sub in ("munge", "state", "log", "spool", "pmix/n1", "pmix/n2", "pmixcli"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(d / "munge", 0o755)
        key = d / "munge.key"
        subprocess.run(["mungekey", "-c", "-k", str(key)], check=True, timeout=30)
        os.chmod(key, 0o600)
        self.munge_socket = d / "munge" / "sock"
        subprocess.run([_sbin("munged"), "-f", f"--socket={self.munge_socket}", f"--key-file={key}",
                        f"--pid-file={d}/munge/pid", f"--log-file={d}/log/munged.log",
                        f"--seed-file={d}/munge/seed"], check=True, timeout=30)
        ctl_port, n1_port, n2_port = _free_ports(3)
        hw = _node_hardware()
        self.conf.write_text(f"""\
ClusterName=jiffytest
GresTypes=gpu
SlurmctldHost=ctl(127.0.0.1)
SlurmctldPort={ctl_port}
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.%n.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MessageTimeout=30
SlurmctldDebug=info
SlurmdDebug=info
NodeName=n1 NodeAddr=127.0.0.1 Port={n1_port} {hw} Gres=gpu:{GPUS_PER_NODE} State=UNKNOWN
NodeName=n2 NodeAddr=127.0.0.1 Port={n2_port} {hw} Gres=gpu:{GPUS_PER_NODE} State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
""")
        (d / "mpi.conf").write_text(f"PMIxCliTmpDirBase={d}/pmixcli\n")
        # Two "GPUs" per node for -g/-G: Slurm counts and hands out GRES by
        # their device files; /dev/null and /dev/zero stand in (nothing uses
        # them), and tasks get CUDA_VISIBLE_DEVICES and SLURM_STEP_GPUS.
        (d / "gres.conf").write_text("AutoDetect=off\nName=gpu File=/dev/null\nName=gpu File=/dev/zero\n")
        # slurmctld in a UTS namespace named ctl, as SlurmctldHost says.
        self._daemon(["unshare", "-u", "sh", "-c",
                      f"hostname ctl && exec {_sbin('slurmctld')} -D -i -f {self.conf}"])
        for n in NODES:
            self._daemon(["unshare", "-u", "-m", "--propagation", "private", "sh", "-c",
                          f"hostname {n} && mount --bind {d}/pmix/{n} {d}/pmixcli && "
                          f"exec {_sbin('slurmd')} -D -f {self.conf}"])
        deadline = time.monotonic() + timeout
        while True:
            cp = self.run(["sinfo", "-h", "-N", "-o", "%N %t"], check=False)
            states = dict(line.split() for line in cp.stdout.splitlines() if len(line.split()) == 2)
            if all(states.get(n) == "idle" for n in NODES):
                return self
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a Slurm daemon exited ({p.args}): {self.logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Slurm nodes not idle after {timeout} s: {states} {self.logs()}")
            time.sleep(0.2)

    def _daemon(self, argv):
        log = open(self.dir / "log" / f"daemon-{len(self.procs)}.out", "w")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             env=self.env, start_new_session=True)
        log.close()
        self.procs.append(p)

    def stop(self):
        self.run(["scancel", "--quiet", "--user=root"], check=False)
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        try:
            pid = int((self.dir / "munge" / "pid").read_text())
            os.kill(pid, 15)
        except (OSError, ValueError):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- using it
    def run(self, argv, check=True, timeout=60, **kw):
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=check, stdin=subprocess.DEVNULL, **kw)

    def steps(self):
        """Running steps: ['JOB.STEP NODES', ...] (squeue -s)."""
        cp = self.run(["squeue", "-h", "-s", "-o", "%i %N"], check=False)
        return [line.strip() for line in cp.stdout.splitlines() if line.strip()]

    def jobs(self):
        cp = self.run(["squeue", "-h", "-o", "%i %T"], check=False)
        return [line.strip() for line in cp.stdout.splitlines() if line.strip()]

    def logs(self):
        out = []
        for f in sorted((self.dir / "log").glob("*")):
            try:
                out.append(f"--- {f.name}\n" + f.read_text()[-1500:])
            except OSError:
                pass
        return "\n".join(out)
