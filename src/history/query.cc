#include "history/query.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <utility>

#include "history/schema.h"
#include "util/error.h"

namespace jiffy::history {

namespace {

// The Row columns, in the order read_row() takes them (a version-1
// database has no step and nodes: read as "").
constexpr const char* kColumns =
    "id, tag, job, source, outcome, exit_code, signal, pid, ntasks, ngroups, flags, submit_ns, "
    "start_ns, end_ns, user_us, sys_us, maxrss_kb, label, command, cwd, cores, gpus, reason, step, nodes";
constexpr const char* kColumnsV1 =
    "id, tag, job, source, outcome, exit_code, signal, pid, ntasks, ngroups, flags, submit_ns, "
    "start_ns, end_ns, user_us, sys_us, maxrss_kb, label, command, cwd, cores, gpus, reason, "
    "'' AS step, '' AS nodes";

// The WHERE clause (" WHERE ..." or "") and its values.
void add_conditions(const Filter& f, Select& s) {
  std::vector<std::string> terms;
  if (f.since_ns) {
    terms.push_back("end_ns >= ?");
    s.values.emplace_back(*f.since_ns);
  }
  if (f.until_ns) {
    terms.push_back(f.overlapping ? "submit_ns <= ?" : "end_ns <= ?");
    s.values.emplace_back(*f.until_ns);
  }
  if (f.failed) terms.push_back("NOT (outcome = 1 AND exit_code = 0)");
  if (!f.label_glob.empty()) {
    terms.push_back("label GLOB ?");
    s.values.emplace_back(f.label_glob);
  }
  if (!f.command_glob.empty()) {
    terms.push_back("command GLOB ?");
    s.values.emplace_back(f.command_glob);
  }
  if (!f.cwd.empty()) {
    terms.push_back("cwd = ?");
    s.values.emplace_back(f.cwd);
  }
  if (f.slowest > 0) terms.push_back("start_ns != 0");
  for (std::size_t i = 0; i < terms.size(); ++i) s.sql += (i == 0 ? " WHERE " : " AND ") + terms[i];
}

std::string errmsg(sqlite3* db) { return db ? sqlite3_errmsg(db) : "out of memory"; }

// A prepared statement, finalized on every path.
class Statement {
 public:
  Statement(sqlite3* db, const std::string& sql, const std::string& where)
      : db_(db), where_(where) {
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt_, nullptr) != SQLITE_OK) fail();
  }
  Statement(sqlite3* db, const Select& s, const std::string& where) : Statement(db, s.sql, where) {
    for (std::size_t i = 0; i < s.values.size(); ++i) {
      int at = static_cast<int>(i + 1), rc;
      if (auto* n = std::get_if<std::int64_t>(&s.values[i])) {
        rc = sqlite3_bind_int64(stmt_, at, *n);
      } else {
        const std::string& t = std::get<std::string>(s.values[i]);
        rc = sqlite3_bind_text(stmt_, at, t.data(), static_cast<int>(t.size()), SQLITE_TRANSIENT);
      }
      if (rc != SQLITE_OK) fail();
    }
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  void bind(int at, std::int64_t v) {
    sqlite3_reset(stmt_);
    if (sqlite3_bind_int64(stmt_, at, v) != SQLITE_OK) fail();
  }
  // True while there is a row; throws on an error.
  bool step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail();
  }
  bool null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  std::int64_t i64(int col) const { return sqlite3_column_int64(stmt_, col); }
  int i32(int col) const { return sqlite3_column_int(stmt_, col); }
  std::string text(int col) const {
    const unsigned char* t = sqlite3_column_text(stmt_, col);
    return t ? std::string(reinterpret_cast<const char*>(t), sqlite3_column_bytes(stmt_, col)) : "";
  }

 private:
  [[noreturn]] void fail() const { throw Error(where_ + ": " + errmsg(db_)); }
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  std::string where_;
};

Row read_row(const Statement& st) {
  Row r;
  r.id = st.i64(0);
  r.tag = st.text(1);
  r.job = static_cast<std::uint64_t>(st.i64(2));
  r.source = st.i32(3);
  r.outcome = st.i32(4);
  r.exit_code = st.i32(5);
  r.signal = st.i32(6);
  r.pid = st.i32(7);
  r.ntasks = st.i32(8);
  r.ngroups = st.i32(9);
  r.flags = static_cast<std::uint32_t>(st.i64(10));
  r.submit_ns = st.i64(11);
  r.start_ns = st.i64(12);
  r.end_ns = st.i64(13);
  r.user_us = st.i64(14);
  r.sys_us = st.i64(15);
  r.maxrss_kb = st.i64(16);
  r.label = st.text(17);
  r.command = st.text(18);
  r.cwd = st.text(19);
  r.cores = st.text(20);
  r.gpus = st.text(21);
  r.reason = st.text(22);
  r.step = st.text(23);
  r.nodes = st.text(24);
  return r;
}

}  // namespace

Select build_select(const Filter& f, int schema_version) {
  Select s;
  s.sql = std::string("SELECT ") + (schema_version == 1 ? kColumnsV1 : kColumns) + " FROM jobs";
  add_conditions(f, s);
  if (f.slowest > 0) {
    s.sql += " ORDER BY end_ns - start_ns DESC, id DESC LIMIT " + std::to_string(f.slowest);
    s.sql = std::string("SELECT * FROM (") + s.sql + ")";
  }
  if (f.limit > 0) {
    s.sql += " ORDER BY end_ns DESC, id DESC LIMIT " + std::to_string(f.limit);
    s.sql = std::string("SELECT * FROM (") + s.sql + ")";
  }
  s.sql += " ORDER BY end_ns, id";
  return s;
}

Select build_count(const Filter& f) {
  Filter g = f;
  g.slowest = 0;
  g.limit = 0;
  Select s;
  s.sql = "SELECT COUNT(*) FROM jobs";
  add_conditions(g, s);
  return s;
}

std::optional<Database> Database::open(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
    throw_errno("history database " + path);
  }
  if (!S_ISREG(st.st_mode)) throw Error("history database " + path + ": not a regular file");
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  Database d(db, path);  // owns db from here, even when the open failed
  if (rc != SQLITE_OK) throw Error("history database " + path + ": " + errmsg(db));
  sqlite3_busy_timeout(db, 2000);  // the daemon's writer commits in short batches
  std::string where = "history database " + path;
  Statement version(db, "PRAGMA user_version", where);
  int v = version.step() ? version.i32(0) : 0;
  if (v > kSchemaVersion) {
    throw Error(where + ": written by a newer jiffy (schema version " + std::to_string(v) +
                ", this one reads " + std::to_string(kSchemaVersion) + ")");
  }
  Statement tables(
      db,
      "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('jobs', 'machines')",
      where);
  int n = tables.step() ? tables.i32(0) : 0;
  if (v == 0 && n == 0) {
    d.empty_ = true;  // created, nothing written yet
  } else if (v < 1 || n != 2) {
    throw Error(where + ": not a jiffy history database (schema version " + std::to_string(v) +
                ")");
  }
  d.version_ = v;
  return d;
}

Database::Database(Database&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)),
      path_(std::move(other.path_)),
      empty_(other.empty_),
      version_(other.version_) {}

Database& Database::operator=(Database&& other) noexcept {
  if (this != &other) {
    sqlite3_close_v2(db_);
    db_ = std::exchange(other.db_, nullptr);
    path_ = std::move(other.path_);
    empty_ = other.empty_;
    version_ = other.version_;
  }
  return *this;
}

Database::~Database() { sqlite3_close_v2(db_); }

std::vector<Row> Database::rows(const Filter& filter) {
  std::vector<Row> out;
  if (empty_) return out;
  Statement st(db_, build_select(filter, version_), "reading " + path_);
  while (st.step()) out.push_back(read_row(st));
  return out;
}

std::int64_t Database::count(const Filter& filter) {
  if (empty_) return 0;
  Statement st(db_, build_count(filter), "reading " + path_);
  return st.step() ? st.i64(0) : 0;
}

std::optional<Machine> Database::machine_at(std::int64_t at_ns) {
  if (empty_) return std::nullopt;
  Statement st(db_,
               "SELECT since_ns, cores, gpus FROM machines ORDER BY (since_ns > ?1), "
               "CASE WHEN since_ns <= ?1 THEN -since_ns ELSE since_ns END, id DESC LIMIT 1",
               "reading " + path_);
  st.bind(1, at_ns);
  if (!st.step()) return std::nullopt;
  Machine m;
  m.since_ns = st.i64(0);
  m.cores = st.i32(1);
  for (auto& names : parse_name_lists(st.text(2))) {
    for (auto& g : names) m.gpus.push_back(g);
  }
  return m;
}

std::optional<std::pair<std::int64_t, std::int64_t>> Database::last_burst(std::int64_t gap_ns) {
  if (empty_) return std::nullopt;
  std::string where = "reading " + path_;
  Statement latest(db_, "SELECT MAX(submit_ns) FROM jobs", where);
  if (!latest.step() || latest.null(0)) return std::nullopt;
  std::int64_t first = latest.i64(0);
  // Walk back in submit order while each job ends within the gap of the
  // burst's first submit. A job that does not may still be bridged by an
  // earlier, longer one: the second query finds it (the end index), and
  // the walk goes on from there.
  Statement walk(
      db_, "SELECT submit_ns, end_ns FROM jobs WHERE submit_ns < ? ORDER BY submit_ns DESC", where);
  Statement bridge(
      db_, "SELECT MIN(submit_ns) FROM jobs WHERE end_ns >= ?1 - ?2 AND submit_ns < ?1", where);
  for (;;) {
    walk.bind(1, first);
    while (walk.step()) {
      if (walk.i64(1) < first - gap_ns) break;
      first = walk.i64(0);
    }
    bridge.bind(1, first);
    bridge.bind(2, gap_ns);
    if (!bridge.step() || bridge.null(0)) break;
    first = bridge.i64(0);
  }
  Statement last(db_, "SELECT MAX(end_ns) FROM jobs WHERE submit_ns >= ?", where);
  last.bind(1, first);
  std::int64_t end = last.step() ? last.i64(0) : first;
  return std::make_pair(first, end);
}

}  // namespace jiffy::history
