#include "launch/history_journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

namespace jiffy {
namespace {

TEST(HistoryJournal, LabelIsTheVariableElseARunDirectory) {
  EXPECT_EQ(history_label("mine", "/x/runex1_2"), "mine");
  EXPECT_EQ(history_label("", "/x/runex1_2"), "runex1_2");
  EXPECT_EQ(history_label(nullptr, "/x/runex1_2"), "runex1_2");
  EXPECT_EQ(history_label(nullptr, "/x/src"), "");
  EXPECT_EQ(history_label(nullptr, "/run/x"), "");
  EXPECT_EQ(history_label(nullptr, ""), "");
}

TEST(HistoryJournal, CoresAndGpusPerRank) {
  JobGrant g;
  g.ranks = {RankGrant{{0, 1}, {0, 1}, {"GPU-a", "GPU-b"}}, RankGrant{{2, 3}, {2, 3}, {"GPU-c"}}};
  EXPECT_EQ(rank_core_lists(g), "0-1;2-3");
  EXPECT_EQ(rank_gpu_lists(g), "GPU-a,GPU-b;GPU-c");
  g.ranks = {RankGrant{{0}, {0}, {}}, RankGrant{{1}, {1}, {}}};
  EXPECT_EQ(rank_core_lists(g), "0;1");
  EXPECT_EQ(rank_gpu_lists(g), "");
}

TEST(HistoryJournal, SharedCoresMarkTheJobOversubscribed) {
  LaunchOptions opt;
  opt.apps.resize(1);
  opt.apps[0].ntasks = 2;
  LaunchHistory h(opt, "prog", 1);
  JobGrant g;
  g.id = 7;
  g.ranks = {RankGrant{{0}, {0, 1}, {}}, RankGrant{{0}, {0, 1}, {}}};
  h.granted(g);
  history::Row r = h.row(0);
  EXPECT_EQ(r.job, 7u);
  EXPECT_EQ(r.ntasks, 2);
  EXPECT_EQ(r.ngroups, 1);
  EXPECT_NE(r.flags & JIFFY_HISTORY_OVERSUBSCRIBED, 0u);
  EXPECT_EQ(r.cores, "0;0");
  EXPECT_EQ(r.outcome, JIFFY_OUTCOME_EXITED);
  EXPECT_EQ(r.tag.size(), 32u);  // made up: a record always has a key
}

TEST(HistoryJournal, HandOverKeepsTheFrontsTimesAndTag) {
  LaunchOptions opt;
  opt.apps.resize(1);
  opt.apps[0].ntasks = 1;
  LaunchHistory h(opt, "prog", 999);
  Handoff hand;
  hand.submit_ns = 100;
  hand.start_ns = 200;
  hand.tag = "0123456789abcdef0123456789abcdef";
  hand.lane = true;
  h.handed_over(hand);
  h.ended({JIFFY_OUTCOME_SIGNALED, 11});
  history::Row r = h.row(139);
  EXPECT_EQ(r.submit_ns, 100);
  EXPECT_EQ(r.start_ns, 200);
  EXPECT_EQ(r.tag, hand.tag);
  EXPECT_EQ(r.flags & (JIFFY_HISTORY_LANE | JIFFY_HISTORY_HANDED_OVER),
            static_cast<std::uint32_t>(JIFFY_HISTORY_LANE | JIFFY_HISTORY_HANDED_OVER));
  EXPECT_EQ(r.outcome, JIFFY_OUTCOME_SIGNALED);
  EXPECT_EQ(r.signal, 11);
  EXPECT_EQ(r.exit_code, 139);
}

TEST(HistoryJournal, RefusalBeforeRunningHasNoStartAndOneLineReason) {
  LaunchOptions opt;
  opt.apps.resize(1);
  opt.apps[0].ntasks = 1;
  LaunchHistory h(opt, "nope", 5);
  h.failed("first\nsecond");
  history::Row r = h.row(1);
  EXPECT_EQ(r.outcome, JIFFY_OUTCOME_REFUSED);
  EXPECT_EQ(r.reason, "first second");
  EXPECT_EQ(r.start_ns, 0);
}

TEST(HistoryJournal, SlurmStepSetsStepNodesAndTheFlag) {
  LaunchOptions opt;
  opt.apps.resize(1);
  opt.apps[0].ntasks = 2;
  LaunchHistory h(opt, "prog", 1);
  EXPECT_EQ(h.row(0).flags & JIFFY_HISTORY_SLURM, 0u);
  h.slurm_step("12.3", "n[1-2]");
  history::Row r = h.row(0);
  EXPECT_EQ(r.step, "12.3");
  EXPECT_EQ(r.nodes, "n[1-2]");
  EXPECT_NE(r.flags & JIFFY_HISTORY_SLURM, 0u);
  h.slurm_step("", "");  // a step over before jiffy learnt its id
  r = h.row(0);
  EXPECT_EQ(r.step, "");
  EXPECT_EQ(r.nodes, "");
  EXPECT_NE(r.flags & JIFFY_HISTORY_SLURM, 0u);
}

TEST(HistoryJournal, AppendedRecordsReadBack) {
  char dir[] = "/tmp/jiffy-hist-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  std::string path = std::string(dir) + "/k.history";
  history::Row row;
  row.tag = "00112233445566778899aabbccddeeff";
  row.command = "prog a b";
  ASSERT_TRUE(append_history_record(path, row));
  row.tag = "ffeeddccbbaa99887766554433221100";
  ASSERT_TRUE(append_history_record(path, row));
  int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  jiffy_history_record rec[3];
  ASSERT_EQ(::read(fd, rec, sizeof rec), static_cast<ssize_t>(2 * sizeof rec[0]));
  ::close(fd);
  auto a = history::from_record(rec[0]), b = history::from_record(rec[1]);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->tag, "00112233445566778899aabbccddeeff");
  EXPECT_EQ(b->tag, "ffeeddccbbaa99887766554433221100");
  EXPECT_EQ(b->command, "prog a b");
  ::unlink(path.c_str());
  ::rmdir(dir);
}

}  // namespace
}  // namespace jiffy
