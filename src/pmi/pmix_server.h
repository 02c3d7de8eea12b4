// PmixServer: the PMIx server that Open MPI ranks bootstrap from, hosted in
// the launcher through Debian's libpmix (see ../shared/reference/pmi.md B).
//
// libpmix runs its callbacks on its own progress thread. They never touch
// launcher state: they copy what they learned into an event queue, answer
// libpmix at once, and wake the launcher's poll loop through an eventfd.
// The loop then takes the events (rank connected, finalized, aborted).
//
// Only the `jiffy-pmix` executable links libpmix (pmix_host.cc). It hosts
// a server three ways: in the launcher's own process (a job jiffy-pmix
// launches), as a job's helper (`--jiffy-pmix-host`, the rendezvous), and
// as the shared server of a user's resource set (`--jiffy-pmix-serve`,
// pmix_service.cc): one libpmix server, started once, that registers one
// namespace per job for every launcher of the set (pmi.md B2: "a
// long-running daemon registers more namespaces instead of
// re-initialising"). The lean `jiffy-launch` links pmix_remote.cc: its
// PmixServer is that shared server, reached over a Unix socket
// (pmi/pmix_wire.h); only when it cannot be reached does the launcher
// re-execute itself as jiffy-pmix. So launches of plain and MPICH programs
// never load libpmix, and an Open MPI launch pays neither for loading it
// nor for initialising a server.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
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
  // Where events go when this server runs apart from its launcher (a
  // helper, the shared server): called on libpmix's thread, before libpmix
  // answers the rank (so a launcher that sees a rank exit has its
  // "finalized" already). Unset: queued for take_events.
  std::function<void(const struct PmixEvent&)> sink;
  // Whether the launcher serves MPI_Comm_spawn (a helper has no launcher
  // loop to start ranks).
  bool can_spawn = true;
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
  // Lost: the shared server went away (pmix_remote.cc); the job's Open MPI
  // ranks have no server any more.
  enum class Kind { Connected, Finalized, Abort, Spawn, Lost };
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
  void prepare_rank(int rank, Environment& env) { prepare_world_rank(0, rank, env); }
  void prepare_world_rank(int world, int rank, Environment& env);
  // What setup_fork gave rank r of world w (its registration done).
  virtual std::vector<std::pair<std::string, std::string>> rank_variables(int world, int rank) const = 0;
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

  // The shared server (pmix_service.cc), `jiffy-pmix --jiffy-pmix-serve`,
  // started detached by the first launcher that needs it. Returns the exit
  // code.
  static int serve_main(const std::vector<std::string>& args);
  // The lean launcher: connects to the shared server of this resource set,
  // starting it if none runs, for the next start(). False when it cannot
  // be used (the launcher then continues in jiffy-pmix): none can be
  // started, or the user set PMIX_MCA_* variables, which configure a
  // server of their own. jiffy-pmix: always false.
  static bool open_shared();
};

// libpmix's server, initialised for the life of the shared server's process
// (the first job of a launcher's own server initialises it with the job's
// directory instead). jiffy-pmix only.
class PmixLibrary {
 public:
  PmixLibrary(const std::string& dir, const std::string& topology_xml);
  ~PmixLibrary();
  PmixLibrary(const PmixLibrary&) = delete;
  PmixLibrary& operator=(const PmixLibrary&) = delete;
};

// One event as the helper writes it ("c 3", "f 3", "a 3 7 message").
std::string format_pmix_event(const PmixEvent& e);
// Parses one such line; false when it is not one.
bool parse_pmix_event(const std::string& line, PmixEvent* e);

}  // namespace jiffy
