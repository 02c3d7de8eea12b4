// Launches forwarded to Slurm (launch/slurm_step.h): they hold nothing
// here, so they never reach the scheduler, but `jiffy status` lists them
// with their step and the daemon cancels a step whose launcher vanished
// without saying "finished" (SIGKILL: its srun died with it, and the step
// would otherwise run until Slurm noticed). docs/protocol.md, "Forwarded
// launches".
//
// The table is pure (messages in, rows and cancellations out); the server
// runs the cancellation (scancel).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "proto/message.h"

namespace jiffy {

class Forwarded {
 public:
  struct Launch {
    std::uint64_t job = 0;  // an id from the daemon's counter, as jobs get
    int pid = 0;
    int ntasks = 0;
    std::string backend, command, cwd, label, tag;
    std::string step;  // "JOBID.STEPID" once known
    std::string nodes;  // the step's nodes (a Slurm hostlist) once known
    std::string slurm_conf;  // the launcher's SLURM_CONF, for scancel ("" default)
    std::string step_name;   // srun -J: finds the step when its id never came
    bool own_job = false;    // srun made the job (no allocation around it): cancel all of it
    double since = 0;  // steady clock, seconds
    bool finished = false;
  };

  // A "forward" message on connection `client`. Throws Error for a bad
  // field (the server drops the client).
  void add(int client, std::uint64_t job, const proto::Json& msg, double now);
  bool has(int client) const { return launches_.count(client) != 0; }
  // "step" and "finished" from a forwarded launch's connection.
  void on_message(int client, const proto::Json& msg);
  // The connection closed: forgets the launch. Returns the scancel command
  // line for its step, if it was told one and never said finished (empty
  // otherwise): run with the launcher's SLURM_CONF, which a daemon started
  // by another launch may lack.
  std::vector<std::string> gone(int client);
  // Rows for the status reply's "forwarded" list.
  proto::Json status(double now) const;
  std::size_t size() const { return launches_.size(); }

 private:
  std::map<int, Launch> launches_;  // by connection
};

// Whether text is a step name the launcher gives (jiffy-<hex>): what the
// cancellation by name puts on a command line must be nothing else.
bool is_step_name(const std::string& text);

// Whether text is a Slurm step id: JOBID.STEPID (digits, with an optional
// "+N" heterogeneous offset in the job part). What scancel is given must be
// nothing else.
bool is_slurm_step_id(const std::string& text);

}  // namespace jiffy
