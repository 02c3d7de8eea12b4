// RunTimes: how long a command ran before, to predict how long it runs now
// (Request::predicted_s, which times backfill: sched/scheduler.h).
//
// Keyed by (working directory, command summary, ranks): the history's row
// fields (docs/history.md), which are the very strings a submit or a lane
// message carries, so a launch finds its own earlier runs. Only runs that
// exited 0 count: a failure's run time says little about a success's (a
// test that crashes at once, a build that stops early).
//
// Per key the last kKept run times are kept and the prediction is their
// maximum. Why the maximum: a prediction that is too short is what delays
// the head of the queue (a backfilled job outlives the head's shadow time),
// one that is too long only misses a chance to backfill; a test suite's
// same test runs about as long each time, and its slow runs (a cold cache,
// a busy machine) are the ones to plan for. The scheduler's bound on the
// head's wait covers the rest (scheduler.cc).
//
// At most max_keys keys, the least recently run forgotten first. Memory:
// about 100 bytes plus the key's strings per key.
//
// Pure: no I/O, no clock. Owned by the daemon's event loop, which feeds it
// what the history thread hands over (HistoryService::take_run_times):
// once the database's recent successes, then every ingested batch.
// Thread-compatible.
#pragma once

#include <array>
#include <cstddef>
#include <list>
#include <optional>
#include <string>
#include <unordered_map>

#include "history/row.h"

namespace jiffy {

struct RunTime {
  std::string cwd;
  std::string command;
  int ntasks = 0;
  double seconds = 0;
};

// The run time a history row teaches: none unless it ran and exited 0.
std::optional<RunTime> run_time_of(const history::Row& row);

class RunTimes {
 public:
  static constexpr std::size_t kKept = 8;

  explicit RunTimes(std::size_t max_keys = 100000) : max_keys_(max_keys) {}

  void add(const RunTime& run);
  // The predicted run time in seconds; -1 (unknown) when the key never ran
  // successfully or is forgotten.
  double predict(const std::string& cwd, const std::string& command, int ntasks) const;
  std::size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::array<float, kKept> seconds{};  // a ring: the last `count` runs
    std::size_t count = 0;
    std::size_t next = 0;
    std::list<std::string>::iterator lru;
  };
  static std::string key(const std::string& cwd, const std::string& command, int ntasks);

  std::size_t max_keys_;
  std::unordered_map<std::string, Entry> entries_;
  std::list<std::string> lru_;  // keys, the most recently run first
};

}  // namespace jiffy
