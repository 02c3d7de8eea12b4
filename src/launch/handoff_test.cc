#include "launch/handoff.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "util/error.h"

namespace jiffy {
namespace {

TEST(Handoff, Ticket) {
  Handoff h = parse_handoff("v=1 ticket=42");
  EXPECT_FALSE(h.running);
  EXPECT_EQ(h.ticket, 42u);
  EXPECT_EQ(h.submit_ns, 0);
  EXPECT_EQ(parse_handoff("v=1 ticket=42 submit=17").submit_ns, 17);
}

TEST(Handoff, RendezvousSocket) {
  Handoff h = parse_handoff("v=1 daemon=4 cpus=0 tag=ab pgid=100 ranks=100:6:0 pmix=9 grant={}");
  EXPECT_EQ(h.pmix_fd, 9);
  EXPECT_EQ(parse_handoff("v=1 daemon=4 cpus=0 tag=ab pgid=100 ranks=100:6:0 grant={}").pmix_fd, -1);
  EXPECT_THROW(parse_handoff("v=1 daemon=4 cpus=0 tag=ab pgid=100 ranks=100:6:0 pmix=x grant={}"), Error);
}

TEST(Handoff, TimesAndLaneForTheHistory) {
  Handoff h = parse_handoff(
      "v=1 daemon=4 cpus=0 tag=ab pgid=100 ranks=100:6:0 submit=1700000000000000001 "
      "start=1700000000000000002 lane=1 lanefd=7 grant={}");
  EXPECT_EQ(h.submit_ns, 1700000000000000001LL);
  EXPECT_EQ(h.start_ns, 1700000000000000002LL);
  EXPECT_TRUE(h.lane);
  EXPECT_EQ(h.lane_fd, 7);
  Handoff old = parse_handoff("v=1 daemon=4 cpus=0 tag=ab pgid=100 ranks=100:6:0 grant={}");
  EXPECT_EQ(old.submit_ns, 0);
  EXPECT_EQ(old.start_ns, 0);
  EXPECT_FALSE(old.lane);
  EXPECT_EQ(old.lane_fd, -1);
  EXPECT_THROW(parse_handoff("v=1 daemon=4 cpus=0 tag=ab pgid=100 ranks=100:6:0 lanefd=-3 grant={}"), Error);
  EXPECT_THROW(parse_handoff("v=1 daemon=4 cpus=0 tag=ab pgid=100 ranks=100:6:0 submit=x grant={}"), Error);
  EXPECT_THROW(parse_handoff("v=1 daemon=4 cpus=0 tag=ab pgid=100 ranks=100:6:0 lane=2 grant={}"), Error);
}

TEST(Handoff, DeadlineOfTheTimeoutCarriesOver) {
  Handoff h = parse_handoff("v=1 daemon=4 cpus=0 tag=ab pgid=100 ranks=100:6:0 deadline=123456789012 grant={}");
  EXPECT_EQ(h.deadline_ns, 123456789012LL);
  EXPECT_EQ(parse_handoff("v=1 daemon=4 cpus=0 tag=ab pgid=100 ranks=100:6:0 grant={}").deadline_ns, 0);
  for (const char* bad : {"deadline=0", "deadline=-5", "deadline=x", "deadline=", "deadline=1.5"}) {
    EXPECT_THROW(parse_handoff(std::string("v=1 daemon=4 cpus=0 tag=ab pgid=100 ranks=100:6:0 ") + bad +
                               " grant={}"),
                 Error)
        << bad;
  }
}

TEST(Handoff, RunningJob) {
  Handoff h = parse_handoff(
      "v=1 daemon=4 cpus=0-2,5 tag=ab12 pgid=100 ranks=100:6:1,101:-1:0 "
      "grant={\"job\":3,\"ranks\":[{\"cores\":[0]}],\"type\":\"grant\",\"x\":\"a b\"}");
  EXPECT_TRUE(h.running);
  EXPECT_EQ(h.daemon_fd, 4);
  EXPECT_EQ(h.cpus, (std::vector<int>{0, 1, 2, 5}));
  EXPECT_EQ(h.tag, "ab12");
  EXPECT_EQ(h.pgid, 100);
  ASSERT_EQ(h.ranks.size(), 2u);
  EXPECT_EQ(h.ranks[0].pid, 100);
  EXPECT_EQ(h.ranks[0].pmi_fd, 6);
  EXPECT_TRUE(h.ranks[0].done);
  EXPECT_EQ(h.ranks[1].pmi_fd, -1);
  EXPECT_FALSE(h.ranks[1].done);
  EXPECT_EQ(h.grant, "{\"job\":3,\"ranks\":[{\"cores\":[0]}],\"type\":\"grant\",\"x\":\"a b\"}");
}

TEST(Handoff, RejectsMalformed) {
  for (const char* bad : {"", "v=2 ticket=1", "ticket=1", "v=1 ticket=x", "v=1 ticket=0",
                          "v=1 bogus=1", "v=1 daemon=4 cpus=0 tag=a pgid=100 grant={}",
                          "v=1 daemon=4 cpus=0 tag=a pgid=100 ranks=101:6:0 grant={}",
                          "v=1 daemon=4 cpus=0 tag=a pgid=100 ranks=100:6 grant={}",
                          "v=1 daemon=4 cpus=3-1 tag=a pgid=100 ranks=100:6:0 grant={}",
                          "v=1 daemon=4 cpus=0 tag=a pgid=100 ranks=100:6:2 grant={}",
                          "v=1 daemon=4 cpus=0 tag=a pgid=100 ranks=100:6:0"}) {
    EXPECT_THROW(parse_handoff(bad), Error) << bad;
  }
}

// The state comes in the environment and leaves it at once: no child of the
// launcher may inherit the job's tag.
TEST(Handoff, StateIsTakenOutOfTheEnvironment) {
  ::setenv(kHandoffVar, "v=1 ticket=7", 1);
  std::optional<std::string> state = take_handoff_state();
  ASSERT_TRUE(state.has_value());
  EXPECT_EQ(*state, "v=1 ticket=7");
  EXPECT_EQ(std::getenv(kHandoffVar), nullptr);
  EXPECT_FALSE(take_handoff_state().has_value());
}

}  // namespace
}  // namespace jiffy
