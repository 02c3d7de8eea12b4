// LaunchHistory: jiffy-launch's one record of a launch in the history journal
// (proto/history.h, docs/history.md). The launcher tells it what it learns
// as the launch goes (the tag, the grant, the ranks' start, how the job
// ended, or why it was refused), and run_launch() appends the record once,
// whichever way the launch ends. The front writes its own records
// (src/front/history.c) for the launches it runs to the end.
//
// Writing never fails the launch and never waits for anything but the page
// cache: errors are ignored, JIFFY_HISTORY=0 writes nothing.
//
// Not thread-safe (the launcher is one thread).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "history/row.h"
#include "launch/handoff.h"
#include "launch/job.h"
#include "launch/options.h"
#include "util/sys.h"

namespace jiffy {

// The label of a launch (docs/history.md): label_env (JIFFY_LABEL) when set
// and not empty, else the base name of cwd when it starts with "run"
// (PETSc's test harness runs each test in a directory named after it),
// else "".
std::string history_label(const char* label_env, const std::string& cwd);

// "0-1;2-3": the cores of each rank (ranges within a rank, ';' between).
std::string rank_core_lists(const JobGrant& grant);
// "GPU-a,GPU-b;GPU-c": the GPU names of each rank.
std::string rank_gpu_lists(const JobGrant& grant);

class LaunchHistory {
 public:
  // command: as `jiffy status` shows it; submit_ns: when the launcher
  // started. Reads the label and the working directory now.
  LaunchHistory(const LaunchOptions& opt, std::string command, std::int64_t submit_ns);

  // The journal of this launch's daemon (DaemonPaths::history). Without
  // it, write() finds it from the process's resource set.
  void set_journal(std::string path) { journal_ = std::move(path); }
  void set_tag(const std::string& tag) { row_.tag = tag; }
  // A job the front handed over: its times, tag and lane.
  void handed_over(const Handoff& h);
  void granted(const JobGrant& grant);
  void started() { row_.start_ns = realtime_ns(); }
  // The launch ran as this Slurm step (launch/slurm_step.h); nodes may be "".
  void slurm_step(const std::string& step, const std::string& nodes);
  // The ranks could not be executed (no ranks ran): refused.
  void not_started(std::string reason);
  void ended(const Job::Ending& e);
  // The daemon refused the request, or the launch failed before it ran.
  void refused(std::string reason);
  // A signal (SIGINT...) ended the launch while it waited in the queue.
  void interrupted(int signo);
  // An Error ended the launch (before or while its ranks ran).
  void failed(const std::string& why);

  const std::string& cwd() const { return row_.cwd; }
  const std::string& label() const { return row_.label; }

  // The record as it stands, ended with exit_code now.
  history::Row row(int exit_code) const;
  // Appends it to the journal. Errors are ignored; JIFFY_HISTORY=0 in the
  // environment: nothing is written. REQUIRES: called once per launch.
  void write(int exit_code);

 private:
  history::Row row_;
  std::string journal_;
  bool outcome_set_ = false;
};

// Appends one record to the journal at path (open O_APPEND, flock shared,
// one write, close). Returns false on any failure (callers ignore it).
bool append_history_record(const std::string& path, const history::Row& row);

}  // namespace jiffy
