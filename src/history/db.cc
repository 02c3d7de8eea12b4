#include "history/db.h"

#include <fcntl.h>
#include <pwd.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "history/schema.h"
#include "util/error.h"

namespace jiffy::history {

namespace {

// A writer that finds the file locked (a reader's checkpoint, another
// daemon's transaction) waits this long, then gives up: the records stay
// in the journal, and the history thread tries again.
constexpr int kBusyTimeoutMs = 250;

constexpr const char* kColumns =
    "tag, job, source, outcome, exit_code, signal, pid, ntasks, ngroups, flags, submit_ns, "
    "start_ns, end_ns, user_us, sys_us, maxrss_kb, label, command, cwd, cores, gpus, reason, step, nodes";

// Creates dir and its missing parents, each 0700.
void make_dirs(const std::string& dir) {
  if (dir.empty()) return;
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) throw Error(dir + " is not a directory");
    return;
  }
  auto slash = dir.rfind('/');
  if (slash != std::string::npos && slash > 0) make_dirs(dir.substr(0, slash));
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) throw_errno("cannot create " + dir);
}

void bind_row(sqlite3_stmt* s, const Row& r) {
  auto text = [&](int i, const std::string& v) { sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT); };
  text(1, r.tag);
  sqlite3_bind_int64(s, 2, static_cast<sqlite3_int64>(r.job));
  sqlite3_bind_int(s, 3, r.source);
  sqlite3_bind_int(s, 4, r.outcome);
  sqlite3_bind_int(s, 5, r.exit_code);
  sqlite3_bind_int(s, 6, r.signal);
  sqlite3_bind_int(s, 7, r.pid);
  sqlite3_bind_int(s, 8, r.ntasks);
  sqlite3_bind_int(s, 9, r.ngroups);
  sqlite3_bind_int64(s, 10, r.flags);
  sqlite3_bind_int64(s, 11, r.submit_ns);
  sqlite3_bind_int64(s, 12, r.start_ns);
  sqlite3_bind_int64(s, 13, r.end_ns);
  sqlite3_bind_int64(s, 14, r.user_us);
  sqlite3_bind_int64(s, 15, r.sys_us);
  sqlite3_bind_int64(s, 16, r.maxrss_kb);
  text(17, r.label);
  text(18, r.command);
  text(19, r.cwd);
  text(20, r.cores);
  text(21, r.gpus);
  text(22, r.reason);
  text(23, r.step);
  text(24, r.nodes);
}

std::string column_text(sqlite3_stmt* s, int i) {
  const unsigned char* t = sqlite3_column_text(s, i);
  return t ? std::string(reinterpret_cast<const char*>(t), static_cast<std::size_t>(sqlite3_column_bytes(s, i)))
           : std::string();
}

// A row selected as "id, <kColumns>".
Row read_row(sqlite3_stmt* s) {
  Row r;
  r.id = sqlite3_column_int64(s, 0);
  r.tag = column_text(s, 1);
  r.job = static_cast<std::uint64_t>(sqlite3_column_int64(s, 2));
  r.source = sqlite3_column_int(s, 3);
  r.outcome = sqlite3_column_int(s, 4);
  r.exit_code = sqlite3_column_int(s, 5);
  r.signal = sqlite3_column_int(s, 6);
  r.pid = sqlite3_column_int(s, 7);
  r.ntasks = sqlite3_column_int(s, 8);
  r.ngroups = sqlite3_column_int(s, 9);
  r.flags = static_cast<std::uint32_t>(sqlite3_column_int64(s, 10));
  r.submit_ns = sqlite3_column_int64(s, 11);
  r.start_ns = sqlite3_column_int64(s, 12);
  r.end_ns = sqlite3_column_int64(s, 13);
  r.user_us = sqlite3_column_int64(s, 14);
  r.sys_us = sqlite3_column_int64(s, 15);
  r.maxrss_kb = sqlite3_column_int64(s, 16);
  r.label = column_text(s, 17);
  r.command = column_text(s, 18);
  r.cwd = column_text(s, 19);
  r.cores = column_text(s, 20);
  r.gpus = column_text(s, 21);
  r.reason = column_text(s, 22);
  r.step = column_text(s, 23);
  r.nodes = column_text(s, 24);
  return r;
}

// Finalizes a statement however the scope is left.
struct Stmt {
  sqlite3_stmt* s = nullptr;
  ~Stmt() { sqlite3_finalize(s); }
};

}  // namespace

Db::Db(const std::string& path) : path_(path) {
  if (path.empty()) throw Error("history.db: no place for it (neither XDG_STATE_HOME nor a home directory)");
  auto slash = path.rfind('/');
  if (slash != std::string::npos) make_dirs(path.substr(0, slash));
  // Made 0600 first: SQLite would take the umask's mode, and its -wal and
  // -shm files copy the database's.
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
  if (fd < 0) throw_errno("cannot open " + path);
  ::close(fd);
  int rc = sqlite3_open_v2(path.c_str(), &db_,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string why = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    sqlite3_close(db_);
    db_ = nullptr;
    throw Error(path + ": " + why);
  }
  try {
    sqlite3_busy_timeout(db_, kBusyTimeoutMs);
    sqlite3_extended_result_codes(db_, 1);
    // user_version first: reading it is what finds a file that is not a
    // database, before anything is written.
    int version = 0;
    {
      Stmt v;
      if (sqlite3_prepare_v2(db_, "PRAGMA user_version", -1, &v.s, nullptr) != SQLITE_OK) fail("open");
      if (sqlite3_step(v.s) != SQLITE_ROW) fail("open");
      version = sqlite3_column_int(v.s, 0);
    }
    if (version > kSchemaVersion) {
      throw Error(path + ": written by a newer jiffy (schema " + std::to_string(version) + ")");
    }
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=NORMAL");
    exec("BEGIN IMMEDIATE");
    if (version == 1) exec(kMigrateFrom1);
    exec(kSchema);
    exec(("PRAGMA user_version=" + std::to_string(kSchemaVersion)).c_str());
    exec("COMMIT");
    std::string find = std::string("SELECT id, ") + kColumns + " FROM jobs WHERE tag = ?1";
    if (sqlite3_prepare_v2(db_, find.c_str(), -1, &find_, nullptr) != SQLITE_OK) fail("prepare");
    std::string up = std::string("INSERT INTO jobs(") + kColumns +
                     ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, "
                     "?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24) ON CONFLICT(tag) DO UPDATE SET job = excluded.job, "
                     "source = excluded.source, outcome = excluded.outcome, exit_code = excluded.exit_code, "
                     "signal = excluded.signal, pid = excluded.pid, ntasks = excluded.ntasks, "
                     "ngroups = excluded.ngroups, flags = excluded.flags, submit_ns = excluded.submit_ns, "
                     "start_ns = excluded.start_ns, end_ns = excluded.end_ns, user_us = excluded.user_us, "
                     "sys_us = excluded.sys_us, maxrss_kb = excluded.maxrss_kb, label = excluded.label, "
                     "command = excluded.command, cwd = excluded.cwd, cores = excluded.cores, "
                     "gpus = excluded.gpus, reason = excluded.reason, step = excluded.step, "
                     "nodes = excluded.nodes WHERE excluded.source > jobs.source "
                     // The daemon may see one lost job twice (its launcher's
                     // hang-up, the lane record it left): what knows the
                     // label and directory wins.
                     "OR (excluded.source = jobs.source AND jobs.label = '' AND jobs.cwd = '' "
                     "AND (excluded.label != '' OR excluded.cwd != ''))";
    if (sqlite3_prepare_v2(db_, up.c_str(), -1, &upsert_, nullptr) != SQLITE_OK) fail("prepare");
  } catch (...) {
    sqlite3_finalize(find_);
    sqlite3_finalize(upsert_);
    sqlite3_close_v2(db_);
    throw;
  }
}

Db::~Db() {
  sqlite3_finalize(find_);
  sqlite3_finalize(upsert_);
  sqlite3_close_v2(db_);
}

void Db::fail(const std::string& what) {
  std::string msg = sqlite3_errmsg(db_);
  (void)what;
  throw Error(path_ + ": " + msg, sqlite3_extended_errcode(db_));
}

void Db::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    int code = sqlite3_extended_errcode(db_);
    if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw Error(path_ + ": " + msg, code);
  }
}

void Db::begin() { exec("BEGIN IMMEDIATE"); }

void Db::commit() { exec("COMMIT"); }

void Db::rollback() noexcept {
  sqlite3_reset(find_);
  sqlite3_reset(upsert_);
  if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
}

std::vector<UpsertResult> Db::put(const std::vector<Row>& rows) {
  std::vector<UpsertResult> out;
  out.reserve(rows.size());
  for (const Row& row : rows) {
    UpsertResult res;
    sqlite3_reset(find_);
    sqlite3_bind_text(find_, 1, row.tag.data(), static_cast<int>(row.tag.size()), SQLITE_TRANSIENT);
    int rc = sqlite3_step(find_);
    std::optional<Row> old;
    if (rc == SQLITE_ROW) {
      old = read_row(find_);
    } else if (rc != SQLITE_DONE) {
      fail("select");
    }
    sqlite3_reset(find_);
    sqlite3_reset(upsert_);
    bind_row(upsert_, row);
    if (sqlite3_step(upsert_) != SQLITE_DONE) fail("upsert");
    bool changed = sqlite3_changes(db_) > 0;
    sqlite3_reset(upsert_);
    if (!old) {
      res.what = Stored::kInserted;
      res.id = sqlite3_last_insert_rowid(db_);
    } else {
      res.id = old->id;
      if (changed) {
        res.what = Stored::kReplaced;
        res.replaced = std::move(old);
      }
    }
    out.push_back(std::move(res));
  }
  return out;
}

std::vector<UpsertResult> Db::upsert(const std::vector<Row>& rows) {
  begin();
  try {
    std::vector<UpsertResult> out = put(rows);
    commit();
    return out;
  } catch (...) {
    rollback();
    throw;
  }
}

void Db::add_machine(std::int64_t since_ns, int cores, const std::string& gpus, const std::string& identity) {
  Stmt s;
  if (sqlite3_prepare_v2(db_, "INSERT INTO machines(since_ns, cores, gpus, identity) VALUES (?1, ?2, ?3, ?4)",
                         -1, &s.s, nullptr) != SQLITE_OK) {
    fail("prepare");
  }
  sqlite3_bind_int64(s.s, 1, since_ns);
  sqlite3_bind_int(s.s, 2, cores);
  sqlite3_bind_text(s.s, 3, gpus.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(s.s, 4, identity.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(s.s) != SQLITE_DONE) fail("insert machine");
}

// By the indexes: the age cut walks jobs_end from its start, the count cut
// is one look at the largest id (ids are handed out in ingestion order, so
// the newest keep_jobs rows are those above max(id) - keep_jobs).
std::int64_t Db::prune(const Retention& keep, std::int64_t now_ns) {
  std::int64_t gone = 0;
  exec("BEGIN IMMEDIATE");
  try {
    Stmt age;
    if (sqlite3_prepare_v2(db_, "DELETE FROM jobs WHERE end_ns < ?1", -1, &age.s, nullptr) != SQLITE_OK) fail("prepare");
    constexpr std::int64_t kDayNs = 86400LL * 1000000000LL;
    std::int64_t cut = keep.keep_days > now_ns / kDayNs ? 0 : now_ns - keep.keep_days * kDayNs;
    sqlite3_bind_int64(age.s, 1, cut);
    if (sqlite3_step(age.s) != SQLITE_DONE) fail("prune");
    gone += sqlite3_changes(db_);
    Stmt count;
    if (sqlite3_prepare_v2(db_, "DELETE FROM jobs WHERE id <= (SELECT max(id) FROM jobs) - ?1", -1, &count.s,
                           nullptr) != SQLITE_OK) {
      fail("prepare");
    }
    sqlite3_bind_int64(count.s, 1, keep.keep_jobs);
    if (sqlite3_step(count.s) != SQLITE_DONE) fail("prune");
    gone += sqlite3_changes(db_);
    exec("COMMIT");
  } catch (...) {
    if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
  return gone;
}

std::vector<Row> Db::newest(int n) {
  Stmt s;
  std::string sql = std::string("SELECT id, ") + kColumns + " FROM jobs ORDER BY id DESC LIMIT ?1";
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &s.s, nullptr) != SQLITE_OK) fail("prepare");
  sqlite3_bind_int(s.s, 1, n);
  std::vector<Row> rows;
  int rc;
  while ((rc = sqlite3_step(s.s)) == SQLITE_ROW) rows.push_back(read_row(s.s));
  if (rc != SQLITE_DONE) fail("select");
  return {rows.rbegin(), rows.rend()};
}

std::vector<Row> Db::newest_ok_runs(int n) {
  Stmt s;
  const char* sql =
      "SELECT cwd, command, ntasks, start_ns, end_ns FROM jobs "
      "WHERE outcome = ?2 AND exit_code = 0 AND start_ns > 0 AND end_ns > start_ns "
      "ORDER BY id DESC LIMIT ?1";
  if (sqlite3_prepare_v2(db_, sql, -1, &s.s, nullptr) != SQLITE_OK) fail("prepare");
  sqlite3_bind_int(s.s, 1, n);
  sqlite3_bind_int(s.s, 2, JIFFY_OUTCOME_EXITED);
  std::vector<Row> rows;
  int rc;
  auto text = [&](int col) {
    const unsigned char* t = sqlite3_column_text(s.s, col);
    return t ? std::string(reinterpret_cast<const char*>(t)) : std::string();
  };
  while ((rc = sqlite3_step(s.s)) == SQLITE_ROW) {
    Row r;
    r.cwd = text(0);
    r.command = text(1);
    r.ntasks = sqlite3_column_int(s.s, 2);
    r.start_ns = sqlite3_column_int64(s.s, 3);
    r.end_ns = sqlite3_column_int64(s.s, 4);
    rows.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE) fail("select");
  return {rows.rbegin(), rows.rend()};
}

std::int64_t Db::count() {
  Stmt s;
  if (sqlite3_prepare_v2(db_, "SELECT count(*) FROM jobs", -1, &s.s, nullptr) != SQLITE_OK) fail("prepare");
  if (sqlite3_step(s.s) != SQLITE_ROW) fail("count");
  return sqlite3_column_int64(s.s, 0);
}

}  // namespace jiffy::history
