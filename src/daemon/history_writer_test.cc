#include "daemon/history_writer.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <ctime>
#include <fstream>
#include <mutex>

#include "util/sys.h"

namespace jiffy {
namespace {

using history::Row;

class HistoryWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/jiffy-hw-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    cfg_.journal = dir_ + "/k.history";
    cfg_.db_path = dir_ + "/state/history.db";
    cfg_.cores = 4;
    cfg_.identity = "test";
    cfg_.log = [this](const std::string& line) {
      std::lock_guard<std::mutex> lk(log_mu_);
      log_.push_back(line);
    };
  }
  void TearDown() override { remove_tree(dir_); }

  static Row row(const std::string& tag, int source = JIFFY_HISTORY_FROM_LAUNCHER) {
    Row r;
    r.tag = tag;
    r.source = source;
    r.outcome = source == JIFFY_HISTORY_FROM_DAEMON ? JIFFY_OUTCOME_LOST : JIFFY_OUTCOME_EXITED;
    r.ntasks = 1;
    timespec ts;
    ::clock_gettime(CLOCK_REALTIME, &ts);
    r.end_ns = static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000;  // recent: retention keeps it
    r.start_ns = r.end_ns - 2'000'000'000;
    r.cores = "0";
    return r;
  }

  void append(const std::vector<Row>& rows) {
    int fd = ::open(cfg_.journal.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0600);
    ASSERT_GE(fd, 0);
    for (const Row& r : rows) {
      jiffy_history_record rec = history::to_record(r);
      ASSERT_EQ(::write(fd, &rec, sizeof rec), static_cast<ssize_t>(sizeof rec));
    }
    ::close(fd);
  }

  // Bytes of records waiting: in the journal and in the staging file the
  // thread moves them to (<journal>.ingest). -1: neither exists.
  off_t journal_size() {
    struct stat st;
    off_t total = -1;
    for (const std::string& p : {cfg_.journal, cfg_.journal + ".ingest"}) {
      if (::stat(p.c_str(), &st) == 0) total = std::max<off_t>(total, 0) + st.st_size;
    }
    return total;
  }

  // Asks and waits (bounded) for the answer.
  void ask_and_wait(HistoryService& h, std::uint64_t token) {
    h.ask(token);
    std::vector<std::uint64_t> got;
    double deadline = now_s() + 10;
    while (got.empty() && now_s() < deadline) {
      pollfd p{h.done_fd(), POLLIN, 0};
      ::poll(&p, 1, 100);
      for (std::uint64_t t : h.completed()) got.push_back(t);
    }
    ASSERT_EQ(got, std::vector<std::uint64_t>{token});
  }

  std::size_t log_lines_with(const std::string& needle) {
    std::lock_guard<std::mutex> lk(log_mu_);
    std::size_t n = 0;
    for (const auto& l : log_) n += l.find(needle) != std::string::npos;
    return n;
  }

  std::string dir_;
  HistoryWriterConfig cfg_;
  std::mutex log_mu_;
  std::vector<std::string> log_;
};

TEST_F(HistoryWriterTest, AskIngestsTheJournalOnceAndEmptiesIt) {
  append({row("a"), row("b"), row("a")});
  auto h = start_history_writer(cfg_);
  ask_and_wait(*h, 7);
  EXPECT_EQ(journal_size(), 0);
  history::Db db(cfg_.db_path);
  EXPECT_EQ(db.count(), 2);
  proto::Json st = h->state_json();
  EXPECT_EQ(st["error"], "");
  EXPECT_EQ(st["pending"], 0);
  EXPECT_EQ(st["db"], cfg_.db_path);
  EXPECT_EQ(h->totals_json()["jobs"], 2);
  EXPECT_EQ(h->recent_json().size(), 2u);
}

TEST_F(HistoryWriterTest, DaemonRowsAreStoredAndTheLaunchersRowWins) {
  auto h = start_history_writer(cfg_);
  h->record(row("t", JIFFY_HISTORY_FROM_DAEMON));
  ask_and_wait(*h, 1);
  EXPECT_EQ(h->totals_json()["failed"], 1);
  EXPECT_EQ(h->state_json()["pending"], 0);
  append({row("t")});
  ask_and_wait(*h, 2);
  history::Db db(cfg_.db_path);
  ASSERT_EQ(db.count(), 1);
  EXPECT_EQ(db.newest(1)[0].source, JIFFY_HISTORY_FROM_LAUNCHER);
  proto::Json totals = h->totals_json();
  EXPECT_EQ(totals["jobs"], 1);
  EXPECT_EQ(totals["failed"], 0);
  EXPECT_DOUBLE_EQ(totals["core_seconds"].get<double>(), 2.0);
  EXPECT_EQ(h->recent_json().size(), 1u);
}

TEST_F(HistoryWriterTest, RunTimesOfStoredSuccessesAreHandedOverBeforeTheAnswer) {
  Row ok = row("ok");
  ok.command = "./test";
  ok.cwd = "/w";
  Row failed = row("failed");
  failed.exit_code = 1;
  append({ok, failed});
  auto h = start_history_writer(cfg_);
  ask_and_wait(*h, 1);
  std::vector<RunTime> got = h->take_run_times();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].command, "./test");
  EXPECT_EQ(got[0].cwd, "/w");
  EXPECT_DOUBLE_EQ(got[0].seconds, 2.0);
  EXPECT_TRUE(h->take_run_times().empty());
}

TEST_F(HistoryWriterTest, ANewDaemonLearnsRunTimesFromTheDatabase) {
  Row ok = row("ok");
  ok.command = "./test";
  append({ok});
  {
    auto h = start_history_writer(cfg_);
    ask_and_wait(*h, 1);
  }
  auto h = start_history_writer(cfg_);
  ask_and_wait(*h, 2);
  std::vector<RunTime> got = h->take_run_times();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].command, "./test");
  EXPECT_DOUBLE_EQ(got[0].seconds, 2.0);
}

TEST_F(HistoryWriterTest, RecordsArriveWithinAPollPeriodUnasked) {
  cfg_.poll_s = 0.05;
  auto h = start_history_writer(cfg_);
  append({row("x")});
  double deadline = now_s() + 10;
  while (journal_size() != 0 && now_s() < deadline) ::usleep(10000);
  EXPECT_EQ(journal_size(), 0);
}

TEST_F(HistoryWriterTest, UnusableDatabaseKeepsRecordsInTheJournalAndSaysSoOnce) {
  std::ofstream(dir_ + "/state") << "a file where the directory should be";
  append({row("a")});
  auto h = start_history_writer(cfg_);
  h->record(row("lost", JIFFY_HISTORY_FROM_DAEMON));
  ask_and_wait(*h, 1);
  ask_and_wait(*h, 2);
  EXPECT_EQ(journal_size(), 2 * JIFFY_HISTORY_RECORD_SIZE);  // ours joined the launcher's
  proto::Json st = h->state_json();
  EXPECT_NE(st["error"], "");
  EXPECT_EQ(st["pending"], 2);
  EXPECT_EQ(log_lines_with(st["error"].get<std::string>()), 1u);
  // Healed: the next attempt stores both.
  ::unlink((dir_ + "/state").c_str());
  ask_and_wait(*h, 3);
  EXPECT_EQ(h->state_json()["error"], "");
  EXPECT_EQ(journal_size(), 0);
  history::Db db(cfg_.db_path);
  EXPECT_EQ(db.count(), 2);
}

TEST_F(HistoryWriterTest, PastTheCapTheOldestRecordsGo) {
  std::ofstream(dir_ + "/state") << "x";
  cfg_.journal_cap = 8 * JIFFY_HISTORY_RECORD_SIZE;
  std::vector<Row> rows;
  for (int i = 0; i < 20; ++i) rows.push_back(row("r" + std::to_string(i)));
  append(rows);
  auto h = start_history_writer(cfg_);
  ask_and_wait(*h, 1);
  EXPECT_EQ(journal_size(), 4 * JIFFY_HISTORY_RECORD_SIZE);
  EXPECT_EQ(log_lines_with("dropped its oldest 16 record"), 1u);
  ::unlink((dir_ + "/state").c_str());
  ask_and_wait(*h, 2);
  history::Db db(cfg_.db_path);
  std::vector<Row> left = db.newest(10);
  ASSERT_EQ(left.size(), 4u);
  EXPECT_EQ(left.front().tag, "r16");
}

TEST_F(HistoryWriterTest, HistoryOffOnlyEmptiesTheJournal) {
  cfg_.enabled = false;
  append({row("a")});
  auto h = start_history_writer(cfg_);
  ask_and_wait(*h, 1);
  EXPECT_EQ(journal_size(), 0);
  struct stat st;
  EXPECT_NE(::stat(cfg_.db_path.c_str(), &st), 0);
  EXPECT_NE(h->state_json()["error"], "");
}

TEST_F(HistoryWriterTest, AJournalLockedByAWriterIsIngestedOnceItIsLetGo) {
  append({row("a")});
  int fd = ::open(cfg_.journal.c_str(), O_RDONLY);
  ASSERT_EQ(::flock(fd, LOCK_SH), 0);
  auto h = start_history_writer(cfg_);
  h->ask(1);
  pollfd p{h->done_fd(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 200), 0);  // still held: not done
  EXPECT_EQ(journal_size(), JIFFY_HISTORY_RECORD_SIZE);
  ::close(fd);
  std::vector<std::uint64_t> got;
  double deadline = now_s() + 10;
  while (got.empty() && now_s() < deadline) {
    ::poll(&p, 1, 100);
    got = h->completed();
  }
  EXPECT_EQ(got, std::vector<std::uint64_t>{1});
  EXPECT_EQ(journal_size(), 0);
}

TEST_F(HistoryWriterTest, ASymlinkedJournalIsNotFollowed) {
  std::string target = dir_ + "/elsewhere";
  append({});
  ::rename(cfg_.journal.c_str(), target.c_str());
  {
    int fd = ::open(target.c_str(), O_WRONLY | O_APPEND);
    jiffy_history_record rec = history::to_record(row("s"));
    ASSERT_EQ(::write(fd, &rec, sizeof rec), static_cast<ssize_t>(sizeof rec));
    ::close(fd);
  }
  ASSERT_EQ(::symlink(target.c_str(), cfg_.journal.c_str()), 0);
  auto h = start_history_writer(cfg_);
  ask_and_wait(*h, 1);
  struct stat st;
  ASSERT_EQ(::stat(target.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, JIFFY_HISTORY_RECORD_SIZE);  // untouched
  history::Db db(cfg_.db_path);
  EXPECT_EQ(db.count(), 0);
}

TEST_F(HistoryWriterTest, StatusShowsTheNewestTwentyAndCountsEveryJob) {
  std::vector<Row> rows;
  for (int i = 0; i < 30; ++i) rows.push_back(row("r" + std::to_string(i)));
  rows[3].exit_code = 1;
  rows[4].outcome = JIFFY_OUTCOME_TIMED_OUT;
  append(rows);
  auto h = start_history_writer(cfg_);
  ask_and_wait(*h, 1);
  proto::Json recent = h->recent_json();
  ASSERT_EQ(recent.size(), 20u);
  EXPECT_EQ(recent.front()["tag"], "r10");
  EXPECT_EQ(recent.back()["tag"], "r29");
  EXPECT_GT(recent.back()["id"].get<int>(), recent.front()["id"].get<int>());
  proto::Json totals = h->totals_json();
  EXPECT_EQ(totals["jobs"], 30);
  EXPECT_EQ(totals["failed"], 1);
  EXPECT_EQ(totals["timed_out"], 1);
  EXPECT_DOUBLE_EQ(totals["core_seconds"].get<double>(), 60.0);
}

TEST(HistoryCoreSeconds, RunTimeTimesDistinctCores) {
  Row r;
  r.start_ns = 1'000'000'000;
  r.end_ns = 3'000'000'000;
  r.cores = "0-1;2-3";
  EXPECT_DOUBLE_EQ(core_seconds(r), 8.0);
  r.cores = "0;0";
  EXPECT_DOUBLE_EQ(core_seconds(r), 2.0);
  r.start_ns = 0;
  EXPECT_DOUBLE_EQ(core_seconds(r), 0.0);
}

}  // namespace
}  // namespace jiffy
