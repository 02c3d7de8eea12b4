// Reading the history database (history/schema.h): what `jiffy history`,
// `jiffy report` and `jiffy top` select, and the read-only connection that
// selects it.
//
// Two halves. The pure half turns a Filter into SQL text plus its bound
// values (build_select), so the mapping from options to SQL is tested
// without a database. The I/O half, Database, owns one read-only SQLite
// connection (SQLITE_OPEN_READONLY: a reader never creates, migrates or
// locks out the daemon's writer; WAL lets it read while the daemon writes).
//
// Every time filter is on an indexed column (end_ns, submit_ns), so
// `--since 1h` over a million rows reads only the last hour's index range.
// Not thread-safe: one Database per thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "history/row.h"
#include "history/schema.h"

struct sqlite3;

namespace jiffy::history {

// Which rows, in which order. Times are ns since the epoch.
struct Filter {
  std::optional<std::int64_t> since_ns;  // ended at or after (jobs_end index)
  std::optional<std::int64_t> until_ns;  // ended at or before
  // Report windows: jobs whose [submit, end] overlaps [since, until]
  // instead of jobs that ended inside it.
  bool overlapping = false;
  bool failed = false;       // outcome other than ok
  std::string label_glob;    // SQLite GLOB on label ("" = any)
  std::string command_glob;  // SQLite GLOB on command
  std::string cwd;           // exact working directory ("" = any)
  int slowest = 0;           // > 0: only the N longest run times (jobs that ran)
  int limit = 0;             // > 0: only the last N (by end time) of what remains
};

// One value bound to a '?' of the SQL text, in order.
using Bound = std::variant<std::int64_t, std::string>;

struct Select {
  std::string sql;
  std::vector<Bound> values;
};

// The SELECT of every Row column for `filter`, rows ordered oldest end
// first (ties by id). --slowest picks by run time, --limit then keeps the
// newest N of those; the result is always in end order.
// schema_version: the database's (history/schema.h); 1 has no step and
// nodes columns, which are then read as "".
Select build_select(const Filter& filter, int schema_version = kSchemaVersion);
// SELECT COUNT(*) of the rows `filter` matches, ignoring slowest and limit.
Select build_count(const Filter& filter);

// A daemon's resource set (the machines table).
struct Machine {
  std::int64_t since_ns = 0;
  int cores = 0;
  std::vector<std::string> gpus;
};


class Database {
 public:
  // Opens `path` read-only. Returns nullopt when no file is there (no job
  // has been recorded yet). Throws Error (one line, naming the file) when
  // it cannot be read, is not a SQLite database, or its user_version is
  // not one this reader knows (0 counts as an empty, new database).
  static std::optional<Database> open(const std::string& path);

  Database(Database&& other) noexcept;
  Database& operator=(Database&& other) noexcept;
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;
  ~Database();

  // The rows `filter` selects (build_select). Throws Error on a read error.
  std::vector<Row> rows(const Filter& filter);
  // How many rows `filter` matches (build_count).
  std::int64_t count(const Filter& filter);
  // The latest machine whose daemon started at or before `at_ns`, else the
  // earliest one after it; nullopt when the table is empty.
  std::optional<Machine> machine_at(std::int64_t at_ns);
  // The last burst of launches: starting from the latest submit, earlier
  // jobs belong while no gap longer than `gap_ns` separates one job's end
  // from the next submit. Returns {first submit, last end}; nullopt when
  // there are no jobs.
  std::optional<std::pair<std::int64_t, std::int64_t>> last_burst(std::int64_t gap_ns);

  const std::string& path() const { return path_; }

 private:
  Database(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  sqlite3* db_ = nullptr;
  std::string path_;
  bool empty_ = false;  // user_version 0: nothing written yet, no tables perhaps
  int version_ = kSchemaVersion;  // user_version: 1 lacks step and nodes
};

}  // namespace jiffy::history
