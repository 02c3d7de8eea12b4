// The slurm backend's tie to the daemon: a launch forwarded to Slurm holds
// no cores here, but the daemon lists it (`jiffy status`: its step and
// nodes) and, when its launcher vanishes (SIGKILL), cancels its step
// (docs/protocol.md, "Forwarded launches"). Best effort: a daemon that
// cannot be reached costs the launch nothing but that.
#pragma once

#include <string>

#include "launch/client.h"

namespace jiffy {

// scancel of a step ("JOBID.STEPID"), not waited for. Never throws (a
// failure is said on stderr and left to srun's own end to show).
void run_scancel(const std::string& step);
// scancel --signal: sig to every rank of the step, which goes on.
void signal_step(const std::string& step, int sig);

class SlurmLink {
 public:
  // Says "forward" to the daemon of this machine (starting it if needed).
  // step_name: the step's unique name (srun -J), by which the daemon finds
  // it when it was never told its id.
  SlurmLink(const std::string& command, const std::string& cwd, const std::string& label, int ntasks,
            const std::string& tag, const std::string& step_name);
  // squeue found the step: its id and nodes.
  void step_started(const std::string& step, const std::string& nodes);
  // The daemon's connection (-1 when there is none): poll it, then call
  // on_readable, which reads what came (nothing is expected) or notices
  // the hang-up (a daemon restart forgets the launch; status loses it).
  int fd() const { return client_ ? client_->fd() : -1; }
  void on_readable();
  void finished(int exit_code);

 private:
  void send(const proto::Json& msg);
  std::optional<DaemonClient> client_;
};

}  // namespace jiffy
