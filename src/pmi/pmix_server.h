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
  std::vector<int> appnum;    // per rank
  std::vector<int> app_rank;  // rank within its app, per rank
  int napps = 1;
  std::string dir;  // the job's private directory (PMIx and Open MPI session files)
  uid_t uid = 0;
  gid_t gid = 0;
  // hwloc XML of the machine, when the daemon has written it: libpmix loads
  // it instead of discovering the machine, and hands it to the ranks (as
  // mpirun does), so no rank rediscovers it either. Empty: they discover.
  std::string topology_xml;
};

struct PmixEvent {
  enum class Kind { Connected, Finalized, Abort };
  Kind kind;
  int rank = -1;
  int status = 0;       // Abort: the code the rank passed
  std::string message;  // Abort: its message
};

class PmixServer {
 public:
  // Whether this executable can host PMIx.
  static bool available();
  // Initialises libpmix for this process and registers the job. Throws Error.
  static std::unique_ptr<PmixServer> start(const PmixJob& job);

  virtual ~PmixServer() = default;
  // Registers rank r as a client and adds what it needs to its environment
  // (PMIX_* from setup_fork). Call before forking it.
  virtual void prepare_rank(int rank, Environment& env) = 0;
  // Readable when events are waiting.
  virtual int event_fd() const = 0;
  virtual std::vector<PmixEvent> take_events() = 0;
};

}  // namespace jiffy
