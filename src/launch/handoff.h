// Handoff: what the front (src/front, the `jiffy` users run) passes to
// jiffy-launch when it stops handling a launch itself, as one argument after
// "--jiffy-handoff":
//
//   v=1 ticket=N
//       start from scratch, but our request had job id N in the queue of a
//       daemon that has since gone (resubmit for that place);
//   v=1 daemon=FD cpus=LIST tag=HEX pgid=P ranks=PID:FD:DONE,... grant=JSON
//       a job is running: the ranks are our children (same process, the
//       front exec'd us), FD is the open daemon connection, each rank's
//       PMI-1 channel is open on its FD (-1: it hung up), DONE=1 for a rank
//       that exited 0 (reaped, except rank 0), LIST the caller's allowed
//       CPUs (which name its daemon: we now run pinned to rank 0's), JSON
//       the daemon's grant verbatim (it runs to the end of the argument).
//       Before grant=, "pmix=FD": the job's PMIx rendezvous socket
//       (launch/bootstrap.h), listening on FD.
//
// Pure parsing; the fds are not checked here.
#pragma once

#include <sys/types.h>

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
  std::string grant;
};

// Throws Error on anything malformed.
Handoff parse_handoff(const std::string& state);

}  // namespace jiffy
