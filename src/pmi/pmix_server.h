// PmixServer: the PMIx server that Open MPI ranks bootstrap from, hosted in
// the launcher through Debian's libpmix (see ../shared/reference/pmi.md B).
//
// libpmix runs its callbacks on its own progress thread. They never touch
// launcher state: they copy what they learned into an event queue, answer
// libpmix at once, and wake the launcher's poll loop through an eventfd.
// The loop then takes the events (rank connected, finalized, aborted).
//
// Only the `jiffy-pmix` executable links libpmix (pmix_host.cc); the lean
// `jiffy` links pmix_stub.cc, whose available() is false, and re-executes
// itself as jiffy-pmix when a job needs PMIx. So launches of plain and MPICH
// programs never load libpmix.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

namespace jiffy {

class Environment;

struct PmixJob {
  std::string nspace;
  int size = 1;
  std::vector<int> appnum;    // per rank: its app (MPI_APPNUM)
  std::string dir;  // the job's private directory (PMIx and Open MPI session files)
  uid_t uid = 0;
  gid_t gid = 0;
  // hwloc XML of the machine, when the daemon has written it: libpmix loads
  // it instead of discovering the machine, and hands it to the ranks (as
  // mpirun does), so no rank rediscovers it either. Empty: they discover.
  std::string topology_xml;
  // The rendezvous (launch/bootstrap.h, "lazy PMIx"): the ranks were
  // started before this server, told to connect to rendezvous_fd, a
  // listening socket the launcher made, which libpmix is made to accept on
  // (accept_ready); the ranks' environment is the rendezvous's, not
  // setup_fork's.
  int rendezvous_fd = -1;
  // Where events go when this server runs in a helper process: one line
  // each, written before libpmix answers the rank (so a launcher that sees
  // a rank exit has its "finalized" already). -1: queued for take_events.
  int event_sink = -1;
};

// One program of an MPI_Comm_spawn (a pmix_app_t, copied).
struct PmixSpawnApp {
  std::string command;            // as the parent named it (cmd)
  std::vector<std::string> argv;  // argv[0] included
  int nprocs = 1;
  std::vector<std::pair<std::string, std::string>> env;  // the MPI's (OMPI_PARENT_PORT, OMPI_MCA_*)
  std::string wdir;  // PMIX_WDIR, else the parent's cwd
  // Where it asked to run (PMIX_HOST, PMIX_HOSTFILE; PMI-1's host, hosts,
  // hostfile infos): jiffy runs jobs on this machine only.
  std::vector<std::string> hosts;
  std::string hostfile;
};

struct PmixEvent {
  enum class Kind { Connected, Finalized, Abort, Spawn };
  Kind kind = Kind::Connected;
  int rank = -1;
  int status = 0;       // Abort: the code the rank passed
  std::string message;  // Abort: its message
  int world = 0;        // 0: the job's own ranks; n: the n-th spawned world (add_world)
  // Spawn: what a rank of `world` asks for; answered by spawn_done(spawn_id, ...).
  int spawn_id = 0;
  std::vector<PmixSpawnApp> apps;
};

// An event of kind k about rank (world 0).
inline PmixEvent pmix_event(PmixEvent::Kind k, int rank, int status = 0, std::string message = {}) {
  PmixEvent e;
  e.kind = k;
  e.rank = rank;
  e.status = status;
  e.message = std::move(message);
  return e;
}

class PmixServer {
 public:
  // Whether this executable can host PMIx.
  static bool available();
  // Initialises libpmix for this process and registers the job and its
  // ranks (each rank's setup_fork is done then too). Throws Error.
  static std::unique_ptr<PmixServer> start(const PmixJob& job);

  virtual ~PmixServer() = default;
  // Adds what rank r needs to its environment (PMIX_* from setup_fork, done
  // by start()). Call before forking it.
  virtual void prepare_rank(int rank, Environment& env) = 0;
  // Readable when events are waiting.
  virtual int event_fd() const = 0;
  virtual std::vector<PmixEvent> take_events() = 0;
  // With a rendezvous: makes libpmix accept on it. Once, after start().
  virtual void accept_ready() {}

  // MPI_Comm_spawn (the spawn event): the launcher got the cores and
  // registers the new world, number `world` (1, 2, ...), whose rank r runs
  // app appnum[r]; its ranks are then prepared with prepare_world_rank and
  // started, and the asker answered with spawn_done. Throws Error.
  virtual void add_world(int world, const std::vector<int>& appnum, int spawn_id) = 0;
  virtual void prepare_world_rank(int world, int rank, Environment& env) = 0;
  // Answers spawn request spawn_id: started (world's ranks run) or failed.
  virtual void spawn_done(int spawn_id, bool ok, int world) = 0;
  // A spawned world's rank left before it connected: its parent, waiting
  // to connect to the world through `port` (OMPI_PARENT_PORT), would wait
  // for it forever; that wait fails instead.
  virtual void abandon_port(const std::string& port) = 0;

  // `jiffy-pmix --jiffy-pmix-host ...`: the PMIx server of one rendezvous
  // job, in a helper process the launcher starts when a rank first
  // connects (launch/bootstrap.cc, start_helper, says the arguments). Its
  // namespace, the job's credential (launch/bootstrap.h, pmix_namespace),
  // comes in kNamespaceVar, not in the world-readable arguments. Serves
  // until the event socket closes. Returns the exit code.
  static constexpr const char* kNamespaceVar = "JIFFY_PMIX_NAMESPACE";
  static int host_main(const std::vector<std::string>& args);
};

// One event as the helper writes it ("c 3", "f 3", "a 3 7 message").
std::string format_pmix_event(const PmixEvent& e);
// Parses one such line; false when it is not one.
bool parse_pmix_event(const std::string& line, PmixEvent* e);

}  // namespace jiffy
