#include "history/db.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>

#include "history/schema.h"
#include "util/error.h"
#include "util/sys.h"

namespace jiffy::history {
namespace {

class HistoryDb : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/jiffy-db-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/state/jiffy/history.db";
  }
  void TearDown() override { remove_tree(dir_); }

  static Row row(const std::string& tag, int source = JIFFY_HISTORY_FROM_LAUNCHER,
                 std::int64_t end_ns = 2'000'000'000) {
    Row r;
    r.tag = tag;
    r.source = source;
    r.outcome = source == JIFFY_HISTORY_FROM_DAEMON ? JIFFY_OUTCOME_LOST : JIFFY_OUTCOME_EXITED;
    r.ntasks = 2;
    r.submit_ns = 1'000'000'000;
    r.start_ns = 1'500'000'000;
    r.end_ns = end_ns;
    r.command = "cmd " + tag;
    r.cores = "0;1";
    return r;
  }

  std::string dir_, path_;
};

TEST_F(HistoryDb, OpensCreatingItsDirectoryPrivateWithSchemaVersion) {
  Db db(path_);
  struct stat st;
  ASSERT_EQ(::stat((dir_ + "/state/jiffy").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open_v2(path_.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(raw, "PRAGMA user_version", -1, &s, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(s, 0), kSchemaVersion);
  sqlite3_finalize(s);
  ASSERT_EQ(sqlite3_prepare_v2(raw, "PRAGMA journal_mode", -1, &s, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(s, 0)), "wal");
  sqlite3_finalize(s);
  sqlite3_close(raw);
}

TEST_F(HistoryDb, DefaultPathPrefersXdgStateHome) {
  static std::map<std::string, std::string> env;
  auto get = [](const char* n) -> std::optional<std::string> {
    auto it = env.find(n);
    return it == env.end() ? std::nullopt : std::optional<std::string>(it->second);
  };
  env = {{"XDG_STATE_HOME", "/x/state"}, {"HOME", "/home/u"}};
  EXPECT_EQ(default_db_path(get), "/x/state/jiffy/history.db");
  env = {{"XDG_STATE_HOME", "relative"}, {"HOME", "/home/u"}};
  EXPECT_EQ(default_db_path(get), "/home/u/.local/state/jiffy/history.db");
  env = {};
  EXPECT_NE(default_db_path(get), "");  // from the password database
}

TEST_F(HistoryDb, ACopyChangesNothing) {
  Db db(path_);
  auto first = db.upsert({row("a"), row("b")});
  EXPECT_EQ(first[0].what, Stored::kInserted);
  EXPECT_EQ(first[1].what, Stored::kInserted);
  auto again = db.upsert({row("a"), row("b")});
  EXPECT_EQ(again[0].what, Stored::kUnchanged);
  EXPECT_EQ(again[0].id, first[0].id);
  EXPECT_EQ(db.count(), 2);
}

TEST_F(HistoryDb, LauncherRowReplacesDaemonRowNeverTheReverse) {
  Db db(path_);
  Row lost = row("t", JIFFY_HISTORY_FROM_DAEMON);
  Row told = row("t", JIFFY_HISTORY_FROM_LAUNCHER);
  told.exit_code = 3;
  auto r1 = db.upsert({lost});
  auto r2 = db.upsert({told});
  EXPECT_EQ(r2[0].what, Stored::kReplaced);
  ASSERT_TRUE(r2[0].replaced);
  EXPECT_EQ(r2[0].replaced->outcome, JIFFY_OUTCOME_LOST);
  EXPECT_EQ(r2[0].id, r1[0].id);  // ingestion order kept
  auto r3 = db.upsert({lost});
  EXPECT_EQ(r3[0].what, Stored::kUnchanged);
  std::vector<Row> rows = db.newest(5);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].source, JIFFY_HISTORY_FROM_LAUNCHER);
  EXPECT_EQ(rows[0].exit_code, 3);
}

TEST_F(HistoryDb, OfTwoDaemonRowsTheOneThatKnowsTheLabelWins) {
  Db db(path_);
  Row bare = row("t", JIFFY_HISTORY_FROM_DAEMON);  // from a lane record: no label, no cwd
  Row told = row("t", JIFFY_HISTORY_FROM_DAEMON);  // from the launcher's messages
  told.label = "runex1";
  told.cwd = "/w";
  db.upsert({bare});
  EXPECT_EQ(db.upsert({told})[0].what, Stored::kReplaced);
  EXPECT_EQ(db.upsert({bare})[0].what, Stored::kUnchanged);
  std::vector<Row> rows = db.newest(5);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].label, "runex1");
  EXPECT_EQ(rows[0].cwd, "/w");
}

TEST_F(HistoryDb, DuplicateInOneBatchIsStoredOnce) {
  Db db(path_);
  auto r = db.upsert({row("a"), row("a")});
  EXPECT_EQ(r[0].what, Stored::kInserted);
  EXPECT_EQ(r[1].what, Stored::kUnchanged);
  EXPECT_EQ(db.count(), 1);
}

TEST_F(HistoryDb, RowsRoundTrip) {
  Db db(path_);
  Row r = row("rt");
  r.job = 1ULL << 40;
  r.label = "runex1_2";
  r.cwd = "/home/u/petsc";
  r.gpus = "a;b";
  r.reason = "why";
  r.flags = JIFFY_HISTORY_LANE | JIFFY_HISTORY_SLURM;
  r.step = "312.4";
  r.nodes = "n[1-2]";
  db.upsert({r});
  Row got = db.newest(1).at(0);
  EXPECT_EQ(got.step, "312.4");
  EXPECT_EQ(got.nodes, "n[1-2]");
  EXPECT_EQ(got.job, r.job);
  EXPECT_EQ(got.label, r.label);
  EXPECT_EQ(got.cwd, r.cwd);
  EXPECT_EQ(got.cores, r.cores);
  EXPECT_EQ(got.gpus, r.gpus);
  EXPECT_EQ(got.reason, r.reason);
  EXPECT_EQ(got.flags, r.flags);
  EXPECT_EQ(got.end_ns, r.end_ns);
}

// A database of schema 1 (no step, no nodes) keeps its rows and gains the
// columns when a daemon opens it.
TEST_F(HistoryDb, ASchemaOneDatabaseIsMigrated) {
  { Db make_dirs_first(path_); }
  std::remove(path_.c_str());
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &raw), SQLITE_OK);
  const char* v1 =
      "CREATE TABLE jobs (id INTEGER PRIMARY KEY, tag TEXT NOT NULL UNIQUE, job INTEGER NOT NULL, "
      "source INTEGER NOT NULL, outcome INTEGER NOT NULL, exit_code INTEGER NOT NULL, signal INTEGER "
      "NOT NULL, pid INTEGER NOT NULL, ntasks INTEGER NOT NULL, ngroups INTEGER NOT NULL, flags "
      "INTEGER NOT NULL, submit_ns INTEGER NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER NOT "
      "NULL, user_us INTEGER NOT NULL, sys_us INTEGER NOT NULL, maxrss_kb INTEGER NOT NULL, label "
      "TEXT NOT NULL, command TEXT NOT NULL, cwd TEXT NOT NULL, cores TEXT NOT NULL, gpus TEXT NOT "
      "NULL, reason TEXT NOT NULL);"
      "INSERT INTO jobs VALUES (1, 'old', 3, 2, 1, 0, 0, 9, 2, 1, 0, 1000000000, 1500000000, "
      "2000000000, 0, 0, 0, '', './old', '/w', '0;1', '', '');"
      "PRAGMA user_version=1;";
  ASSERT_EQ(sqlite3_exec(raw, v1, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(raw);
  sqlite3_close(raw);
  Db db(path_);
  Row r = row("new");
  r.step = "7.0";
  r.nodes = "n1";
  db.upsert({r});
  std::vector<Row> rows = db.newest(2);
  ASSERT_EQ(rows.size(), 2u);
  std::map<std::string, Row> by_tag;
  for (const Row& x : rows) by_tag[x.tag] = x;
  EXPECT_EQ(by_tag["old"].command, "./old");
  EXPECT_EQ(by_tag["old"].step, "");
  EXPECT_EQ(by_tag["new"].step, "7.0");
  EXPECT_EQ(by_tag["new"].nodes, "n1");
  // Migrated for good: version 2, and a second open changes nothing.
  ASSERT_EQ(sqlite3_open(path_.c_str(), &raw), SQLITE_OK);
  auto scalar = [&](const char* sql) {
    sqlite3_stmt* s = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(raw, sql, -1, &s, nullptr), SQLITE_OK) << sqlite3_errmsg(raw);
    std::int64_t v = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
    sqlite3_finalize(s);
    return v;
  };
  EXPECT_EQ(scalar("PRAGMA user_version"), kSchemaVersion);
  EXPECT_EQ(scalar("SELECT count(*) FROM pragma_table_info('jobs') WHERE name IN ('step', 'nodes')"), 2);
  sqlite3_close(raw);
  Db again(path_);
  EXPECT_EQ(again.count(), 2);
}

// The daemon's record of a step's launcher (no step: it never knew it)
// replaces neither the launcher's step nor its nodes; the launcher's
// replaces the daemon's.
TEST_F(HistoryDb, StepAndNodesFollowTheSourceRule) {
  Db db(path_);
  Row launcher = row("s");
  launcher.step = "12.3";
  launcher.nodes = "n[1-2]";
  launcher.flags = JIFFY_HISTORY_SLURM;
  db.upsert({launcher});
  db.upsert({row("s", JIFFY_HISTORY_FROM_DAEMON)});
  Row got = db.newest(1).at(0);
  EXPECT_EQ(got.step, "12.3");
  EXPECT_EQ(got.nodes, "n[1-2]");
  db.upsert({row("t", JIFFY_HISTORY_FROM_DAEMON)});
  Row t = row("t");
  t.step = "12.4";
  db.upsert({t});
  EXPECT_EQ(db.newest(1).at(0).step, "12.4");
}

TEST_F(HistoryDb, RetentionKeepsTheNewestJobs) {
  Db db(path_);
  std::vector<Row> rows;
  for (int i = 0; i < 10; ++i) rows.push_back(row("t" + std::to_string(i)));
  db.upsert(rows);
  Retention keep;
  keep.keep_jobs = 4;
  keep.keep_days = 100000;
  EXPECT_EQ(db.prune(keep, 3'000'000'000), 6);
  std::vector<Row> left = db.newest(100);
  ASSERT_EQ(left.size(), 4u);
  EXPECT_EQ(left.front().tag, "t6");
  EXPECT_EQ(left.back().tag, "t9");
  EXPECT_EQ(db.prune(keep, 3'000'000'000), 0);
}

TEST_F(HistoryDb, RetentionDropsWhatEndedTooLongAgo) {
  Db db(path_);
  constexpr std::int64_t kDay = 86400LL * 1000000000LL;
  std::int64_t now = 100 * kDay;
  db.upsert({row("old", JIFFY_HISTORY_FROM_LAUNCHER, now - 10 * kDay),
             row("new", JIFFY_HISTORY_FROM_LAUNCHER, now - 2 * kDay)});
  Retention keep;
  keep.keep_days = 5;
  EXPECT_EQ(db.prune(keep, now), 1);
  ASSERT_EQ(db.newest(5).size(), 1u);
  EXPECT_EQ(db.newest(5)[0].tag, "new");
}

TEST_F(HistoryDb, MachinesRowIsRecorded) {
  Db db(path_);
  db.add_machine(123, 8, "0,1", "jiffy/0/abc");
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open_v2(path_.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(raw, "SELECT cores, gpus, identity FROM machines", -1, &s, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(s, 0), 8);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(s, 1)), "0,1");
  sqlite3_finalize(s);
  sqlite3_close(raw);
}

TEST_F(HistoryDb, AFileThatIsNotADatabaseIsRefusedWithSqlitesWords) {
  ::mkdir((dir_ + "/state").c_str(), 0700);
  ::mkdir((dir_ + "/state/jiffy").c_str(), 0700);
  std::ofstream(path_) << std::string(8192, 'g');
  try {
    Db db(path_);
    FAIL() << "opened garbage";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a database"), std::string::npos) << e.what();
  }
}

TEST_F(HistoryDb, AnUncreatableDirectoryIsAnError) {
  std::ofstream(dir_ + "/file") << "x";
  EXPECT_THROW(Db(dir_ + "/file/jiffy/history.db"), Error);
  EXPECT_THROW(Db(""), Error);
}

TEST_F(HistoryDb, ANewerSchemaIsRefused) {
  { Db db(path_); }
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &raw), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(raw, "PRAGMA user_version=99", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(raw);
  EXPECT_THROW(Db db(path_), Error);
}

}  // namespace
}  // namespace jiffy::history
