// The history database, writer side: one SQLite connection that stores
// rows (history/row.h) under the schema of history/schema.h, and prunes
// them. Used by the daemon's history thread (daemon/history_writer.h) and
// the unit tests only: SQLite is linked into jiffyd, never into the
// launchers (jiffy-launch, the front).
//
// A Db is owned by one thread at a time (not thread-safe). Every failure
// throws Error carrying SQLite's message ("history.db: database or disk is
// full"); the connection stays usable for another try, but callers that
// want a clean slate (a corrupt file replaced) close it and open anew.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "history/row.h"

struct sqlite3;
struct sqlite3_stmt;

#include "history/path.h"

namespace jiffy::history {


struct Retention {
  std::int64_t keep_jobs = 1000000;  // the newest this many rows (by id)
  std::int64_t keep_days = 90;       // nothing that ended longer ago
};

// What upserting one row did.
enum class Stored {
  kInserted,   // a new tag
  kReplaced,   // the launcher's row took the place of the daemon's
  kUnchanged,  // a copy, or a daemon's row for a tag the launcher reported
};

struct UpsertResult {
  Stored what = Stored::kUnchanged;
  std::int64_t id = 0;           // the row's id (also when unchanged)
  std::optional<Row> replaced;   // kReplaced: what was there
};

class Db {
 public:
  // Opens (creating the file, and its directory 0700 when missing) with a
  // short busy timeout, WAL, synchronous=NORMAL; applies the schema and sets
  // user_version. Throws Error when anything of that fails (the directory
  // cannot be made, the file is not a database, is locked, is read-only,
  // is of a newer schema).
  explicit Db(const std::string& path);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  const std::string& path() const { return path_; }

  // One transaction. Rows are keyed by tag: a new tag is inserted, a
  // launcher's row replaces a daemon's, anything else changes nothing
  // (INSERT ... ON CONFLICT(tag) DO UPDATE ... WHERE excluded.source >
  // jobs.source). Returns what happened to each row, in order. Throws
  // Error (everything rolled back) on failure.
  std::vector<UpsertResult> upsert(const std::vector<Row>& rows);

  // The same in steps, for a caller that must hold another lock only while
  // the transaction is open (the journal's: daemon/history_writer.h).
  // begin() takes the database's write lock (BEGIN IMMEDIATE, waiting at
  // most the busy timeout); put() upserts; commit() makes it durable.
  // Each throws Error; rollback() undoes an open transaction, if any.
  // REQUIRES: put() and commit() only between begin() and commit/rollback.
  void begin();
  std::vector<UpsertResult> put(const std::vector<Row>& rows);
  void commit();
  void rollback() noexcept;

  // Records a daemon start (the machines table).
  void add_machine(std::int64_t since_ns, int cores, const std::string& gpus,
                   const std::string& identity);

  // Deletes rows beyond the newest keep_jobs and rows that ended before
  // now_ns - keep_days (both by index). Returns how many went. Throws Error.
  std::int64_t prune(const Retention& keep, std::int64_t now_ns);

  // The newest n rows, oldest first.
  std::vector<Row> newest(int n);
  // The newest n rows of runs that exited 0, oldest first, with only cwd,
  // command, ntasks, start_ns and end_ns read: what run times are learned
  // from (daemon/run_times.h).
  std::vector<Row> newest_ok_runs(int n);

  std::int64_t count();

 private:
  void exec(const char* sql);
  [[noreturn]] void fail(const std::string& what);

  std::string path_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* find_ = nullptr;
  sqlite3_stmt* upsert_ = nullptr;
};

}  // namespace jiffy::history
