// SimpleEngine: the server side of the PMI-1 "simple" wire protocol for one
// job (MPICH, MVAPICH, Intel MPI; see docs in shared/reference/pmi.md Part A).
//
// Pure logic, no I/O, no clock, no processes: bytes read from a rank's PMI fd
// go in through on_data(), whole reply lines come out through Callbacks::send,
// and events the caller must act on (abort, finalize, protocol errors) come out
// through the other callbacks. The caller owns the fds, the processes and the
// policy of killing the job; the engine owns the KVS and the barrier.
//
// How it works:
//  - Each rank has a line buffer. on_data() splits input at '\n' (a line may
//    arrive in pieces, several may arrive at once) and handles every complete
//    line in order. A partial line longer than kMaxLineBytes is a protocol
//    error, so input is never buffered without bound.
//  - A line is space-separated key=value tokens, each split at its FIRST '='
//    (MPICH sends values like "segments=3"). The "cmd" token names a handler in
//    a table; unknown commands, tokens without '=', empty lines and lines
//    without cmd are protocol errors (RFC 13: close the fd, fail the job).
//  - "mcmd=spawn" starts a multi-line block (one item per line, values run to
//    the end of the line) that ends at "endcmd"; MPI_Comm_spawn_multiple
//    sends one block per app, and reads one reply after the block whose
//    spawnssofar equals totspawns (after every block when those counts are
//    absent). The blocks become one SpawnRequest for Callbacks::spawn, and
//    the rank waits (lock-step) until the caller answers with spawn_done().
//    Without that callback, or for blocks that do not make a request, the
//    reply is "cmd=spawn_result rc=-1" at once: the parent's spawn fails
//    cleanly (non-zero errcodes could leave it waiting; see
//    docs/spawn-research.md).
//  - barrier_in replies are deferred. A barrier completes, and every waiting
//    rank gets "cmd=barrier_out rc=0", when each rank of the job is waiting in
//    it, has finalized, or has disconnected cleanly (never spoke PMI, or had
//    finalized): such ranks can never enter it, and waiting for them would
//    hang the job. Ranks that have not connected yet are waited for.
//  - Once the job has failed (a rank aborted, hit a protocol error, or
//    disconnected after init and before finalize) no barrier ever completes:
//    MPICH does not check the barrier rc, so the only safe failure signal is
//    the caller killing the job. Other requests are still answered, so lines
//    arriving during teardown are harmless.
//
// Decisions beyond the reference (each also noted where it is implemented):
//  - A second init is answered exactly like the first (Hydra does the same;
//    a library and MPI calling PMI_Init in one process share one fd).
//  - Requests other than init and abort before init, any request while the
//    rank waits in a barrier (the protocol is lock-step), and any request
//    after finalize are protocol errors. abort is accepted at any time.
//  - Bad put/get arguments (unknown kvsname, missing, empty or too long key,
//    too long value) are answered with a PMI error code rc and a msg: the
//    client's call fails and MPICH reports it.
//  - A put may overwrite an existing key. Keys the server answers itself
//    (PMI_process_mapping, PMI_dead_processes) cannot be put.
//  - Lines after a protocol error, an abort or a disconnect of that rank are
//    ignored.
//  - Only the inherited-fd transport is served: "cmd=initack" (PMI_PORT mode)
//    is an unknown command like any other.
//
// Callbacks run synchronously inside on_data()/on_disconnect() and may call
// back into the engine (e.g. on_disconnect() from protocol_error). A reply is
// always sent before the event it belongs to is reported (e.g. the rc=-1 init
// reply before protocol_error, finalize_ack before finalized).
//
// Thread-compatible (no internal locking).
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace jiffy::pmi {

using KeyValues = std::vector<std::pair<std::string, std::string>>;

struct JobInfo {
  int size = 0;             // number of ranks, >= 1
  std::string kvsname;      // 1..kKvsnameMax bytes, no whitespace
  std::vector<int> appnum;  // per rank: index of its ':'-separated executable group
  int universe_size = 0;    // usually size; Hydra may send -1 (infinite)
  // In the KVS from the start: a spawned world's preput pairs (its
  // parent's port name, which the children read with get).
  KeyValues preput;
};

// One app of a spawn request (one block of the wire protocol).
struct SpawnApp {
  int nprocs = 0;
  std::string execname;
  std::vector<std::string> args;
  KeyValues info;  // MPI_Info of the app: wdir, path, host, ...
};

// What a rank asked MPI_Comm_spawn(_multiple) for.
struct SpawnRequest {
  std::vector<SpawnApp> apps;
  KeyValues preput;  // for the children's KVS
  int total_procs() const;
};

class SimpleEngine {
 public:
  struct Callbacks {
    // A whole reply line for rank, including the trailing '\n'.
    std::function<void(int rank, std::string_view reply)> send;
    // rank sent cmd=abort (no reply is sent; the client blocks until killed).
    // exitcode may be negative; it is 1 when absent or not an integer.
    std::function<void(int rank, int exitcode)> abort;
    // rank's cmd=finalize was answered; the client closes its fd next.
    std::function<void(int rank)> finalized;
    // rank broke the protocol; why is one human-readable line. The caller
    // should close that rank's fd and fail the job. Reported once per rank.
    std::function<void(int rank, const std::string& why)> protocol_error;
    // Optional: rank asked for a spawn; answer with spawn_done(rank, ...).
    // Unset: every spawn is refused.
    std::function<void(int rank, SpawnRequest request)> spawn;
  };

  // Most processes one spawn request may ask for (all apps together).
  static constexpr int kMaxSpawnProcs = 1 << 16;

  // Size limits advertised by get_maxes and enforced on put/get.
  // Hydra and Slurm advertise 256/64/1024 (Flux 64/64/1024). The MPICH 4.0.2
  // client keeps name + key + value + 30 <= 1024 (its PMIU_MAXLINE) by lowering
  // its value limit to 1024 - 256 - 64 - 30 = 674 and asserts that stays > 256,
  // so its request and reply lines fit in 1024 bytes. vallen_max must never
  // exceed 1024: MPICH and MVAPICH2 mishandle larger values, often with a
  // segfault (flux-core simple_server.h).
  static constexpr int kKvsnameMax = 256;
  static constexpr int kKeylenMax = 64;
  static constexpr int kVallenMax = 1024;
  // Longest request line accepted, without its '\n'. MPICH builds every request
  // (even a whole spawn block) in a 1024-byte buffer; 4 times that leaves room
  // for other clients while bounding what a broken one can make us buffer.
  static constexpr std::size_t kMaxLineBytes = 4096;

  // Throws jiffy::Error when info is inconsistent (size < 1, appnum not one
  // per rank, kvsname empty, too long or with whitespace) or a callback is
  // empty.
  SimpleEngine(JobInfo info, Callbacks cb);

  // Feeds bytes read from rank's PMI fd: any number of whole or partial lines.
  // Replies and events come out through the callbacks before it returns.
  // Bytes from a rank that hit a protocol error, aborted or disconnected are
  // ignored. Throws jiffy::Error if rank is not in [0, size).
  void on_data(int rank, std::string_view bytes);

  // rank's PMI fd hit EOF or an error; later bytes from it are ignored.
  // Returns true when this is a failure the caller must act on (kill the job,
  // as Hydra does): the rank had initialized and not finalized. Returns false
  // when the rank never initialized (a non-MPI program), had finalized, or had
  // already been reported (abort, protocol error, an earlier on_disconnect).
  // A rank killed because the job already failed still returns true if it had
  // initialized and not finalized: the caller keeps the first cause.
  // A clean disconnect may complete a barrier the others are waiting in.
  // Throws jiffy::Error if rank is not in [0, size).
  bool on_disconnect(int rank);

  // Answers rank's pending spawn: rc=0 when its children were started, else
  // rc=-1 with why (one word on the wire: blanks become '_'). Ignored when
  // rank waits for no spawn (it went away meanwhile).
  void spawn_done(int rank, bool ok, const std::string& why = "");

  // Whether rank's init was answered with rc=0 (stays true after finalize).
  bool initialized(int rank) const;
  // Whether rank's finalize was answered.
  bool finalized(int rank) const;
  // Whether rank sent at least one line (well-formed or not, or too long).
  bool ever_connected(int rank) const;

 private:
  // One request line split into key=value tokens (views into the line).
  class Request;
  using Handler = void (SimpleEngine::*)(int rank, const Request& req);
  struct Command {
    std::string_view name;  // "cmd=<x>" or "mcmd=<x>"
    Handler handler;
    bool needs_init;  // refused before a successful init
    bool lock_step;   // refused while the rank waits in a barrier or after finalize
  };

  struct Rank {
    std::string partial;  // bytes after the last '\n' seen
    bool spoke = false;
    bool initialized = false;
    bool finalized = false;
    bool in_barrier = false;
    bool in_spawn_block = false;
    bool awaiting_spawn = false;  // its request went to Callbacks::spawn
    bool closed = false;  // input ignored: protocol error, abort or disconnect
    // Of the spawn block being read; -1 until seen and valid.
    int totspawns = -1;
    int spawnssofar = -1;
    KeyValues block;         // the items of the block being read
    SpawnRequest spawn;      // the apps of the blocks read so far
    std::string spawn_error;  // why those blocks make no request ("" when they do)
  };

  static const Command* find_command(std::string_view name);

  Rank& rank_at(int rank);
  const Rank& rank_at(int rank) const;
  void handle_line(int rank, std::string_view line);
  void handle_spawn_line(int rank, std::string_view line);
  void end_spawn_block(int rank);
  void dispatch(int rank, const Request& req);
  void reply(int rank, std::string_view line);
  void fail_protocol(int rank, const std::string& why);
  void maybe_release_barrier();

  void on_init(int rank, const Request& req);
  void on_get_maxes(int rank, const Request& req);
  void on_get_appnum(int rank, const Request& req);
  void on_get_my_kvsname(int rank, const Request& req);
  void on_get_universe_size(int rank, const Request& req);
  void on_put(int rank, const Request& req);
  void on_get(int rank, const Request& req);
  void on_barrier_in(int rank, const Request& req);
  void on_finalize(int rank, const Request& req);
  void on_abort(int rank, const Request& req);
  void on_publish_name(int rank, const Request& req);
  void on_unpublish_name(int rank, const Request& req);
  void on_lookup_name(int rank, const Request& req);
  void on_spawn(int rank, const Request& req);

  // The reply's rc and msg when a put/get's kvsname or key is unacceptable;
  // empty when they are fine.
  std::string check_kvsname_and_key(const Request& req) const;

  JobInfo info_;
  Callbacks cb_;
  std::vector<Rank> ranks_;
  std::map<std::string, std::string, std::less<>> kvs_;
  bool job_failed_ = false;  // no barrier completes once set
};

}  // namespace jiffy::pmi
