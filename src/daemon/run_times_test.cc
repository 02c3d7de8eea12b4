#include "daemon/run_times.h"

#include <gtest/gtest.h>

#include <string>

namespace jiffy {
namespace {

RunTime run(const std::string& command, double seconds, int ntasks = 1, const std::string& cwd = "/w") {
  return RunTime{cwd, command, ntasks, seconds};
}

TEST(RunTimes, UnknownCommandHasNoPrediction) {
  RunTimes t;
  EXPECT_EQ(t.predict("/w", "./test", 1), -1);
}

TEST(RunTimes, PredictsTheLongestOfTheRecentRuns) {
  RunTimes t;
  t.add(run("./test", 0.2));
  t.add(run("./test", 0.5));
  t.add(run("./test", 0.3));
  EXPECT_FLOAT_EQ(t.predict("/w", "./test", 1), 0.5f);
}

TEST(RunTimes, ForgetsRunsOlderThanTheLastFew) {
  RunTimes t;
  t.add(run("./test", 9));
  for (std::size_t i = 0; i < RunTimes::kKept; ++i) t.add(run("./test", 1));
  EXPECT_FLOAT_EQ(t.predict("/w", "./test", 1), 1.0f);
}

TEST(RunTimes, KeyedByDirectoryCommandAndRanks) {
  RunTimes t;
  t.add(run("./test", 1, 2, "/a"));
  EXPECT_EQ(t.predict("/b", "./test", 2), -1);
  EXPECT_EQ(t.predict("/a", "./test", 1), -1);
  EXPECT_EQ(t.predict("/a", "./other", 2), -1);
  EXPECT_FLOAT_EQ(t.predict("/a", "./test", 2), 1.0f);
}

TEST(RunTimes, ForgetsTheLeastRecentlyRunKeyPastItsCap) {
  RunTimes t(2);
  t.add(run("a", 1));
  t.add(run("b", 1));
  t.add(run("a", 1));  // a is now the most recent
  t.add(run("c", 1));
  EXPECT_EQ(t.size(), 2u);
  EXPECT_EQ(t.predict("/w", "b", 1), -1);
  EXPECT_GE(t.predict("/w", "a", 1), 0);
  EXPECT_GE(t.predict("/w", "c", 1), 0);
}

TEST(RunTimes, LearnsOnlyFromRunsThatExitedZero) {
  history::Row r;
  r.cwd = "/w";
  r.command = "./test";
  r.ntasks = 2;
  r.start_ns = 1'000'000'000;
  r.end_ns = 1'250'000'000;
  std::optional<RunTime> ok = run_time_of(r);
  ASSERT_TRUE(ok);
  EXPECT_DOUBLE_EQ(ok->seconds, 0.25);
  EXPECT_EQ(ok->ntasks, 2);
  r.exit_code = 1;
  EXPECT_FALSE(run_time_of(r));
  r.exit_code = 0;
  r.outcome = JIFFY_OUTCOME_SIGNALED;
  EXPECT_FALSE(run_time_of(r));
  r.outcome = JIFFY_OUTCOME_EXITED;
  r.start_ns = 0;  // never ran (refused)
  EXPECT_FALSE(run_time_of(r));
}

}  // namespace
}  // namespace jiffy
