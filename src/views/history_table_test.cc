#include "views/history_table.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>

namespace jiffy::views {
namespace {

std::size_t columns(const std::string& line) {
  std::size_t n = 0;
  for (unsigned char c : line) n += (c & 0xC0) != 0x80;
  return n;
}

history::Row job(int id, const std::string& command) {
  history::Row r;
  r.id = id;
  r.job = static_cast<std::uint64_t>(id);
  r.tag = std::string(32, 'a');
  r.ntasks = 4;
  r.submit_ns = 1'800'000'000'000'000'000;
  r.start_ns = r.submit_ns + 250'000'000;
  r.end_ns = r.start_ns + 75'000'000'000;
  r.command = command;
  r.label = "runex19_tut_3";
  return r;
}

TEST(HistoryTable, DurationsAreShort) {
  EXPECT_EQ(format_duration(0.25), "0.25s");
  EXPECT_EQ(format_duration(12.4), "12s");
  EXPECT_EQ(format_duration(303), "5m03s");
  EXPECT_EQ(format_duration(7500), "2h05m");
  EXPECT_EQ(format_duration(3 * 86400 + 4 * 3600 + 5), "3d04h");
  EXPECT_EQ(format_duration(-1), "-");
}

TEST(HistoryTable, OutcomesReadAsExitStatus) {
  history::Row r = job(1, "x");
  EXPECT_EQ(outcome_text(r), "ok");
  r.exit_code = 3;
  EXPECT_EQ(outcome_text(r), "exit 3");
  r.outcome = JIFFY_OUTCOME_SIGNALED;
  r.signal = 9;
  EXPECT_EQ(outcome_text(r), "signal 9");
  r.outcome = JIFFY_OUTCOME_TIMED_OUT;
  EXPECT_EQ(outcome_text(r), "timeout");
  r.outcome = JIFFY_OUTCOME_CANCELLED;
  EXPECT_EQ(outcome_text(r), "cancelled");
}

TEST(HistoryTable, LongCommandsAreCutToTheWidth) {
  std::string table =
      render_table({job(1, std::string(300, 'x')), job(2, "./short \xC3\xA9t\xC3\xA9\n")}, 100);
  std::istringstream in(table);
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    ++lines;
    EXPECT_LE(columns(line), 100u) << line;
  }
  EXPECT_EQ(lines, 3);
  EXPECT_NE(table.find("\u2026"), std::string::npos);
  EXPECT_NE(table.find("./short \xC3\xA9t\xC3\xA9"), std::string::npos);
  EXPECT_NE(table.find("1m15s"), std::string::npos);
  EXPECT_NE(table.find("0.25s"), std::string::npos);
  EXPECT_NE(table.find("runex19_tut_3"), std::string::npos);
}

TEST(HistoryTable, LargeJobIdsKeepTheWidth) {
  history::Row r = job(1, std::string(300, 'x'));
  r.job = 1125899906842623;  // kMaxJobId
  std::string table = render_table({r}, 100);
  std::string last = table.substr(table.find('\n') + 1);
  EXPECT_EQ(columns(last), 101u);  // 100 and the newline
}

TEST(HistoryTable, JobsThatNeverRanShowNoTimes) {
  history::Row r = job(1, "./missing");
  r.start_ns = 0;
  r.job = 0;
  r.outcome = JIFFY_OUTCOME_REFUSED;
  std::string table = render_table({r}, 100);
  std::string last = table.substr(table.find('\n') + 1);
  EXPECT_NE(last.find("refused"), std::string::npos);
  EXPECT_NE(last.find("      -       - refused"), std::string::npos) << last;
}

TEST(HistoryTable, ASlurmStepShowsItsIdAsTheJob) {
  history::Row r = job(1, std::string(300, 'x'));
  r.job = 0;
  r.flags = JIFFY_HISTORY_SLURM;
  r.step = "1234567.89";
  r.nodes = "n[1-2]";
  std::string table = render_table({r, job(2, std::string(300, 'y'))}, 100);
  std::istringstream in(table);
  std::string header, slurm, local;
  std::getline(in, header);
  std::getline(in, slurm);
  std::getline(in, local);
  EXPECT_NE(slurm.find(" 1234567.89 "), std::string::npos) << slurm;
  EXPECT_EQ(columns(slurm), 100u) << slurm;
  EXPECT_EQ(columns(local), 100u) << local;
  EXPECT_EQ(header.find("JOB") + 3, slurm.find("1234567.89") + 10) << header << "\n" << slurm;
  r.step = "1.2\nx";  // the journal is not trusted: one line still
  table = render_table({r}, 100);
  EXPECT_EQ(std::count(table.begin(), table.end(), '\n'), 2) << table;
}

TEST(HistoryTable, FitKeepsWholeCharacters) {
  EXPECT_EQ(fit("abcdef", 4), "abc\u2026");
  EXPECT_EQ(fit("\xC3\xA9\xC3\xA9\xC3\xA9", 2), "\xC3\xA9\u2026");
  EXPECT_EQ(fit("a\tb", 10), "a b");
}

}  // namespace
}  // namespace jiffy::views
