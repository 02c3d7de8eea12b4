// Scheduler: the queue and the ledger of who holds which slot and GPU.
//
// Pure logic, no I/O, no clock: events in (submit, cancel, release), grants
// out (schedule). The daemon calls schedule() after every event and sends the
// grants it returns. Tests drive it event by event and simulate it at scale.
//
// Policy:
//  - FIFO by arrival (JobId order). A request that fits in free resources may
//    start ahead of a blocked one (backfill), but the head of the queue holds a
//    reservation: as slots and GPUs free up they are kept for it, and a later
//    request may only use what is left beyond the head's needs. So a wide job
//    is never starved by a stream of narrow ones.
//  - Backfill into the reservation (policy.backfill): the head's shadow time
//    is when, by the running jobs' predicted ends, enough is free for it;
//    its deadline, fixed the first time a pass times it, is that shadow plus
//    backfill_slack times the wait until then. A later request with a
//    prediction may also take reserved resources when now +
//    backfill_safety x its prediction <= max(shadow, deadline). Unknown when
//    a job the head must wait for has no prediction: then nothing is
//    backfilled into the reservation. The head's wait stays bounded: see
//    scheduler.cc.
//  - Placement is compact: whole free cores before partly used ones, the
//    smallest contiguous run that fits, one NUMA domain first; GPU jobs prefer
//    cores in their GPU's NUMA domain.
//  - A request with a gpu_choice gets exactly those GPUs, once all of them
//    are free; while it heads the queue, no later request takes them.
//  - A request wider than the set (slots() > total_slots()) waits until the
//    set is entirely free and is then granted all of it (Grant::exclusive);
//    nothing else starts while it runs. Beyond policy.max_oversubscribe times
//    the set, or with allow_oversubscribe false, it is refused at submit.
//
// Thread-compatible (no internal locking).
#pragma once

#include <cstddef>
#include <deque>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/resources.h"
#include "sched/request.h"

namespace jiffy {

// The largest SchedPolicy::backfill_slack: a head may then wait 11x its
// predicted wait, which is already more than a queue should promise.
inline constexpr double kMaxBackfillSlack = 10;

struct SchedPolicy {
  int max_oversubscribe = 8;  // a request may ask for at most this many times the set's slots
  // Whether a request with a predicted run time may start on resources the
  // blocked head is waiting for (jiffy daemon --backfill=off turns it off).
  bool backfill = true;
  // It may when now + backfill_safety * predicted_s <= the head's shadow
  // time. 1: exact predictions end before the head could start, and ones
  // short by up to 2x delay it by at most its predicted wait once more
  // (scheduler.cc); 2 would never delay it, but on a PETSc-like suite left
  // a core idle 60% longer (bench/suite_bench.py: wall 1.07x of 1's).
  double backfill_safety = 1;
  // How much later than its shadow time backfill may make the head start,
  // in multiples of its predicted wait (jiffy daemon --backfill-slack): a
  // backfilled job may be predicted to end by the head's deadline, its
  // first shadow S0 seen at t0 plus slack x (S0 - t0), which never moves.
  // 0 is EASY backfill (nothing may end after the shadow). Why more: on a
  // 2-core machine a narrow job rarely fits the few milliseconds a wide head
  // waits, and the core idles instead (scheduler.cc, docs/scheduling.md).
  double backfill_slack = 1;
};

class Scheduler {
 public:
  Scheduler(ResourceSet set, SchedPolicy policy);

  // Queues r. Throws Error with a one-line reason when r can never be
  // granted: a count < 1 (ntasks, cores_per_task) or < 0 (GPUs), more GPUs
  // than exist, wider than the set with allow_oversubscribe false, beyond the
  // oversubscription limit, or a duplicate/zero id. The queue is unchanged then.
  void submit(const Request& r);
  // Like submit, but queues r at its place by id among the queued requests
  // instead of last: for a launcher asking again, with its old id, after
  // the daemon that had queued it died.
  void submit_in_order(const Request& r);
  // Removes a queued request; no-op when r is not queued.
  void cancel(JobId id);
  // Returns a granted request's slots and GPUs; no-op when id holds nothing.
  void release(JobId id);
  // Grants every queued request that may start now, in policy order. now
  // is the caller's clock in seconds (the daemon's monotonic clock); it
  // must not go back between calls. Grants are recorded as started at now.
  std::vector<Grant> schedule(double now = 0);
  // Tells the scheduler when a running job (an adopted one: a lane slot's
  // stand-in) started and how long it is predicted to run (< 0: unknown).
  // No-op when id holds nothing.
  void predict(JobId id, double start, double predicted_s);
  // Records a grant made before (by a daemon that crashed; its launcher
  // re-attached or is still alive) as running. Throws Error, changing
  // nothing, when g names an unknown or already held slot or GPU, holds one
  // twice, or its id is in use: adopting it would double-book.
  void adopt(const Grant& g);

  // The deadline backfill keeps to for the queued head id (schedule's
  // clock: its latest start, predictions right); -1 when id is not that
  // head or no pass has timed it yet.
  double deadline_of(JobId id) const;
  // 0-based position of a queued request, -1 when it is not queued.
  int position(JobId id) const;
  // The queued requests' ids by position (all positions in one O(n) pass).
  std::vector<JobId> queue_order() const;
  std::size_t queued() const;
  std::size_t running() const;
  const ResourceSet& resources() const;
  // The job holding a slot or GPU, 0 when free.
  JobId slot_holder(SlotRef s) const;
  JobId gpu_holder(int gpu) const;
  int free_slots() const;
  int free_gpus() const;

 private:
  struct Run;  // a stretch of neighbouring wholly free cores in one NUMA domain
  struct Running {
    Grant grant;
    double start = 0;
    double predicted_s = -1;  // < 0: unknown
  };

  void validate(const Request& r) const;
  bool wider_than_set(const Request& r) const { return r.slots() > total_slots_; }
  bool fits_now(const Request& r) const;
  bool chosen_gpus_free(const Request& r) const;
  int chosen_gpus_free_count(const Request& r) const;
  double shadow_time(const Request& head, double now) const;
  double backfill_limit(const Request& head, double shadow, double now);
  std::pair<int, int> reserve_for(const Request& head);
  Grant place(const Request& r) const;
  std::vector<int> pick_gpus(int n, int slots) const;
  int gpu_domain(const std::vector<int>& gpus) const;
  std::vector<SlotRef> pick_slots(int n, int domain) const;
  std::vector<Run> whole_runs() const;
  std::vector<int> whole_capacity_by_domain() const;
  void occupy(const Grant& g, double start = 0, double predicted_s = -1);

  ResourceSet set_;
  SchedPolicy policy_;
  int total_slots_ = 0;
  int domains_ = 0;               // distinct NUMA domains of the cores
  std::vector<int> core_domain_;  // [core] dense domain index
  std::vector<int> gpu_domain_;   // [gpu] dense domain index, -1 when no core shares its NUMA node

  std::deque<Request> queue_;     // arrival order
  bool queue_ids_sorted_ = true;  // ids increase along queue_, so position() may bisect
  std::unordered_set<JobId> queued_ids_;
  std::unordered_map<JobId, Running> running_;

  // The ledger. Free counts are kept beside the owners so that the queue scan
  // in schedule() costs O(1) per request.
  std::vector<std::vector<JobId>> slot_owner_;  // [core][slot], 0 = free
  std::vector<int> core_free_;                  // [core] free slots
  std::vector<JobId> gpu_owner_;                // [gpu], 0 = free
  // [gpu] kept for the blocked head of the queue during a schedule() pass
  // (its gpu_choice): pick_gpus passes them over.
  std::vector<bool> gpu_kept_;
  int kept_free_gpus_ = 0;  // how many of them are free
  int free_slots_ = 0;
  int free_gpus_ = 0;
  bool exclusive_running_ = false;
  // The blocked head's deadline (backfill_slack), set the first time a pass
  // times it; deadline_for_ is its id (0: none yet).
  JobId deadline_for_ = 0;
  double deadline_ = 0;
};

}  // namespace jiffy
