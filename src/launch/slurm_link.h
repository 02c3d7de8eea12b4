// The slurm backend's tie to the daemon: a launch forwarded to Slurm holds
// no cores here, but the daemon lists it (`jiffy status`, `jiffy top`: its
// step and nodes) and, when its launcher vanishes (SIGKILL), cancels its
// step (docs/protocol.md, "Forwarded launches"). A daemon that restarts
// while the step runs is told again (its successor, started if need be),
// as a local job re-attaches. Best effort: a daemon that cannot be reached
// costs the launch nothing but that.
#pragma once

#include <optional>
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
  // the hang-up of a daemon that died or stopped.
  int fd() const { return client_ ? client_->fd() : -1; }
  void on_readable(double now);
  // After a hang-up: when to tell the daemon (a successor) again, 0 when
  // nothing is to be done. The caller's loop wakes then and calls retry.
  double retry_at() const { return retry_at_; }
  void retry(double now);
  void finished(int exit_code);

 private:
  // Connects and says "forward" (and the step, once known). Returns why no
  // daemon could be reached or told, "" when one was.
  std::string announce();
  void lost(double now);
  void back_off(double now);  // the next retry, each pause twice the last
  void send(const proto::Json& msg);

  proto::Json forward_;
  std::string step_, nodes_;
  std::optional<DaemonClient> client_;
  double retry_at_ = 0;  // steady clock, seconds; 0: not retrying
  double give_up_ = 0;
  double pause_s_ = 0;
  double told_at_ = 0;  // when a daemon was last told "forward"
};

}  // namespace jiffy
