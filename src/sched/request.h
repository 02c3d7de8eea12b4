// What a job asks for and what it is granted: the scheduler's vocabulary.
#pragma once

#include <cstdint>
#include <vector>

namespace jiffy {

using JobId = std::uint64_t;  // assigned by the daemon, increasing with arrival; 0 = none

// The one range of job ids, wherever an id comes from (the daemon's
// counter, a message, the state file, the lane file): [1, kMaxJobId]. Far
// below 2^53, so that JSON carries every id exactly, and far below the
// daemon's stand-in ids (Lane::lent_id), which no id from outside may reach.
constexpr JobId kMaxJobId = (JobId(1) << 50) - 1;
constexpr bool valid_job_id(JobId id) { return id >= 1 && id <= kMaxJobId; }

struct Request {
  JobId id = 0;
  int ntasks = 1;
  int cores_per_task = 1;
  int gpus_per_task = 0;
  int gpus_per_job = 0;  // shared by all ranks of the job
  // A job wider than the resource set waits for the whole set and runs alone
  // on it (mpiexec oversubscribes); false makes such a request an error.
  bool allow_oversubscribe = true;
  // Predicted run time in seconds, from earlier runs of the same command
  // (daemon/run_times.h); < 0 = unknown. Only backfill reads it: a request
  // without one never starts on resources the queue's head is waiting for.
  double predicted_s = -1;
  // The exact GPUs, when someone else chose them (CTest's resource
  // allocation: cli/ctest.h), as indices into ResourceSet::gpus in the
  // order a Grant lists them; gpus() of them. Empty: the scheduler picks.
  std::vector<int> gpu_choice;

  int slots() const { return ntasks * cores_per_task; }
  int gpus() const { return ntasks * gpus_per_task + gpus_per_job; }
};

// One slot of one core: core is an index into ResourceSet::cores, slot < Core::slots.
struct SlotRef {
  int core = 0;
  int slot = 0;
  friend bool operator==(const SlotRef&, const SlotRef&) = default;
};

struct Grant {
  JobId id = 0;
  // Normal grant: exactly Request::slots() slots, rank-major (rank r owns
  // slots[r*cores_per_task .. (r+1)*cores_per_task)). Exclusive grant: every
  // slot of the set.
  std::vector<SlotRef> slots;
  std::vector<int> gpus;  // indices into ResourceSet::gpus, per-task GPUs rank-major, then per-job
  bool exclusive = false;  // wider than the set: runs alone, ranks spread evenly
  // Started on resources the blocked head of the queue is waiting for,
  // because it was predicted to end before the head could start anyway.
  bool backfilled = false;
};

}  // namespace jiffy
