// Scheduler: a queue scan with a reservation for the head, and placement.
//
// schedule() walks the queue in arrival order and grants requests in turn
// while they fit. The first one that does not becomes the reserved head: a
// later request is granted only from what is left beyond the head's needs,
// counted separately for slots and for GPUs. Counts are enough because the
// head may take any free slot (placement falls back to fragments). While the
// head is blocked on slots nothing takes a slot, so what frees up accumulates
// for it; backfill can only use the other kind (CPU-only jobs beside a head
// that waits for a GPU, or slots beyond its width). Hence the head is granted
// at the latest once every job running when it became head has released.
//
// Only the head reserves. That already bounds every wait (a request becomes
// head after finitely many others, and then waits a bounded time), whereas
// stacking reservations for every blocked request would forbid almost all
// backfill, and would need every running job's end to be timed.
//
// A request wider than the set needs every slot, so at the head it reserves
// everything; it is granted when the set is idle and then nothing else is.
//
// Backfill into the reservation (EASY backfilling, with a safety factor s,
// policy.backfill_safety, 1 by default, and a slack k,
// policy.backfill_slack, 1 by default).
// Every grant records its start (schedule's now) and its request's
// predicted run time, so each running job has a predicted end, start +
// predicted_s, or "now" once it is overdue (it may end any moment), or none
// (no prediction; adopted grants until predict()). The head's shadow time S
// is the earliest predicted end by which enough is free for it (walking the
// running jobs by predicted end); unknown when that walk reaches a job
// without one. The first pass that times the head (at t1, shadow S1) fixes
// its deadline D = t1 + (1 + k) * (S1 - t1): it never moves, whatever runs
// after. A later request J that does not fit in what the head leaves over,
// but fits in what is free, starts when it has a prediction p and
// now + s * p <= L = max(S, D). The jobs that take what is beyond the head's
// needs (spare) are counted as before, so they never hold what the head
// needs.
//
// Why the slack. With k = 0 (EASY) only a job that ends before the head
// could start anyway may take the head's cores; on a 2-core machine under
// make -j a wide head waits a few milliseconds, a narrow test rarely fits,
// and the core idles. Letting the head start somewhat later fills it: the
// suite benchmark's packing bound (make -j4, exact run times) went from
// 1.08x to 1.06x the CPU floor with k = 1 (bench/suite_bench.py).
// A fixed deadline, not "k times the current shadow": a shadow pushed back
// by one backfilled job would admit the next, and so on without end.
//
// Why the head's wait stays bounded. Let H become head at t0, R0 be the
// jobs running then, and P the latest predicted end (start + p) among R0's
// jobs that have a prediction.
// Jobs started while H waits are spare ones (together at most what is
// beyond H's needs) or backfilled ones. Once every R0 job and every
// backfilled one has ended, H fits. So the shadow walk has found enough by
// the time it has passed every R0 and backfilled job. Before D is fixed
// nothing is backfilled, so S1 <= max(P, t1), and (t -> t + (1+k)(P - t)
// falls as t grows) D <= max(t1, t0 + (1 + k) * (P - t0)); if t1 > P, then
// D = t1 and every later shadow is "now" (all overdue), so nothing is ever
// backfilled. Otherwise every backfilled job's predicted end a + s*p <= L_a,
// and by induction every S and L is at most M = max(P, D) (an overdue job's
// "now" is below any L that admits one, as now + s*p > now). A backfilled J
// admitted at a >= t0, with its prediction short by at most a factor E
// (actual <= E * p), ends by
//   a + E*p <= a + (E/s) * (L_a - a) <= t0 + max(1, E/s) * (1 + k) * (P - t0).
// So H starts by
//   max(latest actual end of R0, t0 + max(1, E/s) * (1 + k) * (P - t0)):
// with s = 1, k = 1 and predictions right, by the later of its blockers'
// actual ends and twice its predicted wait; with predictions short by up to
// 2x, four times its predicted wait. s = 2, k = 0 would never delay it at
// all, but starts far fewer jobs: a narrow job must then fit twice into the
// gap. (backfill_simulation_test.cc checks this bound after every event,
// for (s, k) = (1, 0), (1, 1) and (2, 0).)
//
// Placement takes GPUs first (one NUMA domain if it can, the tightest fit),
// then slots near them, preferring in turn:
//   1. the smallest run of neighbouring wholly free cores, within one NUMA
//      domain, that holds the job (best fit keeps large runs for wide jobs);
//   2. several runs, from domains that hold the whole job before those that
//      do not, the largest runs first (fewest fragments);
//   3. every wholly free core, then free slots of partly used cores, the
//      emptiest first.
// "Wholly free" comes first so that a job shares a core with strangers (a
// hyperthread sibling, an oversubscribed slot) only when it must. The chosen
// slots are sorted by (core, slot): consecutive ranks sit on neighbouring
// cores, and a rank with several slots takes one core's threads together.
//
// A pass costs O(queue) integer checks plus one O(cores log cores) placement
// per grant; the scan stops as soon as no slot is left to give.
#include "sched/scheduler.h"

#include <set>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <numeric>
#include <string>
#include <tuple>
#include <utility>

#include "util/error.h"

namespace jiffy {

struct Scheduler::Run {
  int first = 0;  // core index
  int end = 0;    // one past the last core
  int domain = 0;
  int capacity = 0;  // slots
};

namespace {

std::string count(std::int64_t n, const std::string& noun) {
  return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}

std::string shape(const Request& r, std::int64_t slots) {
  return count(r.ntasks, "rank") + " x " + count(r.cores_per_task, "core") + " need " +
         count(slots, "slot");
}

// Removes the requests at the increasing indices `idx`. Only the survivors
// in front of the last index move, since grants cluster near the front.
void erase_indices(std::deque<Request>& q, const std::vector<std::size_t>& idx) {
  if (idx.empty()) return;
  std::size_t out = idx.back() + 1;
  std::size_t k = idx.size();
  for (std::size_t in = idx.back() + 1; in-- > 0;) {
    if (k > 0 && idx[k - 1] == in) {
      --k;
      continue;
    }
    q[--out] = q[in];
  }
  q.erase(q.begin(), q.begin() + static_cast<std::ptrdiff_t>(idx.size()));
}

}  // namespace

Scheduler::Scheduler(ResourceSet set, SchedPolicy policy) : set_(std::move(set)), policy_(policy) {
  if (policy_.max_oversubscribe < 1) throw Error("max_oversubscribe must be at least 1");
  // Below 1 even exact predictions would run past the shadow time.
  if (!(policy_.backfill_safety >= 1)) throw Error("backfill_safety must be at least 1");
  // Below 0 a backfilled job would have to end before the head's shadow,
  // which nothing can promise; beyond the limit the head's bound means little.
  if (!(policy_.backfill_slack >= 0 && policy_.backfill_slack <= kMaxBackfillSlack)) {
    throw Error("backfill_slack must be between 0 and " + std::to_string(static_cast<int>(kMaxBackfillSlack)));
  }
  std::map<int, int> domain_of_numa;
  for (std::size_t c = 0; c < set_.cores.size(); ++c) {
    const Core& core = set_.cores[c];
    if (core.slots < 1) {
      throw Error("core " + std::to_string(c) + " has " + count(core.slots, "slot") +
                  "; every core needs at least 1");
    }
    auto [it, added] = domain_of_numa.try_emplace(core.numa, domains_);
    if (added) ++domains_;
    core_domain_.push_back(it->second);
    slot_owner_.emplace_back(core.slots, 0);
    core_free_.push_back(core.slots);
    total_slots_ += core.slots;
  }
  for (const Gpu& gpu : set_.gpus) {
    auto it = domain_of_numa.find(gpu.numa);
    gpu_domain_.push_back(gpu.numa >= 0 && it != domain_of_numa.end() ? it->second : -1);
  }
  gpu_owner_.assign(set_.gpus.size(), 0);
  gpu_kept_.assign(set_.gpus.size(), false);
  free_slots_ = total_slots_;
  free_gpus_ = static_cast<int>(set_.gpus.size());
}

void Scheduler::validate(const Request& r) const {
  if (r.ntasks < 1) throw Error("ranks must be at least 1, not " + std::to_string(r.ntasks));
  if (r.cores_per_task < 1) {
    throw Error("cores per task must be at least 1, not " + std::to_string(r.cores_per_task));
  }
  if (r.gpus_per_task < 0 || r.gpus_per_job < 0) {
    throw Error("GPU counts must not be negative (" + std::to_string(r.gpus_per_task) +
                " per task, " + std::to_string(r.gpus_per_job) + " per job)");
  }
  // In 64 bits: the int products in Request may overflow before validation.
  const std::int64_t slots = std::int64_t{r.ntasks} * r.cores_per_task;
  const std::int64_t gpus = std::int64_t{r.ntasks} * r.gpus_per_task + r.gpus_per_job;
  if (gpus > static_cast<std::int64_t>(set_.gpus.size())) {
    throw Error("requested " + count(gpus, "GPU") + " but the resource set has " +
                std::to_string(set_.gpus.size()));
  }
  if (slots > total_slots_ && !r.allow_oversubscribe) {
    throw Error(shape(r, slots) + " but the resource set has " + std::to_string(total_slots_) +
                "; ask for fewer or allow oversubscription");
  }
  const std::int64_t limit = std::int64_t{policy_.max_oversubscribe} * total_slots_;
  if (slots > limit) {
    throw Error(shape(r, slots) + ", more than " + std::to_string(policy_.max_oversubscribe) +
                " times the resource set's " + std::to_string(total_slots_));
  }
  if (!r.gpu_choice.empty()) {
    if (static_cast<std::int64_t>(r.gpu_choice.size()) != gpus) {
      throw Error(count(static_cast<std::int64_t>(r.gpu_choice.size()), "GPU") + " chosen for a request of " +
                  count(gpus, "GPU"));
    }
    std::vector<bool> seen(set_.gpus.size(), false);
    for (int g : r.gpu_choice) {
      if (g < 0 || g >= static_cast<int>(set_.gpus.size())) throw Error("no GPU " + std::to_string(g));
      if (seen[g]) throw Error("GPU " + set_.gpus[g].name + " chosen twice");
      seen[g] = true;
    }
  }
  if (r.id == 0) throw Error("job id 0 is reserved for \"no job\"");
  if (queued_ids_.contains(r.id) || running_.contains(r.id)) {
    throw Error("job id " + std::to_string(r.id) + " is already queued or running");
  }
}

void Scheduler::submit(const Request& r) {
  validate(r);
  if (!queue_.empty() && r.id < queue_.back().id) queue_ids_sorted_ = false;
  queue_.push_back(r);
  queued_ids_.insert(r.id);
}

void Scheduler::submit_in_order(const Request& r) {
  validate(r);
  auto at = std::find_if(queue_.begin(), queue_.end(), [&](const Request& q) { return q.id > r.id; });
  queue_.insert(at, r);
  queued_ids_.insert(r.id);
  queue_ids_sorted_ = std::is_sorted(queue_.begin(), queue_.end(),
                                     [](const Request& a, const Request& b) { return a.id < b.id; });
}

void Scheduler::cancel(JobId id) {
  if (queued_ids_.erase(id) == 0) return;
  queue_.erase(
      std::find_if(queue_.begin(), queue_.end(), [id](const Request& r) { return r.id == id; }));
  if (queue_.empty()) queue_ids_sorted_ = true;
}

void Scheduler::release(JobId id) {
  auto it = running_.find(id);
  if (it == running_.end()) return;
  const Grant& g = it->second.grant;
  for (SlotRef s : g.slots) {
    slot_owner_[s.core][s.slot] = 0;
    ++core_free_[s.core];
  }
  for (int gpu : g.gpus) gpu_owner_[gpu] = 0;
  free_slots_ += static_cast<int>(g.slots.size());
  free_gpus_ += static_cast<int>(g.gpus.size());
  if (g.exclusive) exclusive_running_ = false;
  running_.erase(it);
}

bool Scheduler::chosen_gpus_free(const Request& r) const {
  return chosen_gpus_free_count(r) == static_cast<int>(r.gpu_choice.size());
}

int Scheduler::chosen_gpus_free_count(const Request& r) const {
  int n = 0;
  for (int g : r.gpu_choice) n += gpu_owner_[g] == 0 && !gpu_kept_[g];
  return n;
}

bool Scheduler::fits_now(const Request& r) const {
  if (r.gpus() > free_gpus_ - kept_free_gpus_) return false;
  if (!r.gpu_choice.empty() && !chosen_gpus_free(r)) return false;
  return wider_than_set(r) ? free_slots_ == total_slots_ : r.slots() <= free_slots_;
}

void Scheduler::predict(JobId id, double start, double predicted_s) {
  auto it = running_.find(id);
  if (it == running_.end()) return;
  it->second.start = start;
  it->second.predicted_s = predicted_s;
}

// The earliest time the running jobs' predicted ends free enough for head;
// +inf when that needs a job without a prediction.
double Scheduler::shadow_time(const Request& head, double now) const {
  constexpr double kNever = std::numeric_limits<double>::infinity();
  const int need_slots = wider_than_set(head) ? total_slots_ : head.slots();
  const int need_gpus = head.gpus();
  std::vector<std::pair<double, const Grant*>> ends;
  ends.reserve(running_.size());
  for (const auto& [id, run] : running_) {
    // Overdue: it may end any moment, so "now", never a time gone by.
    double end = run.predicted_s < 0 ? kNever : std::max(now, run.start + run.predicted_s);
    ends.emplace_back(end, &run.grant);
  }
  std::sort(ends.begin(), ends.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  // A head with chosen GPUs counts only those; any other head, any GPU.
  auto counted = [&](const std::vector<int>& held) {
    if (head.gpu_choice.empty()) return static_cast<int>(held.size());
    return static_cast<int>(std::count_if(held.begin(), held.end(), [&](int g) {
      return std::find(head.gpu_choice.begin(), head.gpu_choice.end(), g) != head.gpu_choice.end();
    }));
  };
  int slots = free_slots_;
  int gpus = free_gpus_;
  if (!head.gpu_choice.empty()) {  // (its GPUs are kept for it now: gpu_kept_)
    gpus = static_cast<int>(std::count_if(head.gpu_choice.begin(), head.gpu_choice.end(),
                                          [&](int g) { return gpu_owner_[g] == 0; }));
  }
  for (const auto& [end, g] : ends) {
    if (end == kNever) return kNever;
    slots += static_cast<int>(g->slots.size());
    gpus += counted(g->gpus);
    if (slots >= need_slots && gpus >= need_gpus) return end;
  }
  return kNever;
}

// The latest predicted end a backfilled job may have now: the head's shadow
// or its deadline, whichever is later; -inf when the shadow is unknown (then
// nothing is backfilled). The deadline is fixed the first time the head is
// timed and never moves after (see the bound at the top).
double Scheduler::backfill_limit(const Request& head, double shadow, double now) {
  if (shadow == std::numeric_limits<double>::infinity()) return -std::numeric_limits<double>::infinity();
  if (deadline_for_ != head.id) {
    deadline_for_ = head.id;
    deadline_ = now + (1 + policy_.backfill_slack) * (shadow - now);
  }
  return std::max(shadow, deadline_);
}

double Scheduler::deadline_of(JobId id) const {
  return id != 0 && id == deadline_for_ && queued_ids_.count(id) ? deadline_ : -1;
}

// What the blocked head leaves spare now (slots, GPUs). Chosen GPUs are
// kept for it (pick_gpus passes them over) until the pass ends.
std::pair<int, int> Scheduler::reserve_for(const Request& head) {
  kept_free_gpus_ = chosen_gpus_free_count(head);  // (nothing is kept yet)
  for (int g : head.gpu_choice) gpu_kept_[g] = true;
  if (wider_than_set(head)) return {0, 0};  // it needs every slot: nothing is spare
  const int spare_slots = std::max(0, free_slots_ - head.slots());
  if (head.gpu_choice.empty()) return {spare_slots, std::max(0, free_gpus_ - head.gpus())};
  return {spare_slots, free_gpus_ - kept_free_gpus_};
}

std::vector<Grant> Scheduler::schedule(double now) {
  constexpr double kNever = std::numeric_limits<double>::infinity();
  std::vector<Grant> grants;
  std::vector<std::size_t> granted;  // queue indices, increasing
  auto grant = [&](std::size_t i, bool backfilled) {
    grants.push_back(place(queue_[i]));
    grants.back().backfilled = backfilled;
    occupy(grants.back(), now, queue_[i].predicted_s);
    queued_ids_.erase(queue_[i].id);
    granted.push_back(i);
  };
  // Until some request is blocked everything free is on offer; after that,
  // only what the head leaves over, and what may be lent until its shadow.
  const Request* head = nullptr;
  int spare_slots = 0;
  int spare_gpus = 0;
  double shadow = -1;  // < 0: not computed yet (it costs a sort of the running jobs)
  double limit = 0;    // backfill_limit, once the shadow is
  for (std::size_t i = 0; i < queue_.size(); ++i) {
    // Every request needs a slot, so with none to give the scan is over.
    if (exclusive_running_ || free_slots_ == 0) break;
    const Request& r = queue_[i];
    if (!head) {
      if (fits_now(r)) {
        grant(i, false);
        continue;
      }
      head = &r;  // stays valid: the queue changes only after the scan
      std::tie(spare_slots, spare_gpus) = reserve_for(r);
      if (!policy_.backfill) shadow = kNever;
      continue;
    }
    if (spare_slots == 0 && shadow == kNever) break;  // nothing more can start
    if (wider_than_set(r) || !fits_now(r)) continue;
    if (r.slots() <= spare_slots && r.gpus() <= spare_gpus) {
      spare_slots -= r.slots();
      spare_gpus -= r.gpus();
      grant(i, false);
      continue;
    }
    if (r.predicted_s < 0 || shadow == kNever) continue;
    if (shadow < 0) {
      shadow = shadow_time(*head, now);
      limit = backfill_limit(*head, shadow, now);
    }
    // Backfilled jobs end (by prediction x safety) by the limit. One that
    // ends after the shadow may push the shadow later, which only raises
    // the limit: keeping this pass's is the safe side.
    if (now + policy_.backfill_safety * r.predicted_s <= limit) grant(i, true);
  }
  if (head) std::fill(gpu_kept_.begin(), gpu_kept_.end(), false);
  kept_free_gpus_ = 0;
  erase_indices(queue_, granted);
  if (queue_.empty()) queue_ids_sorted_ = true;
  return grants;
}

Grant Scheduler::place(const Request& r) const {
  Grant g;
  g.id = r.id;
  if (wider_than_set(r)) {
    g.exclusive = true;
    for (int c = 0; c < static_cast<int>(set_.cores.size()); ++c) {
      for (int s = 0; s < set_.cores[c].slots; ++s) g.slots.push_back({c, s});
    }
    g.gpus = r.gpu_choice.empty() ? pick_gpus(r.gpus(), 0) : r.gpu_choice;
    return g;
  }
  g.gpus = r.gpu_choice.empty() ? pick_gpus(r.gpus(), r.slots()) : r.gpu_choice;
  g.slots = pick_slots(r.slots(), gpu_domain(g.gpus));
  return g;
}

std::vector<int> Scheduler::pick_gpus(int n, int slots) const {
  if (n == 0) return {};
  // Free GPUs by domain; those of unknown domain form the last group.
  const int unknown = domains_;
  std::vector<std::vector<int>> groups(domains_ + 1);
  for (int g = 0; g < static_cast<int>(gpu_owner_.size()); ++g) {
    if (gpu_owner_[g] == 0 && !gpu_kept_[g]) groups[gpu_domain_[g] < 0 ? unknown : gpu_domain_[g]].push_back(g);
  }
  // One domain that holds every GPU: first one whose free cores hold the job
  // too, then the tightest fit, which keeps big groups for big GPU jobs.
  const std::vector<int> room = whole_capacity_by_domain();
  auto key = [&](int d) {
    bool cores_short = d == unknown || room[d] < slots;
    return std::tuple(cores_short, groups[d].size(), d);
  };
  int best = -1;
  for (int d = 0; d <= domains_; ++d) {
    if (static_cast<int>(groups[d].size()) >= n && (best < 0 || key(d) < key(best))) best = d;
  }
  if (best >= 0) return {groups[best].begin(), groups[best].begin() + n};
  // Otherwise as few domains as possible: the fullest first.
  std::vector<int> order(domains_ + 1);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return groups[a].size() > groups[b].size(); });
  std::vector<int> picked;
  for (int d : order) {
    for (int g : groups[d]) {
      if (static_cast<int>(picked.size()) < n) picked.push_back(g);
    }
  }
  std::sort(picked.begin(), picked.end());
  return picked;
}

// The domain most of the GPUs hang off, -1 when none is known.
int Scheduler::gpu_domain(const std::vector<int>& gpus) const {
  std::vector<int> votes(domains_, 0);
  int best = -1;
  for (int g : gpus) {
    int d = gpu_domain_[g];
    if (d < 0) continue;
    ++votes[d];
    if (best < 0 || votes[d] > votes[best]) best = d;
  }
  return best;
}

std::vector<Scheduler::Run> Scheduler::whole_runs() const {
  std::vector<Run> runs;
  for (int c = 0; c < static_cast<int>(set_.cores.size()); ++c) {
    const int slots = set_.cores[c].slots;
    if (core_free_[c] != slots) continue;
    if (!runs.empty() && runs.back().end == c && runs.back().domain == core_domain_[c]) {
      ++runs.back().end;
      runs.back().capacity += slots;
    } else {
      runs.push_back({c, c + 1, core_domain_[c], slots});
    }
  }
  return runs;
}

std::vector<int> Scheduler::whole_capacity_by_domain() const {
  std::vector<int> room(domains_, 0);
  for (int c = 0; c < static_cast<int>(set_.cores.size()); ++c) {
    if (core_free_[c] == set_.cores[c].slots) room[core_domain_[c]] += core_free_[c];
  }
  return room;
}

std::vector<SlotRef> Scheduler::pick_slots(int n, int pref) const {
  std::vector<SlotRef> picked;
  int need = n;
  // Takes up to `need` free slots of core c, lowest slot first.
  auto take_core = [&](int c) {
    for (int s = 0; s < set_.cores[c].slots && need > 0; ++s) {
      if (slot_owner_[c][s] == 0) {
        picked.push_back({c, s});
        --need;
      }
    }
  };
  auto take_run = [&](const Run& run) {
    for (int c = run.first; c < run.end && need > 0; ++c) take_core(c);
  };

  std::vector<Run> runs = whole_runs();
  std::vector<int> room(domains_, 0);
  for (const Run& run : runs) room[run.domain] += run.capacity;
  // A GPU job stays beside its GPUs whenever their domain has room for it.
  if (pref >= 0 && room[pref] >= n) {
    std::erase_if(runs, [&](const Run& run) { return run.domain != pref; });
  }

  const Run* fit = nullptr;
  for (const Run& run : runs) {
    if (run.capacity >= n &&
        (!fit || std::tie(run.capacity, run.first) < std::tie(fit->capacity, fit->first))) {
      fit = &run;
    }
  }
  if (fit) {
    take_run(*fit);
    return picked;  // already in (core, slot) order
  }

  auto off_pref = [&](int d) { return pref >= 0 && d != pref; };
  auto run_key = [&](const Run& run) {
    const int d = run.domain;
    const bool short_of_room = room[d] < n;
    return std::tuple(short_of_room, off_pref(d), short_of_room ? -room[d] : room[d], d,
                      -run.capacity, run.first);
  };
  std::sort(runs.begin(), runs.end(),
            [&](const Run& a, const Run& b) { return run_key(a) < run_key(b); });
  for (const Run& run : runs) take_run(run);

  if (need > 0) {
    std::vector<int> partial;
    for (int c = 0; c < static_cast<int>(set_.cores.size()); ++c) {
      if (core_free_[c] > 0 && core_free_[c] < set_.cores[c].slots) partial.push_back(c);
    }
    auto partial_key = [&](int c) {
      return std::tuple(off_pref(core_domain_[c]), -core_free_[c], c);
    };
    std::sort(partial.begin(), partial.end(),
              [&](int a, int b) { return partial_key(a) < partial_key(b); });
    for (int c : partial) take_core(c);
  }
  std::sort(picked.begin(), picked.end(), [](SlotRef a, SlotRef b) {
    return std::tie(a.core, a.slot) < std::tie(b.core, b.slot);
  });
  return picked;
}

void Scheduler::adopt(const Grant& g) {
  auto refuse = [&](const std::string& why) {
    throw Error("cannot adopt job " + std::to_string(g.id) + ": " + why);
  };
  if (g.id == 0 || running_.contains(g.id) || queued_ids_.contains(g.id)) refuse("id in use");
  if (g.slots.empty()) refuse("no slots");
  if (exclusive_running_ || (g.exclusive && !running_.empty())) refuse("an exclusive job conflicts");
  std::set<std::pair<int, int>> slots;
  for (SlotRef s : g.slots) {
    if (s.core < 0 || s.core >= static_cast<int>(set_.cores.size()) || s.slot < 0 ||
        s.slot >= set_.cores[static_cast<std::size_t>(s.core)].slots) {
      refuse("unknown slot " + std::to_string(s.core) + "." + std::to_string(s.slot));
    }
    if (JobId h = slot_owner_[static_cast<std::size_t>(s.core)][static_cast<std::size_t>(s.slot)]) {
      refuse("core " + std::to_string(s.core) + " slot " + std::to_string(s.slot) +
             " is held by job " + std::to_string(h));
    }
    if (!slots.insert({s.core, s.slot}).second) refuse("a slot is named twice");
  }
  std::set<int> gpus;
  for (int gpu : g.gpus) {
    if (gpu < 0 || gpu >= static_cast<int>(set_.gpus.size())) refuse("unknown GPU " + std::to_string(gpu));
    if (JobId h = gpu_owner_[static_cast<std::size_t>(gpu)]) {
      refuse("GPU " + std::to_string(gpu) + " is held by job " + std::to_string(h));
    }
    if (!gpus.insert(gpu).second) refuse("a GPU is named twice");
  }
  occupy(g);
}

void Scheduler::occupy(const Grant& g, double start, double predicted_s) {
  for (SlotRef s : g.slots) {
    slot_owner_[s.core][s.slot] = g.id;
    --core_free_[s.core];
  }
  for (int gpu : g.gpus) gpu_owner_[gpu] = g.id;
  free_slots_ -= static_cast<int>(g.slots.size());
  free_gpus_ -= static_cast<int>(g.gpus.size());
  if (g.exclusive) exclusive_running_ = true;
  running_.emplace(g.id, Running{g, start, predicted_s});
}

int Scheduler::position(JobId id) const {
  if (!queued_ids_.contains(id)) return -1;
  auto it = queue_ids_sorted_ ? std::lower_bound(queue_.begin(), queue_.end(), id,
                                                 [](const Request& r, JobId v) { return r.id < v; })
                              : std::find_if(queue_.begin(), queue_.end(),
                                             [id](const Request& r) { return r.id == id; });
  return static_cast<int>(it - queue_.begin());
}

std::vector<JobId> Scheduler::queue_order() const {
  std::vector<JobId> ids;
  ids.reserve(queue_.size());
  for (const Request& r : queue_) ids.push_back(r.id);
  return ids;
}

std::size_t Scheduler::queued() const { return queue_.size(); }
std::size_t Scheduler::running() const { return running_.size(); }
const ResourceSet& Scheduler::resources() const { return set_; }
int Scheduler::free_slots() const { return free_slots_; }
int Scheduler::free_gpus() const { return free_gpus_; }

JobId Scheduler::slot_holder(SlotRef s) const {
  if (s.core < 0 || s.core >= static_cast<int>(slot_owner_.size())) return 0;
  const std::vector<JobId>& owners = slot_owner_[s.core];
  return s.slot >= 0 && s.slot < static_cast<int>(owners.size()) ? owners[s.slot] : 0;
}

JobId Scheduler::gpu_holder(int gpu) const {
  return gpu >= 0 && gpu < static_cast<int>(gpu_owner_.size()) ? gpu_owner_[gpu] : 0;
}

}  // namespace jiffy
