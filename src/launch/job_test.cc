#include "launch/job.h"

#include <gtest/gtest.h>

namespace jiffy {
namespace {

JobGrant grant_of(const std::vector<std::vector<int>>& cpus) {
  JobGrant g;
  for (const auto& c : cpus) g.ranks.push_back(RankGrant{c, c, {}});
  return g;
}

TEST(SpawnPlan, OneRankPerCpuStartsInRankOrderFromTheLastCpu) {
  JobGrant g = grant_of({{0}, {1}, {2}, {3}});
  std::vector<int> order = spawn_order(g);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(last_first_on_cpu(g, order), 3);
}

TEST(SpawnPlan, SharedCpusGetOneRankEachFirst) {
  // -n 4 on 2 cores: every rank on both CPUs (the daemon's layout) or two per CPU.
  JobGrant paired = grant_of({{0}, {0}, {1}, {1}});
  std::vector<int> order = spawn_order(paired);
  EXPECT_EQ(order, (std::vector<int>{0, 2, 1, 3}));
  EXPECT_EQ(last_first_on_cpu(paired, order), 2);  // CPU 1 gets its first rank last
  JobGrant all = grant_of({{0, 1}, {0, 1}, {0, 1}});
  order = spawn_order(all);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(last_first_on_cpu(all, order), 0);
}

TEST(SpawnPlan, OneRankAndUnboundRanks) {
  JobGrant one = grant_of({{5}});
  EXPECT_EQ(spawn_order(one), (std::vector<int>{0}));
  EXPECT_EQ(last_first_on_cpu(one, spawn_order(one)), 0);
  JobGrant unbound = grant_of({{}, {}});
  EXPECT_EQ(spawn_order(unbound), (std::vector<int>{0, 1}));
}

}  // namespace
}  // namespace jiffy
