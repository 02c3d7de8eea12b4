"""A scripted PMI-1 client that spawns (tests/e2e/test_spawn.py).

Debian's MPICH (ch4:ucx) cannot spawn, so this plays an MPICH rank on the
wire (docs/spawn-research.md, 1): init, then one `mcmd=spawn` block per app
as MPI_Comm_spawn_multiple writes them, with the parent's port as a preput
pair. The children (this script again) print what a spawned MPICH rank
would read: PMI_SPAWNED, their world's size, rank and appnum, the port
from their own KVS, their working directory and arguments.

  pmi1_spawn_client.py parent     spawns 2 apps (1 + 1 procs; app 1 with wdir=/tmp)
  pmi1_spawn_client.py missing    spawns a program that is not there
  pmi1_spawn_client.py nest       spawns 1 child that spawns 1 grandchild
  pmi1_spawn_client.py hosts      spawns on another host (refused), then on localhost
"""
import os
import socket
import sys

PORT = "tag#0$connentry#0123$"


class Pmi:
    def __init__(self):
        self.sock = socket.socket(fileno=int(os.environ["PMI_FD"]))
        self.file = self.sock.makefile("rb", buffering=0)

    def send(self, text):
        self.sock.sendall(text.encode())

    def ask(self, line):
        self.send(line + "\n")
        return self.reply()

    def reply(self):
        line = self.file.readline().decode().strip()
        return dict(t.split("=", 1) for t in line.split())


def block(app, total, execname, args, info):
    lines = ["mcmd=spawn", "nprocs=1", f"execname={execname}", f"totspawns={total}", f"spawnssofar={app + 1}"]
    lines += [f"arg{i + 1}={a}" for i, a in enumerate(args)]
    lines += [f"argcnt={len(args)}", "preput_num=1", "preput_key_0=PARENT_ROOT_PORT_NAME", f"preput_val_0={PORT}"]
    lines += [f"info_num={len(info)}"]
    for i, (k, v) in enumerate(info):
        lines += [f"info_key_{i}={k}", f"info_val_{i}={v}"]
    return "\n".join(lines + ["endcmd", ""])


def main():
    pmi = Pmi()
    assert pmi.ask("cmd=init pmi_version=1 pmi_subversion=1")["rc"] == "0"
    kvs = pmi.ask("cmd=get_my_kvsname")["kvsname"]
    me = sys.argv[0]
    mode = sys.argv[1]
    if os.environ.get("PMI_SPAWNED") == "1":
        port = pmi.ask(f"cmd=get kvsname={kvs} key=PARENT_ROOT_PORT_NAME").get("value")
        appnum = pmi.ask("cmd=get_appnum")["appnum"]
        print(f"child rank {os.environ['PMI_RANK']} size {os.environ['PMI_SIZE']} appnum {appnum} "
              f"port {port} cwd {os.getcwd()} args {sys.argv[1:]!r}", flush=True)
        if mode == "grandchild-maker":
            pmi.send(block(0, 1, sys.executable, [me, "grandchild"], []))
            print("nested spawn rc", pmi.reply()["rc"], flush=True)
    elif mode == "parent":
        pmi.send(block(0, 2, sys.executable, [me, "child", "has space=eq"], []))
        pmi.send(block(1, 2, sys.executable, [me, "child"], [("wdir", "/tmp")]))
        print("spawn rc", pmi.reply()["rc"], flush=True)
    elif mode == "missing":
        r = (pmi.send(block(0, 1, "/nonexistent/program", [], [])), pmi.reply())[1]
        print("spawn rc", r["rc"], "msg", r.get("msg"), flush=True)
    elif mode == "hosts":
        pmi.send(block(0, 1, sys.executable, [me, "child"], [("host", "elsewhere.invalid")]))
        r = pmi.reply()
        print("elsewhere rc", r["rc"], "msg", r.get("msg"), flush=True)
        pmi.send(block(0, 1, sys.executable, [me, "child"], [("host", "localhost")]))
        print("localhost rc", pmi.reply()["rc"], flush=True)
    elif mode == "nest":
        pmi.send(block(0, 1, sys.executable, [me, "grandchild-maker"], []))
        print("spawn rc", pmi.reply()["rc"], flush=True)
    assert pmi.ask("cmd=finalize")["rc"] == "0"


main()
