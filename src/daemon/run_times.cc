#include "daemon/run_times.h"

#include <algorithm>

namespace jiffy {

std::optional<RunTime> run_time_of(const history::Row& row) {
  if (row.outcome != JIFFY_OUTCOME_EXITED || row.exit_code != 0) return std::nullopt;
  if (row.start_ns <= 0 || row.end_ns <= row.start_ns || row.ntasks < 1) return std::nullopt;
  return RunTime{row.cwd, row.command, row.ntasks, static_cast<double>(row.end_ns - row.start_ns) / 1e9};
}

// NUL cannot occur in either string (both come through JSON or a C string).
std::string RunTimes::key(const std::string& cwd, const std::string& command, int ntasks) {
  std::string k;
  k.reserve(cwd.size() + command.size() + 12);
  k.append(cwd).push_back('\0');
  k.append(command).push_back('\0');
  k.append(std::to_string(ntasks));
  return k;
}

void RunTimes::add(const RunTime& run) {
  if (max_keys_ == 0 || !(run.seconds >= 0)) return;
  std::string k = key(run.cwd, run.command, run.ntasks);
  auto it = entries_.find(k);
  if (it == entries_.end()) {
    if (entries_.size() >= max_keys_) {
      entries_.erase(lru_.back());
      lru_.pop_back();
    }
    lru_.push_front(k);
    it = entries_.emplace(std::move(k), Entry{}).first;
    it->second.lru = lru_.begin();
  } else {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
  }
  Entry& e = it->second;
  e.seconds[e.next] = static_cast<float>(run.seconds);
  e.next = (e.next + 1) % kKept;
  e.count = std::min(e.count + 1, kKept);
}

double RunTimes::predict(const std::string& cwd, const std::string& command, int ntasks) const {
  auto it = entries_.find(key(cwd, command, ntasks));
  if (it == entries_.end()) return -1;
  const Entry& e = it->second;
  return *std::max_element(e.seconds.begin(), e.seconds.begin() + static_cast<std::ptrdiff_t>(e.count));
}

}  // namespace jiffy
