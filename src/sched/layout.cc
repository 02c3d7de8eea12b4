// Layout: turns a grant into per-rank cores, CPUs and GPUs.
//
// The grant arrives from the daemon, so it is checked against the request
// and the resource set first; a mismatch is an Error, never a crash.
// Normal grants are rank-major already. Exclusive grants hold every slot and
// ranks are spread over the granted cores by integer division (each still
// getting the cores per task it asked for, shared); when there
// are more ranks than cores, the ranks sharing core c are numbered from the
// first rank mapped to it, and that number picks their hardware thread, so
// with hardware-thread binding they spread over the core's threads.
#include "sched/layout.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "util/error.h"

namespace jiffy {

bool ranks_share_cpus(const std::vector<std::vector<int>>& cpus) {
  std::vector<int> all;
  std::size_t sum = 0;
  for (const std::vector<int>& c : cpus) {
    all.insert(all.end(), c.begin(), c.end());
    sum += c.size();
  }
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  return all.size() != sum;
}

namespace {

[[noreturn]] void mismatch(const std::string& what) {
  throw Error("grant does not match the request: " + what);
}

void check(const ResourceSet& set, const Request& req, const Grant& grant) {
  if (req.ntasks < 1 || req.cores_per_task < 1 || req.gpus_per_task < 0 || req.gpus_per_job < 0) {
    mismatch("the request's counts are invalid");
  }
  for (SlotRef s : grant.slots) {
    if (s.core < 0 || s.core >= static_cast<int>(set.cores.size()) || s.slot < 0 ||
        s.slot >= set.cores[s.core].slots) {
      mismatch("slot " + std::to_string(s.core) + "." + std::to_string(s.slot) +
               " is not in the resource set");
    }
  }
  for (int g : grant.gpus) {
    if (g < 0 || g >= static_cast<int>(set.gpus.size())) {
      mismatch("GPU " + std::to_string(g) + " is not in the resource set");
    }
  }
  const std::int64_t slots = std::int64_t{req.ntasks} * req.cores_per_task;
  const std::int64_t gpus = std::int64_t{req.ntasks} * req.gpus_per_task + req.gpus_per_job;
  if (grant.exclusive ? grant.slots.empty()
                      : static_cast<std::int64_t>(grant.slots.size()) != slots) {
    mismatch(std::to_string(grant.slots.size()) + " slots for " + std::to_string(slots));
  }
  if (static_cast<std::int64_t>(grant.gpus.size()) != gpus) {
    mismatch(std::to_string(grant.gpus.size()) + " GPUs for " + std::to_string(gpus));
  }
}

void sort_unique(std::vector<int>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

// The CPUs of a rank on `cores`, using hardware thread `thread` of each under
// Bind::HwThread.
std::vector<int> cpus_of(const ResourceSet& set, const std::vector<int>& cores,
                         const std::vector<int>& threads, Bind bind) {
  std::vector<int> cpus;
  if (bind == Bind::None) return cpus;
  for (std::size_t i = 0; i < cores.size(); ++i) {
    const std::vector<int>& pus = set.cores[cores[i]].pus;
    if (pus.empty()) continue;
    if (bind == Bind::Core) {
      cpus.insert(cpus.end(), pus.begin(), pus.end());
    } else {
      cpus.push_back(pus[threads[i] % pus.size()]);
    }
  }
  sort_unique(cpus);
  return cpus;
}

void place_normal(const ResourceSet& set, const Request& req, const Grant& grant, Bind bind,
                  std::vector<RankPlacement>& ranks) {
  const std::size_t cpt = req.cores_per_task;
  for (std::size_t r = 0; r < ranks.size(); ++r) {
    std::vector<int> cores;
    std::vector<int> threads;
    for (std::size_t i = r * cpt; i < (r + 1) * cpt; ++i) {
      cores.push_back(grant.slots[i].core);
      threads.push_back(grant.slots[i].slot);
    }
    ranks[r].cpus = cpus_of(set, cores, threads, bind);
    sort_unique(cores);
    ranks[r].cores = cores;
  }
}

// A rank asking for c cores gets c of them (all, on a smaller machine),
// from its spread-out first core onwards, shared with the job's other ranks
// where they overlap: a rank never silently gets fewer CPUs than it asked
// for while the machine has them.
void place_exclusive(const ResourceSet& set, const Request& req, const Grant& grant, Bind bind,
                     std::vector<RankPlacement>& ranks) {
  std::vector<int> all;
  for (SlotRef s : grant.slots) all.push_back(s.core);
  sort_unique(all);
  const std::int64_t k = static_cast<std::int64_t>(all.size());
  const std::int64_t n = static_cast<std::int64_t>(ranks.size());
  const std::int64_t c = std::min<std::int64_t>(req.cores_per_task, k);
  for (std::int64_t r = 0; r < n; ++r) {
    const std::int64_t lo = r * k / n;
    const std::int64_t width = std::max((r + 1) * k / n - lo, c);
    const std::int64_t first_rank_here = (lo * n + k - 1) / k;
    RankPlacement& rank = ranks[r];
    rank.cores.clear();
    for (std::int64_t i = 0; i < width; ++i) rank.cores.push_back(all[(lo + i) % k]);
    const std::vector<int> threads(rank.cores.size(), static_cast<int>(r - first_rank_here));
    rank.cpus = cpus_of(set, rank.cores, threads, bind);
    sort_unique(rank.cores);
  }
}

// Ranks of one job on the same CPU (a job wider than the machine, or
// --slots-per-core above 1) would each spin in MPI waiting for the other's
// time slice. Bound to all of the job's CPUs instead, the kernel balances
// them (measured, issue 14: MPICH's allreduce loop at 3 ranks on 2 cores
// went from 4.0 s to 2.4 s, as under hydra, which binds nothing); never to a
// CPU outside the grant.
// (Two ranks share a core and a CPU: on fake cores, --cores N in tests,
// distinct cores may map to one CPU, and that is no sharing to undo.)
void share_when_overlapping(std::vector<RankPlacement>& ranks) {
  std::vector<std::vector<int>> cores, cpus;
  for (const RankPlacement& r : ranks) {
    cores.push_back(r.cores);
    cpus.push_back(r.cpus);
  }
  if (!ranks_share_cpus(cores) || !ranks_share_cpus(cpus)) return;
  std::vector<int> all;
  for (const std::vector<int>& c : cpus) all.insert(all.end(), c.begin(), c.end());
  sort_unique(all);
  for (RankPlacement& r : ranks) r.cpus = all;
}

}  // namespace


std::vector<RankPlacement> layout(const ResourceSet& set, const Request& req, const Grant& grant,
                                  Bind bind) {
  check(set, req, grant);
  std::vector<RankPlacement> ranks(req.ntasks);
  if (grant.exclusive) {
    place_exclusive(set, req, grant, bind, ranks);
  } else {
    place_normal(set, req, grant, bind, ranks);
  }
  share_when_overlapping(ranks);
  const std::size_t gpt = req.gpus_per_task;
  const auto shared = grant.gpus.end() - req.gpus_per_job;
  for (std::size_t r = 0; r < ranks.size(); ++r) {
    std::vector<int>& gpus = ranks[r].gpus;
    gpus.assign(grant.gpus.begin() + r * gpt, grant.gpus.begin() + (r + 1) * gpt);
    gpus.insert(gpus.end(), shared, grant.gpus.end());
  }
  return ranks;
}

}  // namespace jiffy
