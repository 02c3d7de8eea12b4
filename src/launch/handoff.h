// Handoff: what the front (src/front, the `jiffy` users run) passes to
// jiffy-launch when it stops handling a launch itself: jiffy-launch's first
// argument is "--jiffy-handoff", and STATE is the value of the environment
// variable JIFFY_HANDOFF (kHandoffVar), never an argument: a process's
// arguments are world-readable (ps, /proc/PID/cmdline) and STATE holds the
// job's tag, which names its PMIx namespace, the credential of its PMIx
// server (launch/bootstrap.h, pmix_namespace). (A front older than this
// launcher, met mid-upgrade, passed it as the next argument: still read.)
// Its forms:
//
//   v=1 ticket=N [submit=NS]
//       start from scratch, but our request had job id N in the queue of a
//       daemon that has since gone (resubmit for that place); NS: when the
//       front started (its history record's submit time);
//   v=1 daemon=FD cpus=LIST tag=HEX pgid=P ranks=PID:FD:DONE,... grant=JSON
//       a job is running: the ranks are our children (same process, the
//       front exec'd us), FD is the open daemon connection, each rank's
//       PMI-1 channel is open on its FD (-1: it hung up), DONE=1 for a rank
//       that exited 0 (reaped, except rank 0), LIST the caller's allowed
//       CPUs (which name its daemon: we now run pinned to rank 0's), JSON
//       the daemon's grant verbatim (it runs to the end of the argument).
//       Before grant=, "pmix=FD": the job's PMIx rendezvous socket
//       (launch/bootstrap.h), listening on FD; "submit=NS start=NS": when
//       the front started and when it spawned the ranks (CLOCK_REALTIME,
//       nanoseconds: the job's history record keeps them); "lane=1": the
//       slots came from the lane (proto/lane.h), and "lanefd=FD" holds
//       their locks (let go before "finished"); "deadline=NS": the job's
//       timeout (-timeout / MPIEXEC_TIMEOUT) runs out at NS (CLOCK_MONOTONIC,
//       nanoseconds; counted from the ranks' start, as Job::wait counts it),
//       possibly already past (the front hands over when it comes, for
//       jiffy-launch to time the job out). A state without these (an older
//       front) is still read: the times and the timeout are then
//       jiffy-launch's own.
//
// Pure parsing; the fds are not checked here.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace jiffy {

struct Handoff {
  unsigned long long ticket = 0;

  struct Rank {
    pid_t pid = -1;
    int pmi_fd = -1;
    bool done = false;
  };
  bool running = false;  // the second form
  int daemon_fd = -1;
  std::vector<int> cpus;
  std::string tag;
  pid_t pgid = 0;
  std::vector<Rank> ranks;
  int pmix_fd = -1;  // the PMIx rendezvous, when the job has one
  std::int64_t submit_ns = 0;  // the front's start, 0: not said
  std::int64_t start_ns = 0;   // the ranks' spawn, 0: not said
  bool lane = false;           // the slots are lent ones
  int lane_fd = -1;            // the lane file, holding their locks (lanefd=), -1: not said
  std::int64_t deadline_ns = 0;  // CLOCK_MONOTONIC: the timeout runs out, 0: none said
  std::string grant;
};

// Throws Error on anything malformed.
Handoff parse_handoff(const std::string& state);

inline constexpr const char* kHandoffVar = "JIFFY_HANDOFF";
// The state the front left in our environment, removed from it (no child
// may inherit it); nullopt when there is none.
std::optional<std::string> take_handoff_state();

}  // namespace jiffy
