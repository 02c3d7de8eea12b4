"""The daemon's side of MPI_Comm_spawn (issue 11, docs/protocol.md "Spawned
ranks"): a launcher asks for a spawn's cores on a second connection with a
`submit` naming its running job as `parent`. The daemon checks that the
parent is a running job of that very launcher, refuses at once a spawn
that could never fit beside what the family holds, queues the rest like
any request, never oversubscribes them, kills the family's group when a
spawn's launcher dies, and re-attaches a spawn after a crash.

This test process plays the launcher: a raw protocol client on a
hand-started daemon (whose `started` check wants the ranks' group led by a
child of the launcher: a real `sleep`, in a session of its own)."""

import json
import os
import random
import sqlite3
import subprocess
import sys

from conftest import pid_alive, process_gone, wait_until
from test_security import connect, frame, read_frame


def new_tag():
    return "%032x" % random.getrandbits(128)


def submit(ntasks=1, tag=None, oversubscribe=False, **extra):
    m = {"type": "submit", "v": 1, "ntasks": ntasks, "cores_per_task": 1, "gpus_per_task": 0,
         "gpus_per_job": 0, "allow_oversubscribe": oversubscribe, "bind": "core", "pid": os.getpid(),
         "command": "spawn-daemon", "progress": False}
    if tag:
        m["tag"] = tag
    m.update(extra)
    return m


def the_socket(jx):
    (s,) = jx.sockets()
    return s


def ask(jx, msg):
    """Sends msg on a new connection; returns (socket, first answer)."""
    s = connect(the_socket(jx))
    s.sendall(frame(msg))
    return s, read_frame(s)


def granted(jx, msg):
    s, g = ask(jx, msg)
    assert isinstance(g, dict) and g["type"] == "grant", g
    return s, g


def refused(s, first, what):
    assert isinstance(first, dict) and first.get("type") == "error", f"{what}: {first!r}"
    assert read_frame(s) == "eof", f"{what}: the daemon should hang up"
    s.close()
    return first["message"]


def cores_of(grant):
    return {core for core, _ in grant["slots"]}


def row(jx, job):
    st = jx.status()
    rows = [j for j in st["running"] + st["queued"] if j["job"] == job]
    return rows[0] if rows else None


def holders(jx):
    return [c["holders"][0] for c in jx.status()["resources"]["cores"]]


def finish(s):
    s.sendall(frame({"type": "finished", "code": 0}))
    s.close()


def carries(pid, tag):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"JIFFY_JOB_TAG={tag}".encode() in f.read().split(b"\0")
    except OSError:
        return False


def tagged(jx, tag):
    """A process in a session of its own carrying tag, once its environment
    shows it: Popen returns (vfork) before exec has set it up, and a kill by
    the tag meanwhile would miss it."""
    p = subprocess.Popen(["sleep", "300"], env=dict(jx.env, JIFFY_JOB_TAG=tag), start_new_session=True,
                         stdin=subprocess.DEVNULL)
    jx.popens.append(p)
    wait_until(lambda: carries(p.pid, tag), 10, 0.01, "the process's environment")
    return p


def ranks(jx, tag):
    """The ranks of a job: a process group led by our child, carrying tag."""
    return tagged(jx, tag)


def started(s, pgid, tag):
    s.sendall(frame({"type": "started", "pgid": pgid, "jobdir": "", "tag": tag}))


def test_a_spawn_gets_cores_of_its_own_and_gives_them_back(jx, fake_daemon):
    fake_daemon(cores=4)
    tag = new_tag()
    parent, g = granted(jx, submit(ntasks=2, tag=tag))
    spawn, sg = granted(jx, submit(ntasks=2, parent=g["job"]))
    assert sg["job"] != g["job"] and len(sg["ranks"]) == 2 and not sg["exclusive"]
    assert not cores_of(g) & cores_of(sg), (g, sg)
    assert row(jx, g["job"])["parent"] == 0
    assert row(jx, sg["job"])["parent"] == g["job"]
    text = jx.run(["status"]).stdout
    lines = text.splitlines()
    (i,) = [n for n, line in enumerate(lines) if f"job {g['job']} " in line]
    assert f"spawned: job {sg['job']} " in lines[i + 1], text
    finish(spawn)
    wait_until(lambda: row(jx, sg["job"]) is None, 10, 0.05, "the spawn released")
    # its cores are free again: a plain launch of 2 gets them
    other, og = granted(jx, submit(ntasks=2))
    assert cores_of(og) == cores_of(sg)
    finish(other)
    finish(parent)
    wait_until(lambda: jx.status()["running"] == [], 10, 0.05, "every job released")


SPAWN_FROM_ANOTHER_PROCESS = r"""
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])
b = sys.argv[2].encode(); s.sendall(struct.pack('>I', len(b)) + b)
h = b''
while len(h) < 4: h += s.recv(4 - len(h))
n = struct.unpack('>I', h)[0]; body = b''
while len(body) < n: body += s.recv(n - len(body))
print(body.decode())
"""


def test_only_the_parents_own_launcher_may_spawn_for_it(jx, fake_daemon):
    fake_daemon(cores=4)
    parent, g = granted(jx, submit(ntasks=1, tag=new_tag()))
    msg = submit(parent=g["job"])
    out = subprocess.run([sys.executable, "-c", SPAWN_FROM_ANOTHER_PROCESS, the_socket(jx), json.dumps(msg)],
                         capture_output=True, text=True, timeout=30)
    reply = json.loads(out.stdout)
    assert reply["type"] == "error", reply
    assert reply["message"] == f"spawn: job {g['job']} is not a running job of this launcher", reply
    for bad_parent in (g["job"] + 1000, (1 << 50) - 1):
        s, first = ask(jx, submit(parent=bad_parent))
        assert refused(s, first, "an unknown parent") == \
            f"spawn: job {bad_parent} is not a running job of this launcher"
    for bad in ({"parent": 0}, {"parent": 1 << 50}, {"parent": "1"},
                {"parent": g["job"], "tag": new_tag()}):
        s, first = ask(jx, submit(**bad))
        refused(s, first, f"submit with {bad}")
    # a queued job is no running one
    full, fg = granted(jx, submit(ntasks=3))
    waiting, q = ask(jx, submit(ntasks=2))
    assert q["type"] == "queued", q
    s, first = ask(jx, submit(parent=q["job"]))
    assert "is not a running job" in refused(s, first, "a queued parent")
    # a spawn is no parent (nested spawns name the job itself)
    finish(full)
    assert read_frame(waiting)["type"] == "grant"
    finish(waiting)
    spawn, sg = granted(jx, submit(parent=g["job"]))
    s, first = ask(jx, submit(parent=sg["job"]))
    assert "is not a running job" in refused(s, first, "a spawn as parent")
    # its ranks carry their family's tag, no other
    spawn.sendall(frame({"type": "started", "pgid": 1 << 29, "jobdir": "", "tag": new_tag()}))
    assert "parent's tag" in refused(spawn, read_frame(spawn), "a spawn started with a tag of its own")
    wait_until(lambda: row(jx, sg["job"]) is None, 10, 0.05, "the refused spawn released")
    finish(parent)


def test_a_spawn_that_could_never_fit_is_refused_at_once(jx, fake_daemon):
    fake_daemon(cores=4)
    parent, g = granted(jx, submit(ntasks=2, tag=new_tag()))
    s, first = ask(jx, submit(ntasks=3, parent=g["job"]))
    why = refused(s, first, "a spawn of 3 beside 2 on 4 cores")
    assert why.startswith(f"spawn of 3 ranks needs 3 more core slots; job {g['job']} and the ranks "
                          "waiting for this spawn hold 2 of the 4 slots"), why
    # a spawn asked by spawned ranks: their cores stay held too
    spawn, sg = granted(jx, submit(ntasks=1, parent=g["job"]))
    s, first = ask(jx, submit(ntasks=2, parent=g["job"], asker=sg["job"]))
    assert "hold 3 of the 4 slots" in refused(s, first, "a nested spawn")
    s, first = ask(jx, submit(ntasks=1, parent=g["job"], asker=g["job"]))
    assert "is no running spawn of job" in refused(s, first, "an asker that is no spawn")
    # a sibling spawn may end while another waits: it does not count
    other, og = granted(jx, submit(ntasks=1))  # the machine is full now
    waiting, q = ask(jx, submit(ntasks=2, parent=g["job"]))
    assert q["type"] == "queued", q
    # never oversubscribed, whatever it asks
    waiting.close()
    s, first = ask(jx, submit(ntasks=9, oversubscribe=True, parent=g["job"]))
    assert "needs 9 more core slots" in refused(s, first, "an oversubscribing spawn")
    for c in (spawn, other, parent):
        finish(c)
    # a job granted wider than the machine holds all of it: it can never spawn
    wide, wg = granted(jx, submit(ntasks=6, oversubscribe=True, tag=new_tag()))
    assert wg["exclusive"], wg
    s, first = ask(jx, submit(ntasks=1, parent=wg["job"]))
    assert "hold 4 of the 4 slots" in refused(s, first, "a spawn of an oversubscribed job")
    finish(wide)


def test_a_spawn_waits_its_turn_and_is_granted_when_cores_free(jx, fake_daemon):
    fake_daemon(cores=4)
    parent, g = granted(jx, submit(ntasks=2, tag=new_tag()))
    other, og = granted(jx, submit(ntasks=2))
    spawn, q = ask(jx, submit(ntasks=1, parent=g["job"]))
    assert q["type"] == "queued" and q["position"] == 0, q
    assert row(jx, q["job"])["parent"] == g["job"] and row(jx, q["job"])["state"] == "queued"
    text = jx.run(["status"]).stdout
    (line,) = [l for l in text.splitlines() if l.startswith(f"  #0 job {q['job']} ")]
    assert line.endswith(f"(spawn of job {g['job']})"), text
    finish(other)
    sg = read_frame(spawn)
    assert sg["type"] == "grant" and sg["job"] == q["job"], sg
    assert cores_of(sg) <= cores_of(og)
    finish(spawn)
    finish(parent)


def history_rows(jx, pid):
    s, r = ask(jx, {"type": "history", "v": 1})
    s.close()
    assert r["type"] == "history_reply" and r["error"] == "", r
    db = os.path.join(jx.env["XDG_STATE_HOME"], "jiffy", "history.db")
    if not os.path.exists(db):
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM jobs WHERE pid = ?", (pid,))]
    finally:
        con.close()


def test_a_spawn_whose_launcher_hangs_up_takes_the_family_down(jx, fake_daemon):
    """Its launcher died: the family's group (the parent's ranks and the
    spawned ones share it, and the tag) is killed, and the spawn's cores
    come back once it is empty. The launch's own record covers the spawn:
    the daemon writes no history row for it."""
    fake_daemon(cores=4)
    tag = new_tag()
    parent, g = granted(jx, submit(ntasks=2, tag=tag))
    p = ranks(jx, tag)
    started(parent, p.pid, tag)
    wait_until(lambda: row(jx, g["job"])["state"] == "running", 10, 0.05, "the parent running")
    spawn, sg = granted(jx, submit(ntasks=2, parent=g["job"]))
    stray = tagged(jx, tag)  # a spawned rank that left the group
    spawn.close()  # no "finished"
    try:
        wait_until(lambda: p.poll() is not None and stray.poll() is not None, 10, 0.05,
                   "the family's group and tag killed")
    except AssertionError as e:
        raise AssertionError(f"{e}: group leader {p.poll()}, stray {stray.poll()}; daemon log: "
                             f"{jx.daemon_log(0)}") from None
    wait_until(lambda: row(jx, sg["job"]) is None, 10, 0.05, "the spawn released")
    assert not any(h == sg["job"] for h in holders(jx))
    assert row(jx, g["job"])["state"] == "running"  # the parent's connection decides for it
    assert [r["job"] for r in history_rows(jx, os.getpid())] == []
    parent.close()  # now the launch is lost: one row, the parent's
    wait_until(lambda: [r["job"] for r in history_rows(jx, os.getpid())] == [g["job"]], 20, 0.1,
               "the parent's lost row, and none for the spawn")


def test_a_spawn_re_attaches_after_a_daemon_crash(jx, fake_daemon):
    d = fake_daemon(cores=4)
    tag = new_tag()
    parent, g = granted(jx, submit(ntasks=1, tag=tag))
    p = ranks(jx, tag)
    started(parent, p.pid, tag)
    wait_until(lambda: row(jx, g["job"])["state"] == "running", 10, 0.05, "the parent running")
    spawn, sg = granted(jx, submit(ntasks=2, parent=g["job"]))
    d.kill()
    d.wait(timeout=10)
    fake_daemon(cores=4)

    def reattach(grant, **extra):
        m = {"type": "reattach", "v": 1, "job": grant["job"], "pgid": p.pid, "ntasks": len(grant["ranks"]),
             "command": "spawn-daemon", "slots": grant["slots"], "gpu_ids": [], "exclusive": False,
             "jobdir": "", "tag": tag}
        m.update(extra)
        return ask(jx, m)

    pa, ok = reattach(g)
    assert ok["type"] == "ok", ok
    # until it re-attaches, the spawn's cores stay held (the queue does not wait for it)
    assert row(jx, sg["job"])["state"] == "detached" and row(jx, sg["job"])["parent"] == g["job"]
    other, og = ask(jx, submit(ntasks=1))
    if og["type"] == "queued":  # while the recovery lasts
        og = read_frame(other)
    assert og["type"] == "grant", og
    assert not cores_of(og) & (cores_of(g) | cores_of(sg)), (og, g, sg)
    finish(other)
    s, first = reattach(sg)  # without its parent
    assert f"is a spawn of job {g['job']}" in refused(s, first, "a spawn re-attaching as a launch")
    s, first = reattach(sg, parent=g["job"] + 1)
    refused(s, first, "a spawn re-attaching with another parent")
    s, first = reattach(sg, parent=g["job"], tag=new_tag())
    refused(s, first, "a spawn re-attaching with another tag")
    sp, ok = reattach(sg, parent=g["job"])
    assert ok["type"] == "ok", ok
    st = jx.status()
    parents = {j["job"]: j["parent"] for j in st["running"]}
    assert parents == {g["job"]: 0, sg["job"]: g["job"]}, st["running"]
    assert pid_alive(p.pid)
    finish(sp)
    wait_until(lambda: row(jx, sg["job"]) is None, 10, 0.05, "the spawn released")
    assert pid_alive(p.pid), "a spawn's finish killed its family"
    finish(pa)
    p.kill()
    p.wait()


# A launcher in a process of its own, driven over its stdin: one JSON
# command a line, one JSON answer a line.
REMOTE_LAUNCHER = r"""
import json, os, socket, struct, subprocess, sys
def frame(o):
    b = json.dumps(o).encode(); return struct.pack('>I', len(b)) + b
def read(s):
    h = b''
    while len(h) < 4:
        c = s.recv(4 - len(h))
        if not c: return 'eof'
        h += c
    n = struct.unpack('>I', h)[0]; b = b''
    while len(b) < n: b += s.recv(n - len(b))
    return json.loads(b)
conns = {}
for line in sys.stdin:
    cmd = json.loads(line)
    op, out = cmd['op'], None
    if op == 'ask':  # a new connection named cmd['name']: its first answer
        s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(cmd['sock'])
        msg = dict(cmd['msg'], pid=os.getpid()) if cmd['msg']['type'] == 'submit' else cmd['msg']
        s.sendall(frame(msg)); conns[cmd['name']] = s; out = read(s)
    elif op == 'send':
        conns[cmd['name']].sendall(frame(cmd['msg']))
    elif op == 'close':
        conns.pop(cmd['name']).close()
    elif op == 'ranks':  # a process group led by our child, carrying the tag
        p = subprocess.Popen(['sleep', '300'], env=dict(os.environ, JIFFY_JOB_TAG=cmd['tag']),
                             start_new_session=True, stdin=subprocess.DEVNULL)
        out = p.pid
    print(json.dumps(out), flush=True)
"""


class RemoteLauncher:
    def __init__(self, jx):
        self.jx = jx
        self.p = subprocess.Popen([sys.executable, "-c", REMOTE_LAUNCHER], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=jx.env)
        jx.popens.append(self.p)

    def do(self, **cmd):
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def ask(self, name, msg):
        return self.do(op="ask", name=name, sock=the_socket(self.jx), msg=msg)


def test_a_spawn_never_re_attached_is_held_until_its_launcher_dies(jx, fake_daemon):
    """After a crash, a spawn whose launcher lives but does not re-attach
    it (jiffy's launcher does: test_spawn.py) keeps its cores until that launcher dies;
    then its family's group is killed and they come back. Its tag is its
    parent's: once the parent has finished and another job took that tag,
    the spawn's end kills by the group alone, never the other job's
    processes."""
    d = fake_daemon(cores=4)
    tag = new_tag()
    launcher = RemoteLauncher(jx)
    g = launcher.ask("parent", submit(ntasks=1, tag=tag))
    assert g["type"] == "grant", g
    pgid = launcher.do(op="ranks", tag=tag)
    wait_until(lambda: carries(pgid, tag), 10, 0.01, "the family's ranks' environment")
    launcher.do(op="send", name="parent", msg={"type": "started", "pgid": pgid, "jobdir": "", "tag": tag})
    wait_until(lambda: row(jx, g["job"])["state"] == "running", 10, 0.05, "the parent running")
    sg = launcher.ask("spawn", submit(ntasks=2, parent=g["job"]))
    assert sg["type"] == "grant", sg
    d.kill()
    d.wait(timeout=10)
    fake_daemon(cores=4)
    ok = launcher.ask("parent2", {"type": "reattach", "v": 1, "job": g["job"], "pgid": pgid, "ntasks": 1,
                                  "command": "spawn-daemon", "slots": g["slots"], "gpu_ids": [],
                                  "exclusive": False, "jobdir": "", "tag": tag})
    assert ok["type"] == "ok", ok
    assert row(jx, sg["job"])["state"] == "detached"
    # the launch ends (its ranks outlive it here: a spawned world still runs)
    launcher.do(op="send", name="parent2", msg={"type": "finished", "code": 0})
    wait_until(lambda: row(jx, g["job"]) is None, 10, 0.05, "the parent released")
    assert row(jx, sg["job"])["state"] == "detached", "a spawn's cores stay held while its launcher lives"
    # another job takes the tag the family's launch let go
    other, og = ask(jx, submit(ntasks=1, tag=tag))
    if og["type"] == "queued":  # while the recovery lasts
        og = read_frame(other)
    assert og["type"] == "grant", og
    theirs = ranks(jx, tag)
    started(other, theirs.pid, tag)
    wait_until(lambda: row(jx, og["job"])["state"] == "running", 10, 0.05, "the other job running")
    launcher.p.kill()
    launcher.p.wait()
    wait_until(lambda: row(jx, sg["job"]) is None, 10, 0.05, "the spawn released once its launcher died")
    wait_until(lambda: process_gone(pgid), 10, 0.05, "the family's group killed")
    assert theirs.poll() is None, "the spawn's end killed another job's processes by the tag it took"
    assert not any(h == sg["job"] for h in holders(jx))
    finish(other)
    theirs.kill()
    theirs.wait()
