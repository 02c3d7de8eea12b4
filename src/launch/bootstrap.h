// Bootstrap: the MPI bootstrap servers of one job, living in the launcher.
//
//  - PMI-1 (MPICH family): one socketpair per rank, the rank's end inherited
//    as PMI_FD; lines go through pmi::SimpleEngine. Nearly free, so every
//    job gets it unless --mpi=none/pmix.
//  - PMIx (Open MPI): the set's shared PMIx server (launch/pmix_shared.h),
//    or libpmix hosted in this process when jiffy-pmix serves the job itself
//    (pmi/pmix_server.h); only when a program links Open MPI, is an
//    interpreter that may load it, or --mpi=pmix says so.
//  - The PMIx rendezvous, for every other program (a plain one, a shell, a
//    wrapper such as valgrind, env, timeout, sh -c, a script, that may run
//    an Open MPI program jiffy cannot see). Looking through wrappers cannot
//    work (a script can run anything), so the decision is taken late: the
//    ranks get the environment of a PMIx server that does not run yet (a
//    loopback TCP socket listening, its URI, a namespace, Open MPI's
//    variables; rendezvous_environment), which costs a socket and a few
//    variables. Nothing accepts on it until a rank connects; then the
//    launcher starts the PMIx server in a helper process (`jiffy-pmix
//    --jiffy-pmix-host`, the same PmixServer, handed the connections on
//    that socket) while the rank waits in its connect, and serves the
//    world. The front (src/front) hands a job over to jiffy-launch at the
//    first connection, as it does when a rank speaks PMI-1. So an Open MPI
//    rank behind any wrapper finds its world, and a plain program never
//    pays for PMIx. If the server cannot start, the job fails with a
//    message: a world never splits silently.
//
// Both servers are polled by Job's loop. What they learn that ends a job
// (an abort, a protocol error) is reported through Events; whether a rank
// got through MPI_Init and MPI_Finalize is queried when it exits.
#pragma once

#include <poll.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "launch/mpi_detect.h"
#include "launch/options.h"
#include "pmi/pmix_server.h"
#include "pmi/simple_engine.h"
#include "util/fd.h"

namespace jiffy {

class Environment;

struct BootstrapPlan {
  bool pmi1 = true;
  bool pmix = false;
  MpiKind kind = MpiKind::None;  // what the programs look like (for messages and variables)
  std::string topology_file;     // the daemon's hwloc XML of the set ("" = none)
  // Ranks of an MPI job load topology_file (HWLOC_XMLFILE). The launcher
  // sets it only when the file is there: hwloc fails on a missing one.
  bool topology_cache = false;
  bool single_node_ompi = false; // Open MPI's shared-memory-only transports (the launcher clears it for GPU jobs)
  bool ucx_shm = false;          // MPICH ranks: UCX_TLS=self,sm (the launcher clears it for GPU jobs)
  bool rendezvous = false;       // the PMIx rendezvous (above); never with pmix
  // Every program is an Open MPI one, served by jiffy's PMIx: its ranks are
  // application processes for sure, and skip the components only mpirun,
  // its daemons, tools and batch systems use (kOmpiAppProcess).
  bool ompi_app = false;
  int rendezvous_fd = -1;        // its listening socket, made by the front; -1: make one
  // --mpi=pmi1 was asked for: the rendezvous only tells that a rank is an
  // Open MPI program after all (behind a wrapper), and the job fails saying
  // so, rather than run as a world split into singletons.
  bool rendezvous_refuses = false;
  std::string tag;               // the job's tag: names its PMIx namespace (pmix_namespace)
};

// The PMIx namespace of a job tagged tag (served directly or behind the
// rendezvous). It is the job's credential: libpmix serves on loopback TCP,
// where any local user can connect, and a client that names a registered
// namespace and rank, and claims their uid (over TCP the client states its
// own ids), is taken for that rank and may spawn processes as its user. So
// it holds nothing another user can see (not the job id, which /tmp's job
// directories show, nor a pid) and is as unguessable as the tag (128 random
// bits), which only the job's own processes, the daemon and the user's
// history know.
std::string pmix_namespace(const std::string& tag);
// What a rank of a rendezvous job gets (src/front/rendezvous.c writes the
// same): the PMIx client's variables, pointing at 127.0.0.1:port, and Open
// MPI's, as Bootstrap gives a PMIx job's ranks. Pure.
void rendezvous_environment(Environment& env, int rank, int size, const std::string& nspace, int port);

// Decides which servers a job needs. Pure.
BootstrapPlan plan_bootstrap(MpiMode mode, const std::vector<MpiKind>& app_kinds);

// A rank asked for more ranks (MPI_Comm_spawn), to be started as a new
// world of the job: Bootstrap::Events::spawn. Answered with
// Bootstrap::spawn_answer(id, ...), after add_world for a started one.
// PMI-1 asks come in the same terms (execname and its "path" info as the
// command, "wdir" as wdir; no env).
struct SpawnAsk {
  int id = 0;
  int world = 0;  // the asker's
  int rank = 0;
  std::vector<PmixSpawnApp> apps;
};

// A job's PMIx server and directory, started before the grant: while the
// request waits in the queue the job is registered with the set's shared
// server (jiffy-pmix, when it serves the job itself, starts its own), so
// that the grant is followed by the ranks at once (starting libpmix's server
// took ~5 ms of an idle core's time after each grant). Nothing in it depends
// on the grant but the job id in names. Two steps, so that the daemon can
// learn the directory before the server fills it: the constructor makes the
// directory, start() the server. Bootstrap takes it over (and starts it if
// need be); destroyed unused, it ends the registration and removes the
// directory. Both throw Error.
class PreparedPmix {
 public:
  PreparedPmix(const BootstrapPlan& plan, unsigned long long job_id, const std::string& tag,
               std::vector<int> appnum);
  ~PreparedPmix();
  PreparedPmix(const PreparedPmix&) = delete;
  PreparedPmix& operator=(const PreparedPmix&) = delete;
  const std::string& dir() const { return dir_; }
  void start();
  bool started() const { return server_ != nullptr; }

 private:
  friend class Bootstrap;
  std::string topology_file_;
  std::string tag_;
  std::vector<int> appnum_;
  std::string dir_;
  std::unique_ptr<PmixServer> server_;
};

class Bootstrap {
 public:
  struct Events {
    // world: 0 for the job's own ranks, else the spawned world's number.
    std::function<void(int world, int rank, int code, const std::string& message)> abort;
    std::function<void(int world, int rank, const std::string& why)> protocol_error;
    std::function<void(const std::string& why)> failure;  // the job cannot go on
    std::function<void(SpawnAsk ask)> spawn;  // unset: spawns fail
  };

  // appnum[r]: rank r's executable group. Starts PMIx if the plan says so,
  // or takes over `prepared` (PreparedPmix) when given. Throws Error.
  Bootstrap(BootstrapPlan plan, unsigned long long job_id, std::vector<int> appnum, Events events,
            std::unique_ptr<PreparedPmix> prepared = nullptr);
  ~Bootstrap();

  // Adds rank r's variables to env and returns the fd the rank must inherit
  // (-1 when none).
  int prepare_rank(int rank, Environment& env);
  // Closes the launcher's copy of rank r's inherited fd.
  void rank_spawned(int rank, int world = 0);
  // Takes over rank r's PMI-1 channel from the front (fd -1: the rank had
  // already hung up). For a rank started by someone else in this process.
  void adopt_channel(int rank, int fd);

  // Appends the fds to poll; handle() takes the same entries back.
  void add_poll_fds(std::vector<pollfd>& fds);
  // REQUIRES: fds[first..] are the entries add_poll_fds appended.
  void handle(const std::vector<pollfd>& fds, std::size_t first);
  // Processes whatever is pending without waiting (call before reaping, so a
  // finalize that preceded an exit is seen first).
  void drain();

  // Spawned worlds (SpawnAsk), served by the asker's server. add_world
  // registers the world of ask spawn_id, whose rank r runs app appnum[r],
  // and returns its number (1, 2, ...); prepare_world_rank gives one of its
  // ranks its variables and returns the fd it must inherit (-1: none);
  // spawn_answer tells the asker (why: for the PMI-1 reply). Throw Error.
  int add_world(int spawn_id, const std::vector<int>& appnum);
  int prepare_world_rank(int world, int rank, Environment& env);
  void spawn_answer(int spawn_id, bool ok, int world = 0, const std::string& why = "");
  // A spawned rank left before it ever connected: its parent, waiting to
  // connect to its world through `port`, would wait forever.
  void world_rank_lost(const std::string& port);

  // The rank got through MPI_Init (either protocol) but not MPI_Finalize.
  bool unfinalized(int rank, int world = 0) const;
  // The rank spoke to either server at all.
  bool contacted(int rank, int world = 0) const;
  const BootstrapPlan& plan() const { return plan_; }
  // The job's private directory ("" when none): the daemon removes it if we
  // are killed before we can.
  const std::string& job_dir() const { return dir_; }

 private:
  // One world's PMI-1 server: its engine and the ranks' channels.
  struct Pmi1World {
    std::unique_ptr<pmi::SimpleEngine> engine;
    std::vector<Fd> fds;        // launcher's ends
    std::vector<Fd> child_fds;  // ranks' ends until spawned
  };
  // A spawn asked and not answered yet.
  struct PendingSpawn {
    bool pmi1 = false;
    int world = 0;  // the asker's
    int rank = 0;
    int host_id = 0;  // PMIx: the server's id of it
    pmi::KeyValues preput;  // PMI-1: for the children's KVS
  };

  Pmi1World make_pmi1_world(int world, pmi::JobInfo info);
  void on_pmi1_spawn(int world, int rank, pmi::SpawnRequest request);
  int open_pmi1_channel(int world, int rank, Environment& env);
  void rank_defaults(Environment& env) const;
  const pmi::SimpleEngine* engine(int world) const;
  void read_pmi(int world, int rank);
  void take_pmix_events();
  void apply(const PmixEvent& e);
  void start_helper();
  void read_helper();
  // Open MPI's variables for rank r of n in a world served by pmix_.
  void pmix_rank_environment(int rank, int size, Environment& env) const;

  BootstrapPlan plan_;
  int size_;
  Events events_;
  std::string dir_;  // per-job directory (PMIx, Open MPI session and shm files)
  std::vector<Pmi1World> pmi1_;  // per world (index 0: the job's); no engine: not PMI-1's
  std::map<int, PendingSpawn> spawns_;
  int last_spawn_ = 0;
  int worlds_ = 1;  // the job's own and the spawned
  std::string kvs_prefix_;
  std::unique_ptr<PmixServer> pmix_;
  // Per world (0: the job's own ranks), per rank.
  std::vector<std::vector<char>> pmix_connected_;
  std::vector<std::vector<char>> pmix_finalized_;
  std::vector<std::pair<int, int>> polled_;  // (world, rank) behind the PMI entries of the last add_poll_fds
  // The rendezvous: its socket until a rank connects, then the helper's
  // event socket and what came of it.
  unsigned long long job_id_ = 0;
  std::vector<int> appnum_;
  Fd rendezvous_;
  int port_ = 0;
  Fd helper_;
  std::string helper_buf_;
  bool rendezvous_polled_ = false;  // rendezvous_ is the last entry of add_poll_fds
  bool helper_polled_ = false;
};

}  // namespace jiffy
