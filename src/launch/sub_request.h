// SubRequest: more cores for a running job, for the ranks an MPI_Comm_spawn
// starts. A second connection to the daemon, from the same launcher, with
// a `submit` that names the job as its `parent` (docs/protocol.md,
// "Spawned ranks"): queued in order like any request, granted cores no
// other job holds, refused at once when the job could never have them
// beside what it holds already (its ranks wait in MPI_Comm_spawn holding
// their cores: waiting would be a deadlock). `finished` gives them back.
// The connection lives in the job's poll loop (Job::wait). If the daemon
// dies while the spawned ranks run, their cores are re-attached to its
// successor, as DaemonLink does for the job's own, so that they come back
// when the spawned world ends rather than when the launcher exits.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "launch/client.h"
#include "launch/job.h"
#include "proto/message.h"

namespace jiffy {

// The daemon's `grant`, parsed (throws Error when malformed).
JobGrant parse_grant(const proto::Json& msg, int ntasks);

class SubRequest {
 public:
  struct Ask {
    unsigned long long parent = 0;
    // The spawn whose ranks ask (0: the job's own): its cores, and those of
    // the worlds that spawned it, stay held while this one waits.
    unsigned long long asker = 0;
    int ntasks = 1;
    int cores_per_task = 1;
    int gpus_per_task = 0;
    std::string bind;  // as in submit
    std::string command;
    std::string cwd;
  };
  // Connects and sends the request. Throws Error.
  static std::unique_ptr<SubRequest> send(const DaemonPaths& paths, const Ask& ask);

  enum class State { Waiting, Granted, Refused };
  // The connection to poll (-1 once closed).
  int fd() const { return client_ ? client_->fd() : -1; }
  // Reads what the daemon said. Granted: grant() holds it; Refused: why().
  State on_ready();
  State state() const { return state_; }
  const JobGrant& grant() const { return grant_; }
  const std::string& why() const { return why_; }
  // The spawned ranks are gone: their cores go back.
  void finished(int code);
  // The family a granted spawn belongs to (the job's process group and
  // tag): what a re-attach names, should the daemon die while it runs.
  void set_family(int pgid, std::string tag) {
    pgid_ = pgid;
    tag_ = std::move(tag);
  }

 private:
  SubRequest(DaemonPaths paths, DaemonClient client, const Ask& ask)
      : paths_(std::move(paths)), client_(std::move(client)), ask_(ask) {}
  void reattach();
  DaemonPaths paths_;
  std::optional<DaemonClient> client_;
  Ask ask_;
  int pgid_ = 0;
  std::string tag_;
  State state_ = State::Waiting;
  JobGrant grant_;
  std::string why_;
};

}  // namespace jiffy
