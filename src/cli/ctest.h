// CTest's resource allocation (ctest --resource-spec-file): CTest picks the
// GPUs of a test whose RESOURCE_GROUPS ask for "gpus" and names them in the
// test's environment:
//
//   CTEST_RESOURCE_GROUP_COUNT=2
//   CTEST_RESOURCE_GROUP_0=gpus          (the group's resource types)
//   CTEST_RESOURCE_GROUP_0_GPUS=id:1,slots:1
//   CTEST_RESOURCE_GROUP_1=gpus
//   CTEST_RESOURCE_GROUP_1_GPUS=id:3,slots:1
//
// jiffy then runs the job on exactly those GPUs (the daemon's GPU names,
// which `jiffy resource-spec` wrote into the spec file) instead of picking
// its own. Pure: the environment comes through a lookup function.
#pragma once

#include <string>
#include <vector>

#include "cli/command.h"
#include "launch/options.h"

namespace jiffy {

// The GPU ids CTest chose, group by group (a group's ids in the order
// listed); empty when CTest chose none (no CTEST_RESOURCE_GROUP_COUNT, or no
// group asks for gpus). An id given twice counts once. Throws Error naming
// the variable when one is malformed or missing.
struct CtestGpus {
  std::vector<std::string> ids;
  // How many ids each group that has gpus holds, in group order.
  std::vector<int> per_group;
};
CtestGpus ctest_gpus(EnvLookup env);

// Makes opt ask for exactly the GPUs in ctest (opt.gpu_names). Without -g
// or -G: one group per rank with the same number of GPUs each means that
// many per rank (rank r gets group r's), anything else a set shared by the
// whole job (-G). With -g or -G the counts must match. Throws Error saying
// what CTest gave and what the options ask for when they do not.
void apply_ctest_gpus(LaunchOptions& opt, const CtestGpus& ctest);

}  // namespace jiffy
