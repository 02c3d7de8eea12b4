#include "history/row.h"

#include <gtest/gtest.h>

#include <cstring>

namespace jiffy::history {
namespace {

Row sample() {
  Row row;
  row.tag = "0123456789abcdef0123456789abcdef";
  row.job = 7;
  row.ntasks = 2;
  row.exit_code = 0;
  row.submit_ns = 1'000'000'000;
  row.start_ns = 1'500'000'000;
  row.end_ns = 3'000'000'000;
  row.command = "./ex1 -n 3";
  row.cores = "0;1-2";
  row.gpus = "a;b,c";
  row.flags = JIFFY_HISTORY_LANE;
  return row;
}

TEST(HistoryRow, RecordRoundTrips) {
  jiffy_history_record r = to_record(sample());
  auto row = from_record(r);
  ASSERT_TRUE(row);
  EXPECT_EQ(row->tag, sample().tag);
  EXPECT_EQ(row->cores, "0;1-2");
  EXPECT_EQ(row->job, 7u);
}

TEST(HistoryRow, SlurmStepRoundTripsAndOlderRecordsHaveNone) {
  Row slurm = sample();
  slurm.cores = "";
  slurm.gpus = "";
  slurm.step = "312.4";
  slurm.nodes = "n[1-2]";
  slurm.flags = JIFFY_HISTORY_SLURM;
  auto row = from_record(to_record(slurm));
  ASSERT_TRUE(row);
  EXPECT_EQ(row->step, "312.4");
  EXPECT_EQ(row->nodes, "n[1-2]");
  proto::Json j = to_json(*row);
  EXPECT_EQ(j["step"], "312.4");
  EXPECT_EQ(j["nodes"], "n[1-2]");
  EXPECT_TRUE(j["slurm"].get<bool>());
  // A record from before the fields (zeros where they are): "".
  auto old = from_record(to_record(sample()));
  ASSERT_TRUE(old);
  EXPECT_EQ(old->step, "");
  EXPECT_FALSE(to_json(*old)["slurm"].get<bool>());
}

TEST(HistoryRow, DamagedRecordIsRejected) {
  jiffy_history_record r = to_record(sample());
  r.command[3] ^= 1;
  EXPECT_FALSE(from_record(r));
  r = to_record(sample());
  std::memset(r.cwd, 'x', sizeof r.cwd);  // not terminated, checksum fixed up
  r.checksum = jiffy_history_checksum(&r);
  EXPECT_FALSE(from_record(r));
  r = to_record(sample());
  r.outcome = 99;
  r.checksum = jiffy_history_checksum(&r);
  EXPECT_FALSE(from_record(r));
}

TEST(HistoryRow, LongFieldsAreCutAndFlagged) {
  Row row = sample();
  row.cwd = std::string(5000, 'd');
  auto back = from_record(to_record(row));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->cwd.size(), sizeof(jiffy_history_record::cwd) - 1);
  EXPECT_TRUE(back->flags & JIFFY_HISTORY_TRUNCATED);
}

TEST(HistoryRow, LongStepAndNodesAreCutAndFlagged) {
  Row row = sample();
  row.flags = 0;
  row.step = std::string(100, '9');
  auto back = from_record(to_record(row));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->step.size(), sizeof(jiffy_history_record::step) - 1);
  EXPECT_TRUE(back->flags & JIFFY_HISTORY_TRUNCATED);
  row.step = "1.0";
  row.nodes = std::string(1000, 'n');
  back = from_record(to_record(row));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->step, "1.0");
  EXPECT_EQ(back->nodes.size(), sizeof(jiffy_history_record::nodes) - 1);
  EXPECT_TRUE(back->flags & JIFFY_HISTORY_TRUNCATED);
}

TEST(HistoryRow, UnterminatedStepOrNodesIsRejected) {
  jiffy_history_record r = to_record(sample());
  std::memset(r.step, '1', sizeof r.step);
  r.checksum = jiffy_history_checksum(&r);
  EXPECT_FALSE(from_record(r));
  r = to_record(sample());
  std::memset(r.nodes, 'n', sizeof r.nodes);
  r.checksum = jiffy_history_checksum(&r);
  EXPECT_FALSE(from_record(r));
}

TEST(HistoryRow, JsonHasTheDocumentedFields) {
  proto::Json j = to_json(sample());
  EXPECT_EQ(j["outcome"], "ok");
  EXPECT_EQ(j["cores"], proto::Json::parse("[[0],[1,2]]"));
  EXPECT_EQ(j["gpus"], proto::Json::parse("[[\"a\"],[\"b\",\"c\"]]"));
  EXPECT_DOUBLE_EQ(j["wait_s"].get<double>(), 0.5);
  EXPECT_TRUE(j["lane"].get<bool>());
  Row lost = sample();
  lost.outcome = JIFFY_OUTCOME_LOST;
  lost.start_ns = 0;
  proto::Json k = to_json(lost);
  EXPECT_TRUE(k["exit_code"].is_null());
  EXPECT_TRUE(k["start"].is_null());
}

}  // namespace
}  // namespace jiffy::history
