#include "history/query.h"

#include <gtest/gtest.h>

#include <cstring>
#include <sqlite3.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "history/db.h"
#include "history/schema.h"
#include "util/error.h"

namespace jiffy::history {
namespace {

constexpr std::int64_t kS = 1'000'000'000;

// A database file in a fresh temporary directory, removed at the end.
class TempDb {
 public:
  TempDb() {
    char tmpl[] = "/tmp/jiffy-query-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    path = dir_ + "/history.db";
  }
  ~TempDb() {
    for (const char* suffix : {"", "-wal", "-shm", "-journal"})
      std::remove((path + suffix).c_str());
    ::rmdir(dir_.c_str());
  }
  void create(int version = kSchemaVersion) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, kSchema, nullptr, nullptr, nullptr), SQLITE_OK);
    exec(db, "PRAGMA user_version=" + std::to_string(version));
    sqlite3_close(db);
  }
  // submit, start (0: never ran), end in seconds; outcome 1 with exit code.
  void add(const std::string& tag, std::int64_t submit, std::int64_t start, std::int64_t end,
           int exit_code = 0, const std::string& label = "", const std::string& command = "./a") {
    sqlite3* db = nullptr;
    sqlite3_open(path.c_str(), &db);
    exec(db,
         "INSERT INTO jobs (tag, job, source, outcome, exit_code, signal, pid, ntasks, ngroups, "
         "flags, "
         "submit_ns, start_ns, end_ns, user_us, sys_us, maxrss_kb, label, command, cwd, cores, "
         "gpus, reason) "
         "VALUES ('" +
             tag + "', 1, 2, 1, " + std::to_string(exit_code) + ", 0, 1, 1, 1, 0, " +
             std::to_string(submit * kS) + ", " + std::to_string(start * kS) + ", " +
             std::to_string(end * kS) + ", 0, 0, 0, '" + label + "', '" + command +
             "', '/w', '0', '', '')");
    sqlite3_close(db);
  }
  void exec(sqlite3* db, const std::string& sql) {
    ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK)
        << sqlite3_errmsg(db);
  }
  std::string path;

 private:
  std::string dir_;
};

std::vector<std::string> tags(Database& db, const Filter& f) {
  std::vector<std::string> out;
  for (const Row& r : db.rows(f)) out.push_back(r.tag);
  return out;
}

TEST(HistoryQuery, FiltersBecomeBoundConditions) {
  Filter f;
  f.since_ns = 5;
  f.label_glob = "run*";
  f.failed = true;
  Select s = build_select(f);
  EXPECT_NE(s.sql.find("end_ns >= ?"), std::string::npos);
  EXPECT_NE(s.sql.find("label GLOB ?"), std::string::npos);
  EXPECT_NE(s.sql.find("NOT (outcome = 1 AND exit_code = 0)"), std::string::npos);
  ASSERT_EQ(s.values.size(), 2u);
  EXPECT_EQ(std::get<std::int64_t>(s.values[0]), 5);
  EXPECT_EQ(std::get<std::string>(s.values[1]), "run*");
  EXPECT_TRUE(s.sql.ends_with(" ORDER BY end_ns, id"));
  f.overlapping = true;
  f.until_ns = 9;
  EXPECT_NE(build_select(f).sql.find("submit_ns <= ?"), std::string::npos);
}

// --since over a million rows must read the end index's range, not the table.
TEST(HistoryQuery, SinceUsesTheEndIndex) {
  TempDb t;
  t.create();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(t.path.c_str(), &db), SQLITE_OK);
  Filter f;
  f.since_ns = 5;
  f.until_ns = 9;
  f.limit = 10;
  for (bool overlapping : {false, true}) {
    f.overlapping = overlapping;
    std::string plan;
    sqlite3_stmt* st = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db, ("EXPLAIN QUERY PLAN " + build_select(f).sql).c_str(), -1, &st,
                                 nullptr),
              SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW)
      plan += reinterpret_cast<const char*>(sqlite3_column_text(st, 3)) + std::string("\n");
    sqlite3_finalize(st);
    EXPECT_NE(plan.find("USING INDEX jobs_end (end_ns>?"), std::string::npos) << plan;
  }
  sqlite3_close(db);
}

TEST(HistoryQuery, MissingDatabaseIsNoRows) {
  TempDb t;
  EXPECT_FALSE(Database::open(t.path));
}

TEST(HistoryQuery, CorruptDatabaseIsAnErrorNamingTheFile) {
  TempDb t;
  std::ofstream(t.path) << std::string(8192, 'x');
  try {
    Database::open(t.path);
    FAIL() << "opened";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(t.path), std::string::npos) << e.what();
  }
}

// A database a daemon of schema 1 wrote, read before any newer daemon
// migrated it: its rows, step and nodes "".
TEST(HistoryQuery, ASchemaOneDatabaseIsRead) {
  TempDb t;
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(t.path.c_str(), &db), SQLITE_OK);
  std::string v1 = kSchema;
  for (const char* col : {"  step       TEXT NOT NULL DEFAULT '',  -- a Slurm step \"JOBID.STEPID\" (docs/slurm.md)\n",
                          "  nodes      TEXT NOT NULL DEFAULT ''   -- its nodes, a Slurm host list\n"}) {
    std::size_t at = v1.find(col);
    ASSERT_NE(at, std::string::npos) << col;
    v1.erase(at, std::strlen(col));
  }
  std::size_t comma = v1.find("reason     TEXT NOT NULL,");
  ASSERT_NE(comma, std::string::npos);
  v1.erase(comma + std::strlen("reason     TEXT NOT NULL"), 1);
  t.exec(db, v1);
  t.exec(db, "PRAGMA user_version=1");
  sqlite3_close(db);
  t.add("a", 1, 2, 3);
  std::optional<Database> d = Database::open(t.path);
  ASSERT_TRUE(d);
  std::vector<Row> rows = d->rows(Filter{});
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].tag, "a");
  EXPECT_EQ(rows[0].step, "");
}

// A Slurm step's id and nodes, from the journal record to `jiffy history`.
TEST(HistoryQuery, StepAndNodesRoundTripFromTheRecord) {
  TempDb t;
  Row r;
  r.tag = "0123456789abcdef0123456789abcdef";
  r.ntasks = 2;
  r.submit_ns = 1 * kS;
  r.start_ns = 2 * kS;
  r.end_ns = 3 * kS;
  r.command = "./a";
  r.flags = JIFFY_HISTORY_SLURM;
  r.step = "12.3";
  r.nodes = "n[1-2]";
  std::optional<Row> decoded = from_record(to_record(r));
  ASSERT_TRUE(decoded);
  { Db(t.path).upsert({*decoded}); }
  std::optional<Database> d = Database::open(t.path);
  ASSERT_TRUE(d);
  std::vector<Row> rows = d->rows(Filter{});
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].step, "12.3");
  EXPECT_EQ(rows[0].nodes, "n[1-2]");
  EXPECT_EQ(rows[0].flags, static_cast<std::uint32_t>(JIFFY_HISTORY_SLURM));
}

TEST(HistoryQuery, NewerSchemaIsRefused) {
  TempDb t;
  t.create(kSchemaVersion + 1);
  EXPECT_THROW(Database::open(t.path), Error);
}

TEST(HistoryQuery, RowsComeOldestFirstAndLimitKeepsTheNewest) {
  TempDb t;
  t.create();
  t.add("c", 30, 31, 40);
  t.add("a", 10, 11, 20, 1, "runex1");
  t.add("b", 20, 21, 90, 0, "runex2", "./slow");
  auto db = Database::open(t.path);
  ASSERT_TRUE(db);
  EXPECT_EQ(tags(*db, {}), (std::vector<std::string>{"a", "c", "b"}));
  Filter f;
  f.limit = 2;
  EXPECT_EQ(tags(*db, f), (std::vector<std::string>{"c", "b"}));
  f = {};
  f.slowest = 1;
  EXPECT_EQ(tags(*db, f), (std::vector<std::string>{"b"}));
  f = {};
  f.failed = true;
  EXPECT_EQ(tags(*db, f), (std::vector<std::string>{"a"}));
  f = {};
  f.label_glob = "runex*";
  f.since_ns = 21 * kS;
  EXPECT_EQ(tags(*db, f), (std::vector<std::string>{"b"}));
  EXPECT_EQ(db->count(f), 1);
  f = {};
  f.command_glob = "./s*";
  EXPECT_EQ(tags(*db, f), (std::vector<std::string>{"b"}));
}

TEST(HistoryQuery, LastBurstStopsAtAMinuteOfSilence) {
  TempDb t;
  t.create();
  t.add("old", 0, 1, 100);
  t.add("b1", 200, 201, 300);  // 100 s after: a new burst
  t.add("b2", 330, 331, 400);
  t.add("b3", 450, 451, 500);
  auto db = Database::open(t.path);
  auto burst = db->last_burst(60 * kS);
  ASSERT_TRUE(burst);
  EXPECT_EQ(burst->first, 200 * kS);
  EXPECT_EQ(burst->second, 500 * kS);
}

TEST(HistoryQuery, ALongJobBridgesTheBurst) {
  TempDb t;
  t.create();
  t.add("long", 0, 1, 1000);  // runs through the quiet part
  t.add("short", 100, 101, 102);
  t.add("late", 900, 901, 950);
  auto db = Database::open(t.path);
  EXPECT_EQ(db->last_burst(60 * kS)->first, 0);
}

TEST(HistoryQuery, MachineCoveringTheWindow) {
  TempDb t;
  t.create();
  sqlite3* raw = nullptr;
  sqlite3_open(t.path.c_str(), &raw);
  t.exec(raw,
         "INSERT INTO machines (since_ns, cores, gpus, identity) VALUES (100, 4, '', 'x'), (200, "
         "8, 'a,b', 'x')");
  sqlite3_close(raw);
  auto db = Database::open(t.path);
  EXPECT_EQ(db->machine_at(150)->cores, 4);
  EXPECT_EQ(db->machine_at(250)->cores, 8);
  EXPECT_EQ(db->machine_at(250)->gpus, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(db->machine_at(50)->cores, 4);  // before any: the earliest
}

}  // namespace
}  // namespace jiffy::history
