// Layout: which CPUs and GPUs each rank of a granted job uses.
//
// Pure function of the resource set, the request and its grant. Normal
// grants: rank r runs on its own cores_per_task slots. Exclusive grants (job
// wider than the set): the ranks are spread evenly over all cores, rank r on
// cores [r*K/N, (r+1)*K/N) or, where that range is empty, core r*K/N.
#pragma once

#include <vector>

#include "core/resources.h"
#include "sched/request.h"

namespace jiffy {

enum class Bind { Core, HwThread, None };

struct RankPlacement {
  std::vector<int> cores;  // indices into ResourceSet::cores
  std::vector<int> cpus;   // OS CPU ids for sched_setaffinity; empty = do not bind
  std::vector<int> gpus;   // indices into ResourceSet::gpus (its per-task GPUs, then the job's)
};

// Bind::Core binds a rank to every hardware thread of its cores;
// Bind::HwThread to the one thread of each of its slots (slot k of a core ->
// pus[k % pus.size()]); Bind::None leaves cpus empty. Ranks that would
// share a CPU are each bound to all of the job's CPUs instead (the kernel
// balances them; see layout.cc).
std::vector<RankPlacement> layout(const ResourceSet& set, const Request& req, const Grant& grant,
                                  Bind bind);

// Whether some CPU is in two of these ranks' sets: the job's ranks share
// CPUs, and MPI must yield instead of spinning (launch/job.cc).
bool ranks_share_cpus(const std::vector<std::vector<int>>& cpus);

}  // namespace jiffy
