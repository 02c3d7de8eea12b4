// Layout behaviours: which cores, CPUs and GPUs each rank of a grant gets.
#include "sched/layout.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "sched/scheduler.h"
#include "util/error.h"

namespace jiffy {
namespace {

using Ints = std::vector<int>;

// n cores with two hardware threads each (c and c+n, as Linux numbers
// siblings), `slots` slots per core, and `gpus` GPUs.
ResourceSet machine(int n, int slots, int gpus = 0) {
  ResourceSet set;
  for (int c = 0; c < n; ++c) set.cores.push_back({0, {c, c + n}, slots});
  for (int g = 0; g < gpus; ++g) set.gpus.push_back({std::to_string(g), 0});
  return set;
}

Request job(int ntasks, int cores_per_task = 1, int gpus_per_task = 0, int gpus_per_job = 0) {
  Request r;
  r.id = 1;
  r.ntasks = ntasks;
  r.cores_per_task = cores_per_task;
  r.gpus_per_task = gpus_per_task;
  r.gpus_per_job = gpus_per_job;
  return r;
}

Grant normal(std::vector<SlotRef> slots, Ints gpus = {}) {
  return Grant{1, std::move(slots), std::move(gpus), false};
}

Grant exclusive(const ResourceSet& set) {
  Grant g{1, {}, {}, true};
  for (int c = 0; c < static_cast<int>(set.cores.size()); ++c) {
    for (int s = 0; s < set.cores[c].slots; ++s) g.slots.push_back({c, s});
  }
  return g;
}

TEST(Layout, RanksGetTheirOwnSlotsInOrder) {
  ResourceSet set = machine(4, 1);
  auto ranks = layout(set, job(2, 2), normal({{2, 0}, {3, 0}, {0, 0}, {1, 0}}), Bind::Core);
  ASSERT_EQ(ranks.size(), 2u);
  EXPECT_EQ(ranks[0].cores, (Ints{2, 3}));
  EXPECT_EQ(ranks[1].cores, (Ints{0, 1}));
}

TEST(Layout, BindCoreUsesEveryThreadOfItsCores) {
  ResourceSet set = machine(4, 1);
  auto ranks = layout(set, job(2, 2), normal({{0, 0}, {1, 0}, {2, 0}, {3, 0}}), Bind::Core);
  EXPECT_EQ(ranks[0].cpus, (Ints{0, 1, 4, 5}));
  EXPECT_EQ(ranks[1].cpus, (Ints{2, 3, 6, 7}));
}

TEST(Layout, BindHwThreadUsesOneThreadPerSlot) {
  ResourceSet set = machine(2, 2);
  auto ranks = layout(set, job(3), normal({{0, 0}, {0, 1}, {1, 0}}), Bind::HwThread);
  EXPECT_EQ(ranks[0].cpus, (Ints{0}));
  EXPECT_EQ(ranks[1].cpus, (Ints{2}));
  EXPECT_EQ(ranks[2].cpus, (Ints{1}));
  EXPECT_EQ(ranks[1].cores, (Ints{0}));
}

TEST(Layout, SlotsBeyondThreadsWrapAround) {
  ResourceSet set = machine(1, 3);  // oversubscribed: 3 slots, 2 threads
  auto ranks = layout(set, job(1), normal({{0, 2}}), Bind::HwThread);
  EXPECT_EQ(ranks[0].cpus, (Ints{0}));
}

TEST(Layout, BindNoneLeavesCpusEmpty) {
  ResourceSet set = machine(2, 1);
  auto ranks = layout(set, job(2), normal({{0, 0}, {1, 0}}), Bind::None);
  EXPECT_TRUE(ranks[0].cpus.empty());
  EXPECT_EQ(ranks[1].cores, (Ints{1}));
}

TEST(Layout, ExclusiveSpreadsRanksEvenly) {
  ResourceSet set = machine(4, 1);
  auto ranks = layout(set, job(6), exclusive(set), Bind::Core);
  ASSERT_EQ(ranks.size(), 6u);
  const std::vector<Ints> expected = {{0}, {0}, {1}, {2}, {2}, {3}};
  for (int r = 0; r < 6; ++r) EXPECT_EQ(ranks[r].cores, expected[r]) << "rank " << r;
  // Ranks share cores: each is bound to all of the job's CPUs (the kernel
  // balances them), never beyond.
  for (int r = 0; r < 6; ++r) EXPECT_EQ(ranks[r].cpus, (Ints{0, 1, 2, 3, 4, 5, 6, 7})) << "rank " << r;
}

TEST(Layout, ExclusiveWithFewerRanksThanCoresGivesEachARange) {
  ResourceSet set = machine(4, 1);
  auto ranks = layout(set, job(2, 1), exclusive(set), Bind::Core);
  EXPECT_EQ(ranks[0].cores, (Ints{0, 1}));
  EXPECT_EQ(ranks[1].cores, (Ints{2, 3}));
  EXPECT_EQ(ranks[1].cpus, (Ints{2, 3, 6, 7}));
}

TEST(Layout, ExclusiveRanksGetTheCoresTheyAskedForShared) {
  // -n 2 -c 3 on 4 cores: each rank has 3 cores, overlapping on one.
  ResourceSet set = machine(4, 1);
  auto ranks = layout(set, job(2, 3), exclusive(set), Bind::Core);
  EXPECT_EQ(ranks[0].cores, (Ints{0, 1, 2}));
  EXPECT_EQ(ranks[1].cores, (Ints{0, 2, 3}));
  // -n 2 -c 2 on 2 cores: both ranks on both cores (not one CPU each).
  ResourceSet small = machine(2, 1);
  auto both = layout(small, job(2, 2), exclusive(small), Bind::Core);
  EXPECT_EQ(both[0].cores, (Ints{0, 1}));
  EXPECT_EQ(both[1].cores, (Ints{0, 1}));
  // More cores per task than the machine has: all of it.
  auto wide = layout(small, job(3, 5), exclusive(small), Bind::Core);
  for (const RankPlacement& r : wide) EXPECT_EQ(r.cores, (Ints{0, 1}));
}

TEST(Layout, ExclusiveHwThreadSpreadsSharersOverThreads) {
  ResourceSet set = machine(2, 1);
  auto ranks = layout(set, job(4), exclusive(set), Bind::HwThread);
  // Cores by rank: 0 0 1 1; threads 0 1, then 0 1: no CPU shared.
  const std::vector<Ints> expected = {{0}, {2}, {1}, {3}};
  for (int r = 0; r < 4; ++r) EXPECT_EQ(ranks[r].cpus, expected[r]) << "rank " << r;
  // Five ranks on four threads would share one: all get the job's CPUs.
  auto five = layout(set, job(5), exclusive(set), Bind::HwThread);
  for (int r = 0; r < 5; ++r) EXPECT_EQ(five[r].cpus, (Ints{0, 1, 2, 3})) << "rank " << r;
}

TEST(Layout, RanksOnOneCoresSlotsShareTheJobsCpus) {
  ResourceSet set = machine(2, 2);  // --slots-per-core 2
  auto ranks = layout(set, job(2), normal({{0, 0}, {0, 1}}), Bind::Core);
  EXPECT_EQ(ranks[0].cpus, (Ints{0, 2}));
  EXPECT_EQ(ranks[1].cpus, (Ints{0, 2}));
  EXPECT_TRUE(ranks_share_cpus({ranks[0].cpus, ranks[1].cpus}));
  EXPECT_FALSE(ranks_share_cpus({{0, 2}, {1, 3}}));
}

TEST(Layout, GpusPerTaskThenSharedOnes) {
  ResourceSet set = machine(2, 1, 5);
  auto ranks = layout(set, job(2, 1, 2, 1), normal({{0, 0}, {1, 0}}, {4, 3, 1, 0, 2}), Bind::Core);
  EXPECT_EQ(ranks[0].gpus, (Ints{4, 3, 2}));
  EXPECT_EQ(ranks[1].gpus, (Ints{1, 0, 2}));
}

TEST(Layout, ExclusiveGrantSharesOutGpusToo) {
  ResourceSet set = machine(1, 1, 2);
  Grant g = exclusive(set);
  g.gpus = {1, 0};
  auto ranks = layout(set, job(2, 1, 1), g, Bind::None);
  EXPECT_EQ(ranks[0].gpus, (Ints{1}));
  EXPECT_EQ(ranks[1].gpus, (Ints{0}));
}

TEST(Layout, GrantThatDoesNotMatchIsAnError) {
  ResourceSet set = machine(2, 1, 1);
  EXPECT_THROW(layout(set, job(2), normal({{0, 0}}), Bind::Core), Error);
  EXPECT_THROW(layout(set, job(1), normal({{2, 0}}), Bind::Core), Error);
  EXPECT_THROW(layout(set, job(1), normal({{0, 1}}), Bind::Core), Error);
  EXPECT_THROW(layout(set, job(1, 1, 1), normal({{0, 0}}), Bind::Core), Error);
  EXPECT_THROW(layout(set, job(1, 1, 1), normal({{0, 0}}, {3}), Bind::Core), Error);
  EXPECT_THROW(layout(set, job(3), Grant{1, {}, {}, true}, Bind::Core), Error);
}

TEST(Layout, FollowsTheSchedulersGrant) {
  ResourceSet set = machine(4, 2);
  Scheduler s(set, {});
  Request r = job(2, 2);
  s.submit(r);
  std::vector<Grant> grants = s.schedule();
  ASSERT_EQ(grants.size(), 1u);
  auto ranks = layout(set, r, grants[0], Bind::HwThread);
  // Each rank gets both threads of one core of its own.
  EXPECT_EQ(ranks[0].cpus, (Ints{0, 4}));
  EXPECT_EQ(ranks[1].cpus, (Ints{1, 5}));
}

}  // namespace
}  // namespace jiffy
