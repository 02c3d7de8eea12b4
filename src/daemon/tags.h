// TagRegistry: which job the daemon knows owns which tag (JIFFY_JOB_TAG).
//
// The daemon kills every process carrying a lost job's tag, so a tag must
// belong to exactly one job: a message naming a tag another known job
// holds (running, lost, detached) is refused, and a tag is killed for a
// job only when no other job holds it. Jobs on lane slots that have not
// connected are not here: their tags are in the lane file's records, which
// the Server checks beside this. Pure bookkeeping, no I/O.
#pragma once

#include <cstddef>
#include <string>
#include <unordered_map>

#include "sched/request.h"

namespace jiffy {

class TagRegistry {
 public:
  // The job holding tag; 0 when none (or tag is empty: no tag).
  JobId owner(const std::string& tag) const;
  // Records tag as job's; no-op for an empty tag or one job already holds.
  // Throws Error, changing nothing, when another job holds it.
  void claim(const std::string& tag, JobId job);
  // Forgets tag when job holds it (a job's end; a stale call is harmless).
  void release(const std::string& tag, JobId job);
  std::size_t size() const { return owner_.size(); }

 private:
  std::unordered_map<std::string, JobId> owner_;
};

}  // namespace jiffy
