// The daemon's ledger on disk, so that a daemon that crashes (SIGKILL, OOM)
// never lets its successor double-book.
//
// Before the daemon sends a grant it rewrites <key>.state with every job
// holding resources: job id, the launcher's (pid, start time), the ranks'
// process group and the exact slots and GPUs. A new daemon reads it, adopts
// the grants whose launchers still live (they re-attach over the socket) and
// kills and waits out the process groups of those that died, before it
// grants anything. The file lives in the private runtime directory; only a
// daemon crash is guarded against (no fsync: a machine crash kills the jobs
// too). A failed write (disk full) is logged and serving goes on: launchers
// re-attaching still restore the ledger.
//
// encode_state/decode_state are pure; decode_state validates everything
// (the file is input like any other).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "sched/request.h"
#include "util/fd.h"
#include "util/process.h"

namespace jiffy {

struct StoredJob {
  Grant grant;                      // id, slots, GPUs, exclusive
  int pid = 0;                      // the launcher
  unsigned long long pid_start = 0; // its start time (ticks since boot)
  JobGroup group;                   // the ranks' processes, pgid 0 before "started"
  int ntasks = 0;
  std::string command;
  std::string jobdir;  // the launcher's per-job directory, removed once the job is lost
  // A spawn's cores (daemon/families.h): the job whose launcher asked, 0
  // for a launch. Such a job shares its parent's group and owns no tag.
  JobId parent = 0;
};

struct StoredState {
  JobId next_job = 1;
  std::vector<StoredJob> jobs;
};

std::string encode_state(const StoredState& s);
// Throws Error on anything malformed.
StoredState decode_state(std::string_view text);

class StateFile {
 public:
  explicit StateFile(std::string path);
  // The stored state; an empty one when the file is missing or unreadable
  // (a warning goes to stderr when it is corrupt, or not a regular file of
  // ours with mode 0600: such a file is never read, whatever it says).
  StoredState load();
  // Replaces the stored state. Returns false (and logs once) on failure.
  bool save(const StoredState& s);
  const std::string& path() const { return path_; }
  // Forgets the open file, so the next save() creates it anew (after the
  // runtime directory was removed under us).
  void reopen() { fd_.reset(); }

 private:
  bool open_checked(Fd& fd, int flags, const char* what);
  void refused(const char* what, const char* why);

  std::string path_;
  Fd fd_;
  bool refused_warned_ = false;  // one warning for a file not ours
  std::string last_;  // what the open file holds
  bool warned_ = false;
};

}  // namespace jiffy
