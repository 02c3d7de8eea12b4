#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (committed; rerun
after changing a seed here). Every seed is a realistic input:

- daemon_message, daemon_server: frames exactly as jiffy sends them (4-byte
  big-endian length, then nlohmann's compact dump: sorted keys, no spaces),
  as captured with strace from `jiffy -n 2 sh -c 'sleep 1'` (submit,
  started, finished), plus reattach, status, stop and broken frames. In
  daemon_server seeds, CHILDPGID stands for the fuzzer's group-leading child.
- pmi_engine: the request lines MPICH 4.0.2 sends (src/pmi/simple_engine_test.cc,
  shared/reference/pmi.md A4), in the fuzzer's record format.
- command_line: typical mpiexec / mpirun / jiffy command lines, NUL-separated.
- state_file: a state file a real daemon wrote, and variants.

Usage: fuzz/make_corpus.py   (from anywhere)
"""

import json
import shutil
import struct
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"


def frame(msg: dict) -> bytes:
    body = json.dumps(msg, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return struct.pack(">I", len(body)) + body


def submit(ntasks=2, command="sh -c sleep 1.0", cores_per_task=1, gpus_per_task=0, gpus_per_job=0,
           bind="core", allow_oversubscribe=True, arrival=0, pid=13889, progress=False):
    return frame({"allow_oversubscribe": allow_oversubscribe, "arrival": arrival, "bind": bind,
                  "command": command, "cores_per_task": cores_per_task, "gpus_per_job": gpus_per_job,
                  "gpus_per_task": gpus_per_task, "ntasks": ntasks, "pid": pid, "progress": progress,
                  "type": "submit", "v": 1})


TAG = "5f0c9a7e1b2d4c3a8e6f7a9b0c1d2e3f"  # JIFFY_JOB_TAG: random hex per job


def started(pgid=13892, jobdir="", tag=TAG):
    return frame({"jobdir": jobdir, "pgid": pgid, "tag": tag, "type": "started"})


def preparing(jobdir="/tmp/jiffy-0-job2-Qx7bLm"):
    return frame({"jobdir": jobdir, "type": "preparing"})


def lane(job=3, first=0, count=1, pid=13889, command="true"):
    """What a front says once its lane job has run 2 ms (src/proto/lane.h)."""
    return frame({"command": command, "count": count, "first": first, "job": job, "pid": pid,
                  "tag": TAG, "type": "lane", "v": 1})


def forward(command="./ex19 -snes_monitor", step_name="jiffy-0123456789abcdef", slurm_conf=""):
    return frame({"backend": "slurm", "command": command, "cwd": "/home/u/petsc", "label": "",
                  "ntasks": 4, "pid": 13889, "slurm_conf": slurm_conf, "step_name": step_name,
                  "tag": TAG, "type": "forward", "v": 1})


def step(step="312.4", nodes="n[1-2]"):
    return frame({"nodes": nodes, "step": step, "type": "step"})


def finished(code=0):
    return frame({"code": code, "type": "finished"})


def reattach(job=1, slots=((0, 0), (1, 0)), gpu_ids=(), exclusive=False, pgid=13892, ntasks=2,
             command="sh -c sleep 1.0", jobdir="/tmp/jiffy-0-job1-a1b2c3", tag=TAG):
    return frame({"command": command, "exclusive": exclusive, "gpu_ids": list(gpu_ids), "job": job,
                  "jobdir": jobdir, "ntasks": ntasks, "pgid": pgid, "slots": [list(s) for s in slots],
                  "tag": tag, "type": "reattach", "v": 1})


STATUS = frame({"type": "status", "v": 1})
STOP = frame({"type": "stop", "v": 1})

# What a daemon wrote for `jiffy -n 2 sh -c 'sleep 1.5'` (first line of the
# file; the daemon preallocates the file and pads it with NULs).
REAL_STATE = (b'{"jobs":[{"command":"sh -c sleep 1.5","exclusive":false,"gpus":[],"job":1,"jobdir":"","l'
              b'eader_start":630397,"ntasks":2,"pgid":9901,"pid":9887,"pid_start":630384,"sid":31621,"sl'
              b'ots":[[0,0],[1,0]],"tag":"a130af744738a5b05f487b3e10172421"}],"next_job":2,"v":1}\n')
# The state file as the daemon wrote it before the group fields (refused now).
OLD_STATE = (b'{"jobs":[{"command":"sh -c sleep 1.0","exclusive":false,"gpus":[],"job":1,"jobdir":"",'
             b'"ntasks":2,"pgid":13892,"pid":13889,"pid_start":406931,"slots":[[0,0],[1,0]]}],'
             b'"next_job":2,"v":1}\n')


def state(jobs, next_job=None) -> bytes:
    if next_job is None:
        next_job = max([j["job"] for j in jobs], default=0) + 1
    return json.dumps({"jobs": jobs, "next_job": next_job, "v": 1}, sort_keys=True,
                      separators=(",", ":")).encode() + b"\n"


def stored(job, slots, gpus=(), exclusive=False, pid=13889, pid_start=406931, pgid=13892, ntasks=None,
           command="./app", jobdir="", sid=13880, leader_start=406935, tag=TAG):
    return {"command": command, "exclusive": exclusive, "gpus": list(gpus), "job": job, "jobdir": jobdir,
            "leader_start": leader_start, "ntasks": ntasks if ntasks is not None else len(slots),
            "pgid": pgid, "pid": pid, "pid_start": pid_start, "sid": sid,
            "slots": [list(s) for s in slots], "tag": tag}


def daemon_message():
    return {
        "lifecycle_n2": submit() + started() + finished(),
        "submit_n1_true": submit(ntasks=1, command="/bin/true", pid=4242),
        "submit_c2_gpus_hwthread": submit(ntasks=2, cores_per_task=2, gpus_per_task=1, bind="hwthread",
                                          command="./cuda_app --size 1024") + started(pgid=5000),
        "submit_gpus_per_job": submit(ntasks=3, gpus_per_job=2, bind="none", command="python3 train.py"),
        "submit_wide_exclusive": submit(ntasks=12, command="./petsc_test -snes_monitor") + started()
        + finished(code=139),
        "submit_no_oversubscribe": submit(ntasks=12, allow_oversubscribe=False),
        "submit_progress_queued": submit(ntasks=6, progress=True, command="make check"),
        "resubmit_arrival": submit(ntasks=1, arrival=7),
        "resubmit_arrival_taken": submit(ntasks=1, arrival=2),
        "reattach": reattach(),
        "reattach_gpus_exclusive": reattach(job=9, slots=[(c, s) for c in range(6) for s in range(2 if c in (2, 3) else 1)],
                                            gpu_ids=(0, 2), exclusive=True, ntasks=12) + finished(),
        "reattach_conflict": reattach(job=5, slots=((0, 0),)),
        "status": STATUS,
        "stop": STOP,
        "submit_twice": submit(ntasks=1) + submit(ntasks=1),
        "started_before_grant": started(),
        "preparing_before_submit": preparing(),
        "submit_preparing_started": submit() + preparing() + started(),
        "finished_then_submit": submit(ntasks=1) + finished(code=3) + submit(ntasks=2),
        "wrong_version": frame({"type": "submit", "v": 2, "ntasks": 1}),
        "unknown_type": frame({"type": "launch", "v": 1}),
        "not_an_object": struct.pack(">I", 7) + b'["x",1]',
        "not_json": struct.pack(">I", 9) + b'{"type":}',
        "oversized": struct.pack(">I", 64 * 1024 + 1) + b"{",
        "half_frame": submit()[:40],
        "utf8_command": submit(ntasks=1, command="./prog --name=\u00e9t\u00e9 \u2603"),
        "lane": lane() + started(),
        "forward_step_finished": forward() + step() + finished(),
        "forward_step_hangup": forward(slurm_conf="/etc/slurm/slurm.conf") + step(step="7+1.0", nodes=""),
        "forward_bad_step": forward() + step(step="--all"),
        "forward_bad_name": forward(step_name="-x"),
        "forward_then_submit": forward() + submit(),
    }


CHILD = 999999999  # becomes CHILDPGID (same length): the fuzzer's group-leading child


def daemon_server():
    sep = b"\n--\n"
    seeds = {
        "one_launcher": submit() + started(pgid=CHILD) + finished(),
        "running_then_lost": submit(ntasks=2) + started(pgid=CHILD, jobdir="/tmp/jiffy-0-job1-Qx7bLm"),
        "started_foreign_group": submit(ntasks=1) + started(pgid=1),
        "queued_preparing_lost": sep.join([submit(ntasks=4) + started(pgid=CHILD),
                                            submit(ntasks=1, pid=13900) + preparing()]),
        "running_queued_status": sep.join([submit(ntasks=4) + started(pgid=CHILD),
                                            submit(ntasks=8, pid=13900, progress=True),
                                            submit(ntasks=1, cores_per_task=2, gpus_per_task=1, pid=13901),
                                            STATUS]),
        "crash_recovery": REAL_STATE + sep + reattach(pgid=CHILD, jobdir=""),
        "state_only": state([stored(1, [(0, 0), (1, 0)]), stored(3, [(2, 0), (2, 1)], gpus=[1], pgid=0)]),
        "state_then_resubmit": state([stored(4, [(5, 0)], jobdir="/tmp/jiffy-0-job4-zzzzzz")])
        + sep + submit(ntasks=1, arrival=4) + sep + submit(ntasks=2, arrival=2),
        "garbage_then_launcher": sep.join([b"\x00\x00\x00\x05hello", struct.pack(">I", 1 << 20),
                                            submit(ntasks=2) + started(pgid=CHILD), STATUS]),
        "stop": sep.join([submit(ntasks=1), STOP]),
        "lane_not_held": sep.join([lane(job=1, first=1, count=1) + finished(),
                                   submit(ntasks=1) + started(pgid=CHILD) + finished(), lane(job=99)]),
        "forwarded_and_local": sep.join([forward() + step(), submit(ntasks=1) + started(pgid=CHILD),
                                          forward(step_name="jiffy-ab") , STATUS]),
        "wide_and_narrow": sep.join([submit(ntasks=12, command="wide"), submit(ntasks=1, command="narrow"),
                                      submit(ntasks=2, gpus_per_job=3, command="gpus")]),
    }
    return {k: v.replace(str(CHILD).encode(), b"CHILDPGID") for k, v in seeds.items()}


def pmi_records(shape, events):
    """events: (rank, bytes) or (rank, None) for a disconnect."""
    out = bytearray([shape])
    for rank, data in events:
        if data is None:
            out.append(0x80 | rank)
            continue
        while True:  # split into records of at most 255 bytes
            chunk, data = data[:255], data[255:]
            out += bytes([rank, len(chunk)]) + chunk
            if not data:
                break
    return bytes(out)


def mpich_402_two_ranks():
    ev = []
    kvs = b"kvs_42_0"

    def ask(r, line):
        ev.append((r, line + b"\n"))

    for r in (0, 1):
        ask(r, b"cmd=init pmi_version=1 pmi_subversion=1")
        ask(r, b"cmd=get_maxes")
        ask(r, b"cmd=get_appnum")
        ask(r, b"cmd=get_my_kvsname")
    for r in (0, 1):
        ask(r, b"cmd=get kvsname=" + kvs + b" key=PMI_process_mapping")
    ask(0, b"cmd=barrier_in")
    ask(1, b"cmd=barrier_in")
    ask(0, b"cmd=put kvsname=" + kvs + b" key=-bcast-1-0 value=2f6d706963685f73686d")
    ask(0, b"cmd=barrier_in")
    ask(1, b"cmd=barrier_in")
    ask(1, b"cmd=get kvsname=" + kvs + b" key=-bcast-1-0")
    ask(0, b"cmd=put kvsname=" + kvs + b" key=-allgather-shm-1-0 value=a0")
    ask(1, b"cmd=put kvsname=" + kvs + b" key=-allgather-shm-1-1 value=b1")
    ask(1, b"cmd=barrier_in")
    ask(0, b"cmd=barrier_in")
    ask(0, b"cmd=get kvsname=" + kvs + b" key=-allgather-shm-1-1")
    ask(1, b"cmd=get kvsname=" + kvs + b" key=-allgather-shm-1-0")
    ask(0, b"cmd=barrier_in")
    ask(1, b"cmd=barrier_in")
    for r in (0, 1):
        ask(r, b"cmd=finalize")
        ev.append((r, None))
    return ev


SPAWN_BLOCK = (b"mcmd=spawn\nnprocs=2\nexecname=./worker\ntotspawns=1\nspawnssofar=1\n"
               b"arg1=--mode=fast\narg2=two words\nargcnt=2\npreput_num=1\n"
               b"preput_key_0=PARENT_ROOT_PORT_NAME\npreput_val_0=tag#0$description#x$\n"
               b"info_num=0\nendcmd\n")
INIT = b"cmd=init pmi_version=1 pmi_subversion=1\n"


def pmi_engine():
    two = mpich_402_two_ranks()
    # The same session with rank 1's lines arriving in 5-byte pieces.
    pieces = []
    for r, d in two:
        if d is None or r == 0:
            pieces.append((r, d))
        else:
            pieces += [(r, d[i:i + 5]) for i in range(0, len(d), 5)]
    return {
        "mpich402_two_ranks": pmi_records(0x01, two),
        "mpich402_two_ranks_split": pmi_records(0x01, pieces),
        "mpich402_one_write": pmi_records(0x01, [(0, b"".join(d for r, d in two if r == 0 and d))]),
        "singleton_universe": pmi_records(0x08, [(0, INIT + b"cmd=get_universe_size\ncmd=get_appnum\n"
                                                      b"cmd=finalize\n"), (0, None)]),
        "mpmd_four": pmi_records(0x07, [(r, INIT + b"cmd=get_appnum\n") for r in range(4)]
                                 + [(r, b"cmd=barrier_in\n") for r in range(4)]),
        "hostname_fallback": pmi_records(0x01, [(0, INIT), (1, INIT),
                                                (0, b"cmd=put kvsname=kvs_42_0 key=hostname[0] value=node1\n"),
                                                (1, b"cmd=put kvsname=kvs_42_0 key=hostname[1] value=node1\n"),
                                                (0, b"cmd=barrier_in\n"), (1, b"cmd=barrier_in\n"),
                                                (0, b"cmd=get kvsname=kvs_42_0 key=hostname[1]\n")]),
        "abort": pmi_records(0x01, [(0, INIT), (1, INIT), (1, b"cmd=barrier_in\n"),
                                    (0, b"cmd=abort exitcode=7\n"), (0, None), (1, None)]),
        "disconnect_mid_barrier": pmi_records(0x02, [(0, INIT), (1, INIT), (2, INIT), (0, b"cmd=barrier_in\n"),
                                                     (1, None), (2, b"cmd=barrier_in\n")]),
        "spawn_block": pmi_records(0x00, [(0, INIT + SPAWN_BLOCK)]),
        "publish_lookup": pmi_records(0x00, [(0, INIT + b"cmd=publish_name service=s port=p\n"
                                                  b"cmd=lookup_name service=s\ncmd=unpublish_name service=s\n")]),
        "malformed": pmi_records(0x11, [(0, b"cmd=init =1\n"), (1, b"cmd=get_maxes\n"),
                                        (1, b"  key=k \t kvsname=kvs_42_0   cmd=get  \r\n")]),
        "long_key_value": pmi_records(0x00, [(0, INIT + b"cmd=put kvsname=kvs_42_0 key=" + b"k" * 65 + b" value=v\n"
                                                  + b"cmd=put kvsname=kvs_42_0 key=k value=" + b"f" * 1025 + b"\n"
                                                  + b"cmd=get kvsname=kvs_42_0 key=k\n")]),
        "second_init_finalize_twice": pmi_records(0x00, [(0, INIT + INIT + b"cmd=finalize\ncmd=finalize\n")]),
    }


def command_line():
    lines = [
        ["-n", "4", "./app"],
        ["-np", "2", "./a.out", "-snes_monitor", "-ksp_type", "gmres"],
        ["-n", "1", "./master", ":", "-n", "2", "./worker", "--threads", "2"],
        ["--oversubscribe", "-x", "FOO=bar", "-x", "PATH", "--bind-to", "core", "-np", "3", "python3", "script.py"],
        ["-genv", "OMP_NUM_THREADS", "1", "-genvlist", "PATH,HOME", "-n", "2", "-l", "./app"],
        ["-genvnone", "-env", "A", "1", "-n", "1", "env", ":", "-envall", "-n", "1", "env"],
        ["-n", "2", "-outfile-pattern", "out.%r.%g", "-errfile-pattern", "err.%%r", "./app"],
        ["--output-filename", "logs", "--tag-output", "-n", "2", "prog"],
        ["-timeout", "30", "-n", "2", "prog"],
        ["MPIEXEC_TIMEOUT=10", "-n", "1", "prog"],
        ["-n", "4", "-c", "2", "-g", "1", "-G", "1", "--mpi=pmix", "./app"],
        ["-wdir", "/tmp", "--mca", "btl", "self,vader", "-n", "2", "--map-by", "ppr:2:socket:PE=2", "./ompi_app"],
        ["-bind-to", "hwthread:1", "-map-by", "core", "-n", "2", "--", "-weird-name"],
        ["--np=2", "--timeout=60", "--topology-cache", "--single-node-ompi", "-v", "./app"],
        ["--no-oversubscribe", "--allow-run-as-root", "-n", "12", "./app"],
        ["daemon", "--cores", "64", "--gpus", "4", "--foreground", "--idle-timeout", "0"],
        ["daemon", "--gpu-names", "a,b", "--slots-per-core", "2", "--hyperthreads", "--max-oversubscribe", "4"],
        ["status", "--json"],
        ["stop"],
        ["--help"],
        ["-help", "all"],
        ["--version"],
        ["-n", "0", "prog"],
        ["-n", "2", "-bogus", "prog"],
        ["-n", "2"],
        ["top", "-d", "0.2", "-n", "3", "--batch"],
        ["--backend=slurm", "-N", "2", "-n", "8", "-l", "./app"],
        ["--backend", "auto", "-ppn", "4", "-n", "8", "-outfile-pattern", "o.%r", "./a", ":", "-n", "1", "./b"],
    ]
    def name(i, ws):
        words = "_".join("".join(c for c in w if c.isalnum()) for w in ws[:3])
        return f"{i:02d}_{words}"

    return {name(i, ws): b"\0".join(w.encode() for w in ws) for i, ws in enumerate(lines)}


def state_file():
    return {
        "real": REAL_STATE,
        "real_padded": REAL_STATE + b"\0" * 256,
        "empty": state([], next_job=1),
        "three_jobs": state([stored(1, [(0, 0), (1, 0)]),
                             stored(2, [(2, 0), (2, 1)], gpus=[0, 1], command="./cuda --x",
                                    jobdir="/tmp/jiffy-0-job2-Ab3dEf"),
                             stored(5, [(3, 0)], pgid=0)], next_job=9),
        "exclusive": state([stored(7, [(c, s) for c in range(6) for s in range(2 if c in (2, 3) else 1)],
                                   gpus=[0, 1, 2], exclusive=True, ntasks=12)]),
        "conflicting": state([stored(1, [(0, 0)]), stored(2, [(0, 0)]), stored(2, [(1, 0)])]),
        "torn_tail": state([stored(1, [(0, 0)])]) + b'"slots":[[0,0]]}],"next_job":2,"v":1}\n',
        "cut_short": REAL_STATE[:60],
        "before_group_fields": OLD_STATE,
    }


def write(target, seeds):
    d = CORPUS / target
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    names = set()
    for name, data in seeds.items():
        assert name not in names, name
        names.add(name)
        (d / name).write_bytes(data)
    print(f"{target}: {len(seeds)} seeds")


def pmix_wire():
    """The shared PMIx server's connection (pmi/pmix_wire.h), both ways."""
    job = frame({"type": "job", "v": 1, "nspace": "jiffy.0123456789abcdef0123456789abcdef", "appnum": [0, 0],
                 "dir": "/tmp/jiffy-0-job7-AbCdEf"})
    rank_vars = [["PMIX_NAMESPACE", "jiffy.0123456789abcdef0123456789abcdef"], ["PMIX_RANK", "0"],
                 ["PMIX_SERVER_URI41", "pmix-server.0;tcp4://127.0.0.1:40123"]]
    app = {"command": "./child", "argv": ["./child", "-x"], "nprocs": 2,
           "env": [["OMPI_PARENT_PORT", "2181234689.0:1234"]], "wdir": "/work", "hosts": [], "hostfile": ""}
    return {
        "job": job,
        "job_mpmd": frame({"type": "job", "v": 1, "nspace": "jiffy.ab", "appnum": [0, 1, 1], "dir": "/d"}),
        "job_old_version": frame({"type": "job", "v": 0, "nspace": "jiffy.ab", "appnum": [0], "dir": "/d"}),
        "world_spawn_done": frame({"type": "world", "world": 1, "appnum": [0, 0], "spawn_id": 1})
        + frame({"type": "spawn_done", "spawn_id": 1, "ok": True, "world": 1}),
        "abandon_port_stop": frame({"type": "abandon_port", "port": "2181234689.0:1234"}) + frame({"type": "stop"}),
        "vars": frame({"type": "vars", "world": 0, "ranks": [rank_vars, rank_vars]}),
        "events": b"".join(frame({"type": "event", "kind": k, "world": 0, "rank": r, "status": 0, "message": "",
                                  "spawn_id": 0}) for k, r in ((0, 0), (0, 1), (1, 1), (1, 0))),
        "abort": frame({"type": "event", "kind": 2, "world": 0, "rank": 1, "status": 7, "message": "MPI_Abort",
                        "spawn_id": 0}),
        "spawn": frame({"type": "event", "kind": 3, "world": 0, "rank": 0, "status": 0, "message": "",
                        "spawn_id": 1, "apps": [app]}),
        "error": frame({"type": "error", "message": "PMIx: register_nspace: PMIX_ERROR"}),
    }


def main():
    write("daemon_message", daemon_message())
    write("daemon_server", daemon_server())
    write("pmi_engine", pmi_engine())
    write("command_line", command_line())
    write("state_file", state_file())
    write("pmix_wire", pmix_wire())


if __name__ == "__main__":
    main()
