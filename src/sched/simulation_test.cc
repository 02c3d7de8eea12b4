// The scheduler at scale: a seeded random stream of 10,000 requests on a
// 256-core machine, checked after every event.
//
// Each event is one arrival, one release of a random running job or, now and
// then, the cancellation of a random queued request, followed by schedule(). The test keeps its own
// record of what was granted to whom and recomputes slot and GPU ownership from it after every
// event, so a bug in the scheduler's ledger cannot hide a double booking. Arrival pressure
// alternates between phases above and below what releases drain, so the
// queue repeatedly grows to hundreds of requests and shrinks again.
//
// Starvation is measured on the head of the queue (the oldest ungranted
// request): the scheduler promises it is granted at the latest when every
// job that was running when it became head has released, and the test holds
// it to exactly that after every event.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "sched/scheduler.h"

namespace jiffy {
namespace {

struct Machine {
  int cores = 256;
  int slots_per_core = 1;
  int cores_per_domain = 64;
  std::vector<int> gpu_numas;  // one entry per GPU
};

struct Figures {
  std::int64_t events = 0;
  std::int64_t max_head_wait = 0;           // events from becoming head to grant
  std::int64_t max_head_wait_releases = 0;  // releases in that time
  std::size_t max_queue = 0;
  int exclusive_grants = 0;
  int gpu_grants = 0;
  int overtaken = 0;  // grants of a request younger than a still-queued one
  int cancelled = 0;
};

ResourceSet build(const Machine& m) {
  ResourceSet set;
  for (int c = 0; c < m.cores; ++c) {
    Core core;
    core.numa = c / m.cores_per_domain;
    for (int t = 0; t < m.slots_per_core; ++t) core.pus.push_back(c + t * m.cores);
    core.slots = m.slots_per_core;
    set.cores.push_back(core);
  }
  for (int numa : m.gpu_numas) set.gpus.push_back({std::to_string(set.gpus.size()), numa});
  return set;
}

// Mostly narrow jobs, some up to 64 slots, one in ten with GPUs, one in two
// hundred wider than the whole machine.
std::vector<Request> make_requests(int n, int total_slots, int gpus, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0, 1);
  auto between = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  std::vector<Request> reqs;
  for (int i = 0; i < n; ++i) {
    Request r;
    r.id = static_cast<JobId>(i + 1);
    const double kind = u(rng);
    if (kind < 0.005) {
      r.ntasks = total_slots + between(1, total_slots);
      if (gpus > 0 && u(rng) < 0.3) r.gpus_per_job = 1;
    } else if (kind < 0.105 && gpus > 0) {
      r.ntasks = between(1, std::min(4, gpus));
      r.cores_per_task = between(1, 4);
      if (u(rng) < 0.7) {
        r.gpus_per_task = 1;
      } else {
        r.gpus_per_job = between(1, std::min(2, gpus));
      }
    } else {
      const double w = u(rng);
      const int width = w < 0.5 ? between(1, 4) : w < 0.85 ? between(5, 16) : between(17, 64);
      if (width % 2 == 0 && u(rng) < 0.25) {
        r.ntasks = width / 2;
        r.cores_per_task = 2;
      } else {
        r.ntasks = width;
      }
    }
    reqs.push_back(r);
  }
  return reqs;
}

class Simulation {
 public:
  Simulation(const Machine& m, int requests, std::uint64_t seed)
      : set_(build(m)), sched_(set_, {}), rng_(seed) {
    total_slots_ = set_.total_slots();
    for (const Core& c : set_.cores) {
      first_slot_.push_back(flat_slots_);
      flat_slots_ += c.slots;
    }
    reqs_ = make_requests(requests, total_slots_, static_cast<int>(set_.gpus.size()), rng_);
    state_.assign(reqs_.size() + 1, kWaiting);
    r0_of_.assign(reqs_.size() + 1, 0);
  }

  Figures run() {
    std::uniform_real_distribution<double> u(0, 1);
    std::size_t arrived = 0;
    while (arrived < reqs_.size() || !live_ids_.empty()) {
      // Phases of 2,000 events: arrivals outpace releases, then the reverse.
      const double arrive_p = (figures_.events / 2000) % 2 == 0 ? 0.6 : 0.42;
      if (u(rng_) < 0.01) {
        cancel_random(arrived);
      } else if (arrived < reqs_.size() && (live_ids_.empty() || u(rng_) < arrive_p)) {
        sched_.submit(reqs_[arrived++]);
      } else {
        release_random();
      }
      ++figures_.events;
      const std::vector<Grant> grants = sched_.schedule();
      for (const Grant& g : grants) record(g, arrived);
      if (!check(arrived)) return figures_;
      track_head(arrived);
      for (const Grant& g : grants) figures_.overtaken += head_ != 0 && g.id > head_;
      if (::testing::Test::HasFailure()) return figures_;
      figures_.max_queue = std::max(figures_.max_queue, sched_.queued());
    }
    EXPECT_EQ(granted_count_ + figures_.cancelled, reqs_.size());
    EXPECT_EQ(sched_.queued(), 0u);
    EXPECT_EQ(sched_.running(), 0u);
    EXPECT_EQ(sched_.free_slots(), total_slots_);
    EXPECT_EQ(sched_.free_gpus(), static_cast<int>(set_.gpus.size()));
    return figures_;
  }

 private:
  const Request& req(JobId id) const { return reqs_[id - 1]; }

  void release_random() {
    std::size_t i = std::uniform_int_distribution<std::size_t>(0, live_ids_.size() - 1)(rng_);
    const JobId id = live_ids_[i];
    live_ids_[i] = live_ids_.back();
    live_ids_.pop_back();
    live_.erase(id);
    if (head_ != 0 && r0_of_[id] == head_) --r0_left_;
    ++releases_;
    sched_.release(id);
  }

  // Cancels a random request that arrived and still waits, if it hits one.
  void cancel_random(std::size_t arrived) {
    if (next_head_ > arrived) return;
    const JobId id = std::uniform_int_distribution<JobId>(next_head_, arrived)(rng_);
    if (state_[id] != kWaiting) return;
    sched_.cancel(id);
    state_[id] = kCancelled;
    ++figures_.cancelled;
  }

  void record(const Grant& g, std::size_t arrived) {
    if (g.id == 0 || g.id > arrived || state_[g.id] != kWaiting) {
      ADD_FAILURE() << "grant for job " << g.id << " which is not waiting";
      return;
    }
    const Request& r = req(g.id);
    const bool wide = r.slots() > total_slots_;
    if (g.exclusive != wide || g.gpus.size() != static_cast<std::size_t>(r.gpus()) ||
        g.slots.size() != static_cast<std::size_t>(wide ? total_slots_ : r.slots())) {
      ADD_FAILURE() << "job " << g.id << " got a grant of the wrong shape";
      return;
    }
    state_[g.id] = kGranted;
    ++granted_count_;
    figures_.exclusive_grants += g.exclusive;
    figures_.gpu_grants += !g.gpus.empty();
    live_.emplace(g.id, g);
    live_ids_.push_back(g.id);
  }

  // Ownership from our own record of grants, then the scheduler's view of it.
  bool check(std::size_t arrived) {
    std::vector<JobId> slot_owner(flat_slots_, 0);
    std::vector<JobId> gpu_owner(set_.gpus.size(), 0);
    bool exclusive = false;
    for (const auto& [id, g] : live_) {
      exclusive |= g.exclusive;
      for (SlotRef s : g.slots) {
        if (s.core < 0 || s.core >= static_cast<int>(set_.cores.size()) || s.slot < 0 ||
            s.slot >= set_.cores[s.core].slots) {
          ADD_FAILURE() << "job " << id << " holds a slot that does not exist";
          return false;
        }
        JobId& owner = slot_owner[first_slot_[s.core] + s.slot];
        if (owner != 0) {
          ADD_FAILURE() << "slot " << s.core << "." << s.slot << " held by jobs " << owner
                        << " and " << id;
          return false;
        }
        owner = id;
      }
      for (int gpu : g.gpus) {
        if (gpu < 0 || gpu >= static_cast<int>(gpu_owner.size()) || gpu_owner[gpu] != 0) {
          ADD_FAILURE() << "GPU " << gpu << " of job " << id << " is bogus or double-booked";
          return false;
        }
        gpu_owner[gpu] = id;
      }
    }
    if (exclusive && live_.size() != 1) {
      ADD_FAILURE() << "an exclusive job runs beside " << live_.size() - 1 << " others";
      return false;
    }
    int held = 0;
    for (int c = 0; c < static_cast<int>(set_.cores.size()); ++c) {
      for (int s = 0; s < set_.cores[c].slots; ++s) {
        const JobId owner = slot_owner[first_slot_[c] + s];
        held += owner != 0;
        if (sched_.slot_holder({c, s}) != owner) {
          ADD_FAILURE() << "the scheduler's ledger disagrees on slot " << c << "." << s;
          return false;
        }
      }
    }
    int gpus_held = 0;
    for (JobId owner : gpu_owner) gpus_held += owner != 0;
    if (sched_.free_slots() != total_slots_ - held ||
        sched_.free_gpus() != static_cast<int>(gpu_owner.size()) - gpus_held ||
        sched_.running() != live_.size() ||
        sched_.queued() != arrived - granted_count_ - figures_.cancelled) {
      ADD_FAILURE() << "the scheduler's counts disagree with its grants";
      return false;
    }
    if (live_.empty() && sched_.queued() > 0) {
      ADD_FAILURE() << "idle machine, yet " << sched_.queued() << " requests wait";
      return false;
    }
    return true;
  }

  // The head is the oldest request not granted yet (ids follow arrival).
  void track_head(std::size_t arrived) {
    while (next_head_ <= arrived && state_[next_head_] != kWaiting) ++next_head_;
    const JobId head = next_head_ <= arrived ? next_head_ : 0;
    if (head_ != 0 && state_[head_] == kGranted) {
      figures_.max_head_wait = std::max(figures_.max_head_wait, figures_.events - head_since_);
      figures_.max_head_wait_releases =
          std::max(figures_.max_head_wait_releases, releases_ - head_releases_);
    }
    if (head != head_) {
      head_ = head;
      head_since_ = figures_.events;
      head_releases_ = releases_;
      r0_left_ = static_cast<int>(live_ids_.size());
      for (JobId id : live_ids_) r0_of_[id] = head;
    } else if (head_ != 0 && r0_left_ == 0) {
      ADD_FAILURE() << "head job " << head_ << " still waits after every job running when it "
                    << "became head has released (" << figures_.events - head_since_ << " events)";
    }
  }

  ResourceSet set_;
  Scheduler sched_;
  std::mt19937_64 rng_;
  int total_slots_ = 0;
  int flat_slots_ = 0;
  std::vector<int> first_slot_;  // [core] index of its slot 0 in a flat array
  std::vector<Request> reqs_;    // reqs_[id - 1]
  enum State : char { kWaiting, kGranted, kCancelled };
  std::vector<State> state_;  // [id]; kWaiting also before arrival
  std::size_t granted_count_ = 0;
  std::unordered_map<JobId, Grant> live_;
  std::vector<JobId> live_ids_;
  std::int64_t releases_ = 0;
  Figures figures_;

  JobId head_ = 0;
  std::size_t next_head_ = 1;
  std::int64_t head_since_ = 0;
  std::int64_t head_releases_ = 0;
  int r0_left_ = 0;           // jobs running when head_ became head, not yet released
  std::vector<JobId> r0_of_;  // [id] the head that was waiting when id ran, if any
};

void report(const char* name, const Figures& f) {
  std::printf(
      "[ %s ] %lld events, queue up to %zu, head waited at most %lld events (%lld releases), "
      "%d exclusive and %d GPU grants, %d grants overtook an older request, %d cancelled\n",
      name, static_cast<long long>(f.events), f.max_queue, static_cast<long long>(f.max_head_wait),
      static_cast<long long>(f.max_head_wait_releases), f.exclusive_grants, f.gpu_grants,
      f.overtaken, f.cancelled);
}

// The sharp promise is checked after every event in track_head(). This is a
// coarse guard on the figure itself: a head needs at most one release per job
// running when it became head (at most one job per slot), and at least two
// events in five are releases, so about 2.5 x slots events; 4 x slots leaves
// room for the releases of jobs that backfilled meanwhile.
void expect_bounded(const Figures& f, int total_slots) {
  EXPECT_GT(f.exclusive_grants, 0);
  EXPECT_LE(f.max_head_wait, 4 * total_slots);
  EXPECT_GT(f.max_queue, 100u) << "the queue never filled: the test exercised little";
}

Machine with_gpus(int slots_per_core) {
  Machine m;
  m.slots_per_core = slots_per_core;
  m.gpu_numas = {0, 0, 1, 1, 2, 2, 3, 3};
  return m;
}

TEST(Simulation, TenThousandRequestsOn256Cores) {
  Figures f = Simulation(with_gpus(1), 10000, 1).run();
  report("256 cores", f);
  expect_bounded(f, 256);
}

TEST(Simulation, TenThousandRequestsOn256HyperthreadedCores) {
  Figures f = Simulation(with_gpus(2), 10000, 2).run();
  report("256 cores x 2 slots", f);
  expect_bounded(f, 512);
}

TEST(Simulation, GpusOfUnknownDomain) {
  Machine m = with_gpus(1);
  m.gpu_numas = {-1, -1, 0, 3};
  Figures f = Simulation(m, 10000, 3).run();
  report("GPUs of unknown domain", f);
  expect_bounded(f, 256);
}

}  // namespace
}  // namespace jiffy
