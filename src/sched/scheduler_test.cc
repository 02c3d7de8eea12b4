// Scheduler behaviours, event by event, on small hand-built resource sets.
#include "sched/scheduler.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "util/error.h"

namespace jiffy {
namespace {

// n cores with `slots` slots each, `per_domain` cores per NUMA domain; core c
// has hardware threads c, c+n, ... like Linux numbers hyperthread siblings.
ResourceSet machine(int n, int slots = 1, int per_domain = 0, std::vector<Gpu> gpus = {}) {
  ResourceSet set;
  for (int c = 0; c < n; ++c) {
    Core core;
    core.numa = per_domain > 0 ? c / per_domain : 0;
    for (int t = 0; t < slots; ++t) core.pus.push_back(c + t * n);
    core.slots = slots;
    set.cores.push_back(core);
  }
  set.gpus = std::move(gpus);
  return set;
}

std::vector<Gpu> gpus_on(std::vector<int> numas) {
  std::vector<Gpu> gpus;
  for (int numa : numas) gpus.push_back({std::to_string(gpus.size()), numa});
  return gpus;
}

Request job(JobId id, int ntasks, int cores_per_task = 1, int gpus_per_task = 0,
            int gpus_per_job = 0) {
  Request r;
  r.id = id;
  r.ntasks = ntasks;
  r.cores_per_task = cores_per_task;
  r.gpus_per_task = gpus_per_task;
  r.gpus_per_job = gpus_per_job;
  return r;
}

std::vector<int> cores_of(const Grant& g) {
  std::vector<int> cores;
  for (SlotRef s : g.slots) {
    if (cores.empty() || cores.back() != s.core) cores.push_back(s.core);
  }
  return cores;
}

std::vector<JobId> ids_of(const std::vector<Grant>& grants) {
  std::vector<JobId> ids;
  for (const Grant& g : grants) ids.push_back(g.id);
  return ids;
}

// Submits and schedules one request, which must be granted at once.
Grant start(Scheduler& s, const Request& r) {
  s.submit(r);
  std::vector<Grant> grants = s.schedule();
  EXPECT_EQ(grants.size(), 1u) << "job " << r.id << " did not start";
  return grants.empty() ? Grant{} : grants.front();
}

std::string submit_error(Scheduler& s, const Request& r) {
  try {
    s.submit(r);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

using Ids = std::vector<JobId>;
using Cores = std::vector<int>;

TEST(Scheduler, GrantsInArrivalOrder) {
  Scheduler s(machine(4), {});
  start(s, job(1, 4));
  s.submit(job(2, 2));
  s.submit(job(3, 2));
  EXPECT_TRUE(s.schedule().empty());
  EXPECT_EQ(s.position(2), 0);
  EXPECT_EQ(s.position(3), 1);
  s.release(1);
  EXPECT_EQ(ids_of(s.schedule()), (Ids{2, 3}));
  EXPECT_EQ(s.queued(), 0u);
  EXPECT_EQ(s.running(), 2u);
}

// queue_order() is every position at once: what position() says, in one pass.
TEST(Scheduler, QueueOrderListsEveryPosition) {
  Scheduler s(machine(2), {});
  start(s, job(1, 2));
  for (JobId id : {5, 3, 9}) s.submit(job(id, 1));
  s.submit_in_order(job(4, 1));  // before the first later id: at the head
  Ids order = s.queue_order();
  EXPECT_EQ(order, (Ids{4, 5, 3, 9}));
  for (std::size_t i = 0; i < order.size(); ++i) EXPECT_EQ(s.position(order[i]), static_cast<int>(i));
  s.cancel(3);
  EXPECT_EQ(s.queue_order(), (Ids{4, 5, 9}));
  s.release(1);
  EXPECT_EQ(s.schedule().size(), 2u);  // the head two
  EXPECT_EQ(s.queue_order(), (Ids{9}));
}

TEST(Scheduler, NothingQueuedGrantsNothing) {
  Scheduler s(machine(4), {});
  EXPECT_TRUE(s.schedule().empty());
  EXPECT_EQ(s.free_slots(), 4);
}

TEST(Scheduler, GrantsAreCompact) {
  Scheduler s(machine(8), {});
  EXPECT_EQ(cores_of(start(s, job(1, 2))), (Cores{0, 1}));
  EXPECT_EQ(cores_of(start(s, job(2, 3))), (Cores{2, 3, 4}));
  EXPECT_EQ(cores_of(start(s, job(3, 2))), (Cores{5, 6}));
}

TEST(Scheduler, SmallestHoleThatFitsIsChosen) {
  Scheduler s(machine(8), {});
  start(s, job(1, 2));  // 0-1
  start(s, job(2, 1));  // 2
  start(s, job(3, 3));  // 3-5
  start(s, job(4, 2));  // 6-7
  s.release(2);
  s.release(4);
  // Holes: {2} and {6,7}. The narrow job plugs the small one.
  EXPECT_EQ(cores_of(start(s, job(5, 1))), (Cores{2}));
  EXPECT_EQ(cores_of(start(s, job(6, 2))), (Cores{6, 7}));
}

TEST(Scheduler, FragmentsWhenNoHoleIsBigEnough) {
  Scheduler s(machine(8), {});
  start(s, job(1, 2));  // 0-1
  start(s, job(2, 1));  // 2
  start(s, job(3, 3));  // 3-5
  start(s, job(4, 2));  // 6-7
  s.release(2);
  s.release(4);
  EXPECT_EQ(cores_of(start(s, job(5, 3))), (Cores{2, 6, 7}));
}

TEST(Scheduler, GrantStaysInOneNumaDomain) {
  Scheduler s(machine(8, 1, 4), {});  // domains: 0-3, 4-7
  start(s, job(1, 2));                // 0-1
  // 2-7 are free and contiguous, but 2-5 would straddle two domains.
  EXPECT_EQ(cores_of(start(s, job(2, 4))), (Cores{4, 5, 6, 7}));
  EXPECT_EQ(cores_of(start(s, job(3, 2))), (Cores{2, 3}));
}

TEST(Scheduler, WholeCoresBeforeHyperthreads) {
  Scheduler s(machine(4, 2), {});
  Grant a = start(s, job(1, 1));
  Grant b = start(s, job(2, 1));
  // The second job gets a core of its own, not job 1's sibling thread.
  EXPECT_EQ(a.slots, (std::vector<SlotRef>{{0, 0}}));
  EXPECT_EQ(b.slots, (std::vector<SlotRef>{{1, 0}}));
  // A two-slot job takes both threads of one free core.
  EXPECT_EQ(start(s, job(3, 2)).slots, (std::vector<SlotRef>{{2, 0}, {2, 1}}));
  // Three slots: the last free core, then a sibling thread of a shared one.
  EXPECT_EQ(start(s, job(4, 3)).slots, (std::vector<SlotRef>{{0, 1}, {3, 0}, {3, 1}}));
  EXPECT_EQ(s.free_slots(), 1);
}

TEST(Scheduler, RankOwnsConsecutiveSlots) {
  Scheduler s(machine(4, 2), {});
  Grant g = start(s, job(1, 3, 2));
  // Rank r owns slots [2r, 2r+2): both threads of core r.
  EXPECT_EQ(g.slots, (std::vector<SlotRef>{{0, 0}, {0, 1}, {1, 0}, {1, 1}, {2, 0}, {2, 1}}));
}

TEST(Scheduler, GpuJobGetsCoresNearItsGpu) {
  Scheduler s(machine(8, 1, 4, gpus_on({1})), {});
  Grant g = start(s, job(1, 2, 1, 0, 1));
  EXPECT_EQ(g.gpus, (std::vector<int>{0}));
  EXPECT_EQ(cores_of(g), (Cores{4, 5}));
}

TEST(Scheduler, GpusComeFromOneDomain) {
  Scheduler s(machine(8, 1, 4, gpus_on({0, 1, 1, 0})), {});
  start(s, job(1, 1, 1, 1));  // takes GPU 0 (domain 0)
  // Two GPUs: domain 0 has one left, domain 1 has two.
  Grant g = start(s, job(2, 2, 1, 1));
  EXPECT_EQ(g.gpus, (std::vector<int>{1, 2}));
  EXPECT_EQ(cores_of(g), (Cores{4, 5}));
}

Request chosen(JobId id, int ntasks, int gpus_per_task, std::vector<int> gpus) {
  Request r = job(id, ntasks, 1, gpus_per_task);
  r.gpu_choice = std::move(gpus);
  return r;
}

TEST(SchedulerGpuChoice, GetsExactlyTheChosenGpusInOrder) {
  Scheduler s(machine(4, 1, 0, gpus_on({0, 0, 0, 0})), {});
  Grant g = start(s, chosen(1, 2, 1, {3, 1}));
  EXPECT_EQ(g.gpus, (std::vector<int>{3, 1}));
  EXPECT_EQ(s.gpu_holder(3), 1u);
  EXPECT_EQ(s.gpu_holder(1), 1u);
  EXPECT_EQ(s.gpu_holder(0), 0u);
}

TEST(SchedulerGpuChoice, WaitsForItsGpuWhileOthersAreFree) {
  Scheduler s(machine(4, 1, 0, gpus_on({0, 0})), {});
  start(s, chosen(1, 1, 1, {0}));
  s.submit(chosen(2, 1, 1, {0}));
  EXPECT_TRUE(s.schedule().empty());  // GPU 1 is free, but 2 wants GPU 0
  s.release(1);
  std::vector<Grant> grants = s.schedule();
  ASSERT_EQ(grants.size(), 1u);
  EXPECT_EQ(grants[0].gpus, (std::vector<int>{0}));
}

TEST(SchedulerGpuChoice, LaterJobsDoNotTakeTheBlockedHeadsGpu) {
  // The head waits for GPU 1 (job 1 holds it); its other GPU, 0, is free,
  // and later jobs that would fit must not take it.
  Scheduler s(machine(4, 1, 0, gpus_on({0, 0})), {});
  start(s, chosen(1, 1, 1, {1}));
  s.submit(chosen(2, 2, 1, {0, 1}));
  s.submit(job(3, 1, 1, 1));      // any GPU
  s.submit(chosen(4, 1, 1, {0}));  // GPU 0 itself
  EXPECT_TRUE(s.schedule().empty());
  EXPECT_EQ(s.gpu_holder(0), 0u);
  s.release(1);
  EXPECT_EQ(ids_of(s.schedule()), (Ids{2}));
}

TEST(SchedulerGpuChoice, OtherGpusStaySpareBehindAChoosingHead) {
  Scheduler s(machine(4, 1, 0, gpus_on({0, 0, 0})), {});
  start(s, chosen(1, 1, 1, {1}));
  s.submit(chosen(2, 2, 1, {0, 1}));
  s.submit(job(3, 1, 1, 1));  // GPU 2 is nobody's: it starts there
  std::vector<Grant> grants = s.schedule();
  ASSERT_EQ(grants.size(), 1u);
  EXPECT_EQ(grants[0].id, 3u);
  EXPECT_EQ(grants[0].gpus, (std::vector<int>{2}));
}

TEST(SchedulerGpuChoice, BadChoicesAreRefused) {
  Scheduler s(machine(4, 1, 0, gpus_on({0, 0})), {});
  EXPECT_NE(submit_error(s, chosen(1, 2, 1, {0})), "");        // 1 chosen for 2
  EXPECT_NE(submit_error(s, chosen(2, 1, 1, {5})), "");        // no such GPU
  EXPECT_NE(submit_error(s, chosen(3, 2, 1, {1, 1})), "");     // twice
  EXPECT_EQ(s.queued(), 0u);
}

TEST(SchedulerGpuChoice, ShadowCountsOnlyTheChosenGpus) {
  // The head waits for GPU 0, held by job 1 with no prediction. Job 2's
  // GPU 1 is predicted free at 10, but the head cannot use it: its shadow
  // is unknown, so nothing is backfilled. Counting any GPU would say 10.
  Scheduler s(machine(3, 1, 0, gpus_on({0, 0})), {});
  start(s, chosen(1, 1, 1, {0}));
  Request b = job(2, 1, 1, 1);
  b.predicted_s = 10;
  start(s, b);
  s.submit(chosen(3, 1, 1, {0}));
  Request quick = job(4, 1);
  quick.predicted_s = 5;
  s.submit(quick);
  EXPECT_TRUE(s.schedule(0).empty());
  // Once job 1 has a prediction (ends at 10), the quick job fits before it.
  s.predict(1, 0, 10);
  EXPECT_EQ(ids_of(s.schedule(0)), (Ids{4}));
}

TEST(Scheduler, PerTaskGpusThenPerJobGpus) {
  Scheduler s(machine(4, 1, 0, gpus_on({0, 0, 0, 0})), {});
  Grant g = start(s, job(1, 2, 1, 1, 1));
  EXPECT_EQ(g.gpus.size(), 3u);
  EXPECT_EQ(s.free_gpus(), 1);
  for (int gpu : g.gpus) EXPECT_EQ(s.gpu_holder(gpu), 1u);
}

TEST(Scheduler, WideJobIsNotStarvedByNarrowOnes) {
  Scheduler s(machine(4), {});
  for (JobId id = 1; id <= 4; ++id) start(s, job(id, 1));
  s.submit(job(100, 3));
  // Narrow jobs keep arriving and a narrow one keeps finishing; each freed
  // core is kept for the wide job instead of going to a newcomer.
  JobId next = 5;
  for (JobId done = 1; done <= 3; ++done) {
    s.submit(job(next++, 1));
    s.release(done);
    std::vector<Grant> grants = s.schedule();
    if (done < 3) {
      EXPECT_TRUE(grants.empty()) << "a narrow job overtook the wide one";
    } else {
      EXPECT_EQ(ids_of(grants), (Ids{100}));
    }
  }
  EXPECT_EQ(s.position(5), 0);
}

TEST(Scheduler, LaterRequestMayNotTakeReservedSlots) {
  Scheduler s(machine(8), {});
  start(s, job(1, 6));
  s.submit(job(2, 4));  // head: needs 4, 2 free
  s.submit(job(3, 1));
  EXPECT_TRUE(s.schedule().empty());
  s.release(1);
  EXPECT_EQ(ids_of(s.schedule()), (Ids{2, 3}));
}

TEST(Scheduler, BackfillUsesResourcesHeadCannot) {
  Scheduler s(machine(8, 1, 0, gpus_on({0, 0})), {});
  start(s, job(1, 1, 1, 2));  // holds both GPUs and one core
  s.submit(job(2, 2, 1, 1));  // head: blocked on a GPU, reserves 2 of 7 free cores
  s.submit(job(3, 6));        // 6 > 7 - 2: would eat the head's cores
  s.submit(job(4, 5));        // fits beside the reservation
  s.submit(job(5, 1, 1, 1));  // no GPU to spare
  EXPECT_EQ(ids_of(s.schedule()), (Ids{4}));
  EXPECT_EQ(s.position(2), 0);
  s.release(1);
  EXPECT_EQ(ids_of(s.schedule()), (Ids{2}));
  EXPECT_EQ(s.position(3), 0);
}

TEST(Scheduler, OversizedJobRunsAloneOnWholeMachine) {
  Scheduler s(machine(4, 1, 0, gpus_on({0})), {});
  start(s, job(1, 1));
  s.submit(job(2, 6, 1, 0, 1));
  s.submit(job(3, 1));  // must not slip in: the wide head reserves everything
  EXPECT_TRUE(s.schedule().empty());
  s.release(1);
  std::vector<Grant> grants = s.schedule();
  ASSERT_EQ(ids_of(grants), (Ids{2}));
  const Grant& g = grants.front();
  EXPECT_TRUE(g.exclusive);
  EXPECT_EQ(g.slots, (std::vector<SlotRef>{{0, 0}, {1, 0}, {2, 0}, {3, 0}}));
  EXPECT_EQ(g.gpus, (std::vector<int>{0}));
  EXPECT_EQ(s.free_slots(), 0);
  s.submit(job(4, 1));
  EXPECT_TRUE(s.schedule().empty());
  s.release(2);
  EXPECT_EQ(ids_of(s.schedule()), (Ids{3, 4}));
}

TEST(Scheduler, NothingStartsBesideAnExclusiveJobEvenWithGpusLeft) {
  Scheduler s(machine(2, 1, 0, gpus_on({0, 0})), {});
  start(s, job(1, 3));
  s.submit(job(2, 1, 1, 1));
  EXPECT_TRUE(s.schedule().empty());
  EXPECT_EQ(s.free_gpus(), 2);
}

TEST(Scheduler, OversizedJobRefusedWhenOversubscriptionForbidden) {
  Scheduler s(machine(4), {});
  Request r = job(1, 3, 2);
  r.allow_oversubscribe = false;
  EXPECT_EQ(submit_error(s, r),
            "3 ranks x 2 cores need 6 slots but the resource set has 4; ask for fewer or allow "
            "oversubscription");
  EXPECT_EQ(s.queued(), 0u);
  // Exactly as wide as the set is not oversubscription.
  r.ntasks = 2;
  EXPECT_EQ(start(s, r).exclusive, false);
}

TEST(Scheduler, RequestBeyondLimitFailsAtOnce) {
  Scheduler s(machine(4), SchedPolicy{.max_oversubscribe = 2});
  EXPECT_EQ(submit_error(s, job(1, 9)),
            "9 ranks x 1 core need 9 slots, more than 2 times the resource set's 4");
  EXPECT_EQ(submit_error(s, job(2, 8)), "");
  EXPECT_EQ(s.queued(), 1u);
}

TEST(Scheduler, TooManyGpusFailsAtOnce) {
  Scheduler s(machine(4, 1, 0, gpus_on({0, 0, 0, 0})), {});
  EXPECT_EQ(submit_error(s, job(1, 5, 1, 1)), "requested 5 GPUs but the resource set has 4");
  EXPECT_EQ(submit_error(s, job(2, 2, 1, 2, 1)), "requested 5 GPUs but the resource set has 4");
  EXPECT_EQ(s.queued(), 0u);
}

TEST(Scheduler, InvalidCountsFailAtOnce) {
  Scheduler s(machine(4), {});
  EXPECT_NE(submit_error(s, job(1, 0)), "");
  EXPECT_NE(submit_error(s, job(2, 1, 0)), "");
  EXPECT_NE(submit_error(s, job(3, 1, 1, -1)), "");
  EXPECT_NE(submit_error(s, job(4, 1, 1, 0, -1)), "");
  // Counts whose product overflows an int are still refused, not wrapped.
  EXPECT_NE(submit_error(s, job(5, 1 << 16, 1 << 16)), "");
  EXPECT_EQ(s.queued(), 0u);
}

TEST(Scheduler, ZeroOrDuplicateIdFails) {
  Scheduler s(machine(2), {});
  EXPECT_EQ(submit_error(s, job(0, 1)), "job id 0 is reserved for \"no job\"");
  start(s, job(1, 2));
  s.submit(job(2, 1));
  EXPECT_EQ(submit_error(s, job(1, 1)), "job id 1 is already queued or running");
  EXPECT_EQ(submit_error(s, job(2, 1)), "job id 2 is already queued or running");
  EXPECT_EQ(s.queued(), 1u);
  // Once released, the id may come back.
  s.release(1);
  s.schedule();
  EXPECT_EQ(submit_error(s, job(1, 1)), "");
}

TEST(Scheduler, CancelRemovesQueuedRequest) {
  Scheduler s(machine(2), {});
  start(s, job(1, 2));
  for (JobId id = 2; id <= 4; ++id) s.submit(job(id, 1));
  s.cancel(3);
  EXPECT_EQ(s.queued(), 2u);
  EXPECT_EQ(s.position(3), -1);
  EXPECT_EQ(s.position(4), 1);
  s.cancel(3);   // no longer queued
  s.cancel(1);   // running, not queued
  s.cancel(99);  // unknown
  EXPECT_EQ(s.running(), 1u);
  s.release(1);
  EXPECT_EQ(ids_of(s.schedule()), (Ids{2, 4}));
}

TEST(Scheduler, CancelledHeadLetsOthersStart) {
  Scheduler s(machine(4), {});
  start(s, job(1, 2));
  s.submit(job(2, 4));
  s.submit(job(3, 2));
  EXPECT_TRUE(s.schedule().empty());
  s.cancel(2);
  EXPECT_EQ(ids_of(s.schedule()), (Ids{3}));
}

TEST(Scheduler, ReleaseReturnsEverything) {
  Scheduler s(machine(4, 2, 0, gpus_on({0, 0})), {});
  Grant g = start(s, job(7, 3, 1, 0, 2));
  for (SlotRef slot : g.slots) EXPECT_EQ(s.slot_holder(slot), 7u);
  EXPECT_EQ(s.free_slots(), 5);
  s.submit(job(8, 1, 1, 1));  // waits for a GPU
  s.schedule();
  s.release(7);
  EXPECT_EQ(s.running(), 0u);
  EXPECT_EQ(s.free_slots(), 8);
  EXPECT_EQ(s.free_gpus(), 2);
  for (SlotRef slot : g.slots) EXPECT_EQ(s.slot_holder(slot), 0u);
  for (int gpu : g.gpus) EXPECT_EQ(s.gpu_holder(gpu), 0u);
  s.release(7);  // twice: no-op
  s.release(8);  // queued, holds nothing: no-op
  EXPECT_EQ(s.free_slots(), 8);
  EXPECT_EQ(s.position(8), 0);
  EXPECT_EQ(ids_of(s.schedule()), (Ids{8}));
}

TEST(Scheduler, HoldersOfUnknownResourcesAreNone) {
  Scheduler s(machine(2), {});
  start(s, job(1, 2));
  EXPECT_EQ(s.slot_holder({2, 0}), 0u);
  EXPECT_EQ(s.slot_holder({0, 1}), 0u);
  EXPECT_EQ(s.slot_holder({-1, 0}), 0u);
  EXPECT_EQ(s.gpu_holder(0), 0u);
}

TEST(Scheduler, PositionFollowsSubmitOrderWhateverTheIds) {
  Scheduler s(machine(1), {});
  start(s, job(50, 1));
  s.submit(job(9, 1));
  s.submit(job(3, 1));
  s.submit(job(20, 1));
  EXPECT_EQ(s.position(9), 0);
  EXPECT_EQ(s.position(3), 1);
  EXPECT_EQ(s.position(20), 2);
  s.release(50);
  EXPECT_EQ(ids_of(s.schedule()), (Ids{9}));
  EXPECT_EQ(s.position(3), 0);
}

TEST(Scheduler, EmptySetRefusesEveryRequest) {
  Scheduler s(ResourceSet{}, {});
  EXPECT_NE(submit_error(s, job(1, 1)), "");
  EXPECT_EQ(s.queued(), 0u);
}

TEST(Scheduler, CoreWithoutSlotsIsAMisconfiguration) {
  ResourceSet set = machine(2);
  set.cores[1].slots = 0;
  EXPECT_THROW(Scheduler s(set, {}), Error);
  EXPECT_THROW(Scheduler s(machine(2), SchedPolicy{.max_oversubscribe = 0}), Error);
}

}  // namespace
}  // namespace jiffy

namespace jiffy {
namespace {

ResourceSet adopt_set() {
  ResourceSet set;
  for (int i = 0; i < 4; ++i) set.cores.push_back(Core{0, {i}, 1});
  set.gpus.push_back(Gpu{"0", -1});
  return set;
}

TEST(Scheduler, AdoptedGrantHoldsItsResources) {
  Scheduler s(adopt_set(), SchedPolicy{});
  Grant g;
  g.id = 7;
  g.slots = {{1, 0}, {2, 0}};
  g.gpus = {0};
  s.adopt(g);
  EXPECT_EQ(s.slot_holder({1, 0}), 7u);
  EXPECT_EQ(s.gpu_holder(0), 7u);
  Request r;
  r.id = 8;
  r.ntasks = 3;
  s.submit(r);
  EXPECT_TRUE(s.schedule().empty());  // only 2 cores left
  s.release(7);
  EXPECT_EQ(s.schedule().size(), 1u);
}

TEST(Scheduler, AdoptRefusesToDoubleBook) {
  Scheduler s(adopt_set(), SchedPolicy{});
  Grant a;
  a.id = 1;
  a.slots = {{0, 0}};
  s.adopt(a);
  Grant b;
  b.id = 2;
  b.slots = {{1, 0}, {0, 0}};
  EXPECT_THROW(s.adopt(b), Error);
  EXPECT_EQ(s.slot_holder({1, 0}), 0u);  // nothing of b was taken
  Grant c;
  c.id = 3;
  c.slots = {{9, 0}};
  EXPECT_THROW(s.adopt(c), Error);
  Grant d;
  d.id = 1;
  d.slots = {{2, 0}};
  EXPECT_THROW(s.adopt(d), Error);  // id in use
}

}  // namespace
}  // namespace jiffy

namespace jiffy {
namespace {

TEST(Scheduler, ResubmittedRequestGetsItsOldPlace) {
  ResourceSet set;
  set.cores.push_back(Core{0, {0}, 1});
  Scheduler s(set, SchedPolicy{});
  Request blocker;
  blocker.id = 100;
  s.submit(blocker);
  ASSERT_EQ(s.schedule().size(), 1u);
  for (JobId id : {103u, 104u}) {
    Request r;
    r.id = id;
    s.submit(r);
  }
  Request old;
  old.id = 101;  // queued before 103 and 104 by a daemon that died
  s.submit_in_order(old);
  EXPECT_EQ(s.position(101), 0);
  EXPECT_EQ(s.position(103), 1);
  s.release(100);
  auto g = s.schedule();
  ASSERT_EQ(g.size(), 1u);
  EXPECT_EQ(g[0].id, 101u);
}


// Backfill into the head's reservation, timed by predicted run times.

Request predicted(JobId id, int ntasks, double seconds) {
  Request r = job(id, ntasks);
  r.predicted_s = seconds;
  return r;
}

// EASY backfill: nothing may end after the head's shadow (slack 0).
SchedPolicy easy() {
  SchedPolicy p;
  p.backfill_slack = 0;
  return p;
}

// The 2-core example: A runs on one core, H needs both, J fits in the other.
struct TwoCores {
  Scheduler s{machine(2), {}};
  explicit TwoCores(double a_predicted_s, SchedPolicy policy = {}) : s(machine(2), policy) {
    s.submit(predicted(1, 1, a_predicted_s));
    EXPECT_EQ(ids_of(s.schedule(0)), Ids{1});
    s.submit(job(2, 2));  // H: the head, waits for A
  }
};

TEST(SchedulerBackfill, ShortJobTakesTheCoreTheWideHeadWaitsFor) {
  TwoCores t(10);
  t.s.submit(predicted(3, 1, 1));
  std::vector<Grant> g = t.s.schedule(1);
  ASSERT_EQ(ids_of(g), Ids{3});  // 1 + 2 x 1 <= 10: it ends before H could start
  EXPECT_TRUE(g[0].backfilled);
  EXPECT_EQ(t.s.position(2), 0);
  t.s.release(1);
  EXPECT_TRUE(t.s.schedule(2.5).empty()) << "H waits for J now, which is predicted gone by 10";
  t.s.release(3);
  EXPECT_EQ(ids_of(t.s.schedule(3)), Ids{2});
}

TEST(SchedulerBackfill, JobWithoutHistoryIsNotBackfilled) {
  TwoCores t(10);
  t.s.submit(job(3, 1));
  EXPECT_TRUE(t.s.schedule(1).empty());
}

TEST(SchedulerBackfill, JobPredictedToOutlastTheShadowIsNotBackfilled) {
  TwoCores t(10, easy());
  t.s.submit(predicted(3, 1, 9.5));  // 1 + 9.5 > 10: it would delay H
  EXPECT_TRUE(t.s.schedule(1).empty());
  t.s.submit(predicted(4, 1, 9));  // 1 + 9 == 10: just fits
  EXPECT_EQ(ids_of(t.s.schedule(1)), Ids{4});
}

TEST(SchedulerBackfill, SafetyTwoLeavesRoomForA2xError) {
  SchedPolicy p = easy();
  p.backfill_safety = 2;
  TwoCores t(10, p);
  t.s.submit(predicted(3, 1, 4.6));  // 1 + 2 x 4.6 > 10: with a 2x error it would delay H
  EXPECT_TRUE(t.s.schedule(1).empty());
  t.s.submit(predicted(4, 1, 4.5));  // 1 + 2 x 4.5 == 10: just fits
  EXPECT_EQ(ids_of(t.s.schedule(1)), Ids{4});
}

TEST(SchedulerBackfill, SlackLetsAJobEndAfterTheShadowButByTheDeadline) {
  TwoCores t(10);  // slack 1: H's deadline is 1 + (1 + 1) x (10 - 1) = 19
  t.s.submit(predicted(3, 1, 18.5));  // 1 + 18.5 > 19
  EXPECT_TRUE(t.s.schedule(1).empty());
  t.s.submit(predicted(4, 1, 18));  // 1 + 18 == 19: it delays H by 9 at most
  std::vector<Grant> g = t.s.schedule(1);
  ASSERT_EQ(ids_of(g), Ids{4});
  EXPECT_TRUE(g[0].backfilled);
  EXPECT_DOUBLE_EQ(t.s.deadline_of(2), 19);
  EXPECT_EQ(t.s.deadline_of(4), -1) << "not the head";
  t.s.release(1);
  t.s.release(4);
  EXPECT_EQ(ids_of(t.s.schedule(2)), Ids{2});
  EXPECT_EQ(t.s.deadline_of(2), -1) << "granted: no deadline any more";
}

TEST(SchedulerBackfill, TheDeadlineNeverMoves) {
  TwoCores t(10);
  t.s.submit(predicted(3, 1, 18));  // ends by 19, H's deadline
  EXPECT_EQ(ids_of(t.s.schedule(1)), Ids{3});
  t.s.release(1);
  // H's shadow is 19 now; a deadline recomputed from it would be 19 + 9 = 28
  // and admit this one, and then the next, and H would wait for ever.
  t.s.submit(predicted(4, 1, 9.5));  // 10 + 9.5 > 19
  EXPECT_TRUE(t.s.schedule(10).empty());
  t.s.submit(predicted(5, 1, 9));  // 10 + 9 == 19
  EXPECT_EQ(ids_of(t.s.schedule(10)), Ids{5});
  t.s.release(3);
  t.s.release(5);
  EXPECT_EQ(ids_of(t.s.schedule(19)), (Ids{2})) << "H starts at its deadline";
}

TEST(SchedulerBackfill, EachHeadGetsItsOwnDeadline) {
  Scheduler s(machine(3), {});
  s.submit(predicted(1, 1, 10));
  s.submit(predicted(2, 1, 100));
  EXPECT_EQ(ids_of(s.schedule(0)), (Ids{1, 2}));
  s.submit(job(3, 2));  // H1: shadow 10
  s.submit(predicted(4, 1, 1));
  EXPECT_EQ(ids_of(s.schedule(1)), Ids{4});  // times H1: deadline 1 + 2 x 9 = 19
  s.release(4);
  s.release(1);
  EXPECT_EQ(ids_of(s.schedule(2)), Ids{3});
  s.predict(3, 2, 50);
  s.submit(job(5, 2));  // H2: waits for H1, predicted to end at 52
  s.release(2);
  s.submit(predicted(6, 1, 60));  // 10 + 60 > 19, H1's deadline, but H2's is 10 + 2 x 42 = 94
  std::vector<Grant> g = s.schedule(10);
  ASSERT_EQ(ids_of(g), Ids{6});
  EXPECT_TRUE(g[0].backfilled);
}

TEST(SchedulerBackfill, SlackOutsideItsRangeIsRefused) {
  SchedPolicy p;
  p.backfill_slack = -0.5;
  EXPECT_THROW(Scheduler(machine(2), p), Error);
  p.backfill_slack = kMaxBackfillSlack + 1;
  EXPECT_THROW(Scheduler(machine(2), p), Error);
}

TEST(SchedulerBackfill, BlockerWithoutPredictionForbidsBackfill) {
  TwoCores t(-1);
  t.s.submit(predicted(3, 1, 0.001));
  EXPECT_TRUE(t.s.schedule(1).empty()) << "H's start cannot be timed";
}

TEST(SchedulerBackfill, OverdueBlockerMayEndAnyMoment) {
  TwoCores t(10);
  t.s.submit(predicted(3, 1, 1));
  EXPECT_TRUE(t.s.schedule(12).empty()) << "A is predicted to end now, so H's shadow is now";
}

TEST(SchedulerBackfill, OffByPolicy) {
  SchedPolicy off;
  off.backfill = false;
  TwoCores t(10, off);
  t.s.submit(predicted(3, 1, 1));
  EXPECT_TRUE(t.s.schedule(1).empty());
}

TEST(SchedulerBackfill, SafetyBelowOneIsRefused) {
  SchedPolicy p;
  p.backfill_safety = 0.5;
  EXPECT_THROW(Scheduler(machine(2), p), Error);
}

TEST(SchedulerBackfill, CandidatesKeepArrivalOrder) {
  TwoCores t(10);
  t.s.submit(predicted(3, 1, 3));
  t.s.submit(predicted(4, 1, 1));
  EXPECT_EQ(ids_of(t.s.schedule(1)), Ids{3}) << "the older candidate first, though longer";
}

TEST(SchedulerBackfill, ShadowIsWhenEnoughIsPredictedFree) {
  Scheduler s(machine(3), easy());
  s.submit(predicted(1, 1, 10));
  s.submit(predicted(2, 1, 20));
  EXPECT_EQ(ids_of(s.schedule(0)), (Ids{1, 2}));
  s.submit(job(3, 2));  // needs A's core: shadow 10
  s.submit(predicted(4, 1, 15));
  EXPECT_TRUE(s.schedule(1).empty()) << "1 + 15 > 10";
  s.cancel(3);
  s.cancel(4);
  s.submit(job(5, 3));  // needs both: shadow 20
  s.submit(predicted(6, 1, 15));
  EXPECT_EQ(ids_of(s.schedule(1)), Ids{6});
}

TEST(SchedulerBackfill, ExclusiveHeadWaitsForTheWholeSet) {
  Scheduler s(machine(2), {});
  s.submit(predicted(1, 1, 10));
  EXPECT_EQ(ids_of(s.schedule(0)), Ids{1});
  s.submit(job(2, 3));  // wider than the set: needs every slot
  s.submit(predicted(3, 1, 2));
  s.submit(predicted(4, 1, 20));
  EXPECT_EQ(ids_of(s.schedule(1)), Ids{3});
  s.release(1);
  s.release(3);
  std::vector<Grant> g = s.schedule(5);
  ASSERT_EQ(ids_of(g), Ids{2});
  EXPECT_TRUE(g[0].exclusive);
}

TEST(SchedulerBackfill, AdoptedGrantIsTimedByPredict) {
  Scheduler s(machine(2), {});
  s.adopt(Grant{1, {{0, 0}}, {}, false});  // a lane slot's stand-in
  s.submit(job(2, 2));
  s.submit(predicted(3, 1, 1));
  EXPECT_TRUE(s.schedule(1).empty()) << "an adopted grant has no prediction";
  s.predict(1, 0, 10);
  EXPECT_EQ(ids_of(s.schedule(1)), Ids{3});
}

TEST(SchedulerBackfill, GpusAreReservedAndLentLikeSlots) {
  Scheduler s(machine(4, 1, 0, gpus_on({0, 0})), easy());
  Request a = job(1, 1, 1, 1);
  a.predicted_s = 10;
  EXPECT_EQ(ids_of((s.submit(a), s.schedule(0))), Ids{1});
  s.submit(job(2, 1, 1, 2));  // H: both GPUs, one is A's
  Request long_gpu = job(3, 1, 1, 1);
  long_gpu.predicted_s = 9.5;  // 1 + 9.5 > 10
  Request short_gpu = job(4, 1, 1, 1);
  short_gpu.predicted_s = 8;
  s.submit(long_gpu);
  s.submit(short_gpu);
  s.submit(job(5, 1));  // no GPU, no history: spare cores beyond H's one
  std::vector<Grant> g = s.schedule(1);
  ASSERT_EQ(ids_of(g), (Ids{4, 5}));
  EXPECT_TRUE(g[0].backfilled);
  EXPECT_FALSE(g[1].backfilled);
  EXPECT_EQ(g[0].gpus.size(), 1u);
}

}  // namespace
}  // namespace jiffy
