#include "daemon/history_writer.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "history/journal_reader.h"
#include "util/error.h"
#include "util/fd.h"
#include "util/sys.h"

namespace jiffy {

namespace {

using history::Row;

constexpr std::size_t kRecent = 20;
constexpr double kLockRetryS = 0.01;  // a launcher holds the journal's lock for one write()
constexpr double kLockedAnswerS = 2.0;  // a history ask waits no longer for a locked journal
constexpr std::size_t kReadChunk = 4u << 20;

struct Totals {
  double since = 0;
  std::int64_t jobs = 0, failed = 0, timed_out = 0;
  double core_seconds = 0;

  void add(const Row& r, int sign) {
    jobs += sign;
    std::string o = history::outcome_name(r);
    if (o == "failed" || o == "signaled" || o == "lost") failed += sign;
    if (r.outcome == JIFFY_OUTCOME_TIMED_OUT) timed_out += sign;
    core_seconds += sign * jiffy::core_seconds(r);
  }
};

// The journal opened for one ingestion, locked; unlocked and closed with it.
struct Journal {
  Fd fd;
  off_t size = 0;
};

class HistoryWriter final : public HistoryService {
 public:
  explicit HistoryWriter(HistoryWriterConfig config) : cfg_(std::move(config)) {
    done_ = Fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!done_) throw_errno("eventfd");
    started_ns_ = realtime_ns();
    totals_.since = static_cast<double>(started_ns_) / 1e9;
    db_shown_ = cfg_.enabled ? cfg_.db_path : std::string();
    if (!cfg_.enabled) error_ = "off (jiffy daemon --history=off, or JIFFY_HISTORY=0 in its environment)";
    thread_ = std::thread([this] { run(); });
  }

  ~HistoryWriter() override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

  int done_fd() const override { return done_.get(); }

  void record(Row row) override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      rows_.push_back(std::move(row));
      ++queued_rows_;
    }
    cv_.notify_one();
  }

  void ask(std::uint64_t token) override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      asks_.push_back(token);
    }
    cv_.notify_one();
  }

  std::vector<std::uint64_t> completed() override {
    std::uint64_t n;
    while (::read(done_.get(), &n, sizeof n) == static_cast<ssize_t>(sizeof n)) {
    }
    std::lock_guard<std::mutex> lk(mu_);
    return std::exchange(done_asks_, {});
  }

  std::vector<RunTime> take_run_times() override {
    std::lock_guard<std::mutex> lk(mu_);
    return std::exchange(run_times_, {});
  }

  proto::Json state_json() const override {
    std::lock_guard<std::mutex> lk(mu_);
    return {{"db", db_shown_}, {"error", error_}, {"pending", pending_ + queued_rows_}};
  }

  proto::Json recent_json() const override {
    std::lock_guard<std::mutex> lk(mu_);
    proto::Json out = proto::Json::array();
    for (const Row& r : recent_) out.push_back(history::to_json(r));
    return out;
  }

  proto::Json totals_json() const override {
    std::lock_guard<std::mutex> lk(mu_);
    return {{"since", totals_.since},
            {"jobs", totals_.jobs},
            {"failed", totals_.failed},
            {"timed_out", totals_.timed_out},
            {"core_seconds", totals_.core_seconds}};
  }

 private:
  void log(const std::string& line) {
    if (cfg_.log) cfg_.log("history: " + line);
  }

  // A problem: logged once per distinct message, shown until it is gone.
  void problem(const std::string& what) {
    if (logged_.insert(what).second) log(what);
    std::lock_guard<std::mutex> lk(mu_);
    error_ = what;
  }

  void healed() {
    bool was;
    {
      std::lock_guard<std::mutex> lk(mu_);
      was = !error_.empty();
      error_.clear();
    }
    if (was && !logged_.empty()) log("writing " + cfg_.db_path + " again");
    logged_.clear();
  }

  void run() {
    double next_poll = 0;
    bool backoff = false;                // the journal was locked: wait for next_poll
    double lock_wait = kLockRetryS;      // doubles while it stays locked, up to poll_s
    double locked_since = 0;             // when the journal was first found locked
    std::vector<std::uint64_t> waiting;  // asks taken, not yet answered
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      double now = now_s();
      bool stopping = stop_;
      bool due = now >= next_poll || (!backoff && (stopping || !asks_.empty() || !rows_.empty()));
      if (!due) {
        cv_.wait_for(lk, std::chrono::duration<double>(next_poll - now));
        continue;
      }
      for (std::uint64_t t : asks_) waiting.push_back(t);
      asks_.clear();
      std::vector<Row> rows = std::exchange(rows_, {});
      const std::size_t taken = rows.size();
      lk.unlock();

      bool forced = !waiting.empty() || !rows.empty() || stopping;
      // Someone asks: a database that failed is tried again at once.
      if (!waiting.empty() && !db_) next_open_ = 0;
      bool done = work(rows, forced, now);
      backoff = !done;
      if (done) {
        lock_wait = kLockRetryS;
        locked_since = 0;
      } else {
        if (locked_since == 0) locked_since = now;
        lock_wait = std::min(lock_wait * 2, cfg_.poll_s);
      }
      next_poll = now_s() + (done ? cfg_.poll_s : lock_wait);
      // Held for long (not by a launcher's one write()): whoever asked is
      // answered anyway; the records wait for the next try.
      bool answer = done || (locked_since > 0 && now_s() - locked_since > kLockedAnswerS);

      lk.lock();
      queued_rows_ -= taken;  // stored, journaled or dropped (history off)
      if (!done) {  // the journal was locked: the rows go with the next try
        queued_rows_ += rows.size();
        for (Row& r : rows) rows_.push_back(std::move(r));
      }
      // Stopping: one last round stores what is queued; a journal that
      // stays locked is given up on after a second (our rows are lost then).
      if (stopping && stop_since_ == 0) stop_since_ = now;
      if (stopping && (done || now_s() - stop_since_ > 1.0)) break;
      if (answer && !waiting.empty()) {
        for (std::uint64_t t : waiting) done_asks_.push_back(t);
        waiting.clear();
        std::uint64_t one = 1;
        (void)!::write(done_.get(), &one, sizeof one);
      }
    }
  }

  // One round: the database opened if it is due, then the journal ingested
  // if it holds anything (or rows wait, or forced). False when the journal
  // was locked by a writer (try again soon).
  bool work(std::vector<Row>& rows, bool forced, double now) {
    bool done = ingest(rows, forced, now);
    // Retention runs after a store, at most once a prune period: the
    // first store of a daemon's life prunes at once.
    if (cfg_.enabled && db_ && stored_since_prune_ && now >= next_prune_) prune(now);
    return done;
  }

  bool ingest(std::vector<Row>& rows, bool forced, double now) {
    if (cfg_.enabled && !db_ && now >= next_open_) open_db(now);
    // Launchers' records move to the staging file first (under the
    // journal's lock, held only for the copy); the rest works on that file,
    // which only this thread touches. With history off, the journal itself
    // is emptied.
    if (cfg_.enabled && !take_journal()) return false;
    const std::string& path = cfg_.enabled ? staging_ : cfg_.journal;
    struct stat st;
    bool exists = ::stat(path.c_str(), &st) == 0;
    if (!forced && (!exists || st.st_size == 0)) {
      set_pending(0);
      return true;
    }
    if (!exists && rows.empty()) {
      set_pending(0);
      return true;
    }
    bool need_file = !rows.empty() && cfg_.enabled && !db_;
    std::optional<Journal> j = open_journal(path, need_file);
    if (!j) {
      if (rows.empty() || !cfg_.enabled || !db_) {
        set_pending(0);
        return true;
      }
      if (store(rows)) return true;  // no journal: only our rows
      std::optional<Journal> made = open_journal(path, true);  // the database failed: they wait there
      if (!made || ::flock(made->fd.get(), LOCK_EX | LOCK_NB) != 0) return false;
      made->size = ::lseek(made->fd.get(), 0, SEEK_END);
      keep_in_journal(*made, rows);
      return true;
    }
    // The database's write lock first (it may wait the busy timeout): the
    // journal's lock, which launchers wait for, is held only while our
    // transaction is open.
    bool begun = false;
    if (cfg_.enabled && db_) {
      try {
        db_->begin();
        begun = true;
      } catch (const Error& e) {
        fail_db(e.what());
      }
    }
    if (::flock(j->fd.get(), LOCK_EX | LOCK_NB) != 0) {
      if (begun) db_->rollback();
      return false;
    }
    // Closing j->fd releases the lock, whatever happens below.
    if (!cfg_.enabled) {
      if (::ftruncate(j->fd.get(), 0) != 0) problem(std::string("cannot empty the journal: ") + std::strerror(errno));
      set_pending(0);
      return true;
    }
    if (!db_) {
      keep_in_journal(*j, rows);
      return true;
    }
    // Streamed: the journal's records go into the open transaction a chunk
    // at a time (memory stays bounded however long the journal), then ours.
    Batch batch;
    std::size_t skipped = 0;
    bool ok = read_journal(*j, skipped, [&](const std::vector<Row>& chunk) { return put(chunk, batch); });
    if (skipped > 0) log("skipped " + std::to_string(skipped) + " bytes of the journal that were no record");
    ok = ok && put(rows, batch);
    if (ok) {
      try {
        db_->commit();
      } catch (const Error& e) {
        fail_db(e.what());
        ok = false;
      }
    }
    if (!ok) {
      if (db_) db_->rollback();
      keep_in_journal(*j, rows);  // the records stay where they are; ours join them
      return true;
    }
    rows.clear();
    publish(batch);
    if (::ftruncate(j->fd.get(), 0) != 0) problem(std::string("cannot empty the journal: ") + std::strerror(errno));
    set_pending(0);
    return true;
  }

  void open_db(double now) {
    try {
      db_ = std::make_unique<history::Db>(cfg_.db_path);
      if (!machine_recorded_) {
        db_->add_machine(started_ns_, cfg_.cores, cfg_.gpus, cfg_.identity);
        machine_recorded_ = true;
      }
      std::vector<Row> newest = db_->newest(static_cast<int>(kRecent));
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (recent_.empty()) recent_.assign(newest.begin(), newest.end());
      }
      if (!learned_) {
        std::vector<RunTime> runs;
        for (const Row& r : db_->newest_ok_runs(cfg_.learn_rows)) {
          if (std::optional<RunTime> t = run_time_of(r)) runs.push_back(std::move(*t));
        }
        learned_ = true;
        hand_over(std::move(runs));
      }
      healed();
    } catch (const Error& e) {
      db_.reset();
      next_open_ = now + cfg_.retry_s;
      problem(e.what());
    }
  }

  void prune(double now) {
    next_prune_ = now + cfg_.prune_s;
    stored_since_prune_ = false;
    try {
      std::int64_t gone = db_->prune(cfg_.keep, realtime_ns());
      if (gone > 0) log("retention removed " + std::to_string(gone) + " old job(s)");
    } catch (const Error& e) {
      fail_db(e.what());
    }
  }

  // The database failed: closed, opened anew in retry_s.
  void fail_db(const std::string& what) {
    db_.reset();
    next_open_ = now_s() + cfg_.retry_s;
    problem(what);
  }

  // What a transaction changed, published to status once it is committed:
  // the totals' change, the newest rows, and rows that replaced others.
  struct Batch {
    std::vector<RunTime> run_times;  // of the rows newly stored
    Totals delta;
    std::deque<Row> newest;     // at most kRecent
    std::vector<Row> replaced;  // a launcher's row over the daemon's (rare)
  };

  // Upserts rows into the open transaction; false (database failed, rolled
  // back and closed) on failure.
  bool put(const std::vector<Row>& rows, Batch& batch) {
    if (rows.empty()) return true;
    std::vector<history::UpsertResult> res;
    try {
      res = db_->put(rows);
    } catch (const Error& e) {
      db_->rollback();
      fail_db(e.what());
      return false;
    }
    for (std::size_t i = 0; i < rows.size(); ++i) {
      if (res[i].what == history::Stored::kUnchanged) continue;
      if (res[i].replaced) batch.delta.add(*res[i].replaced, -1);
      batch.delta.add(rows[i], +1);
      if (std::optional<RunTime> t = run_time_of(rows[i])) batch.run_times.push_back(std::move(*t));
      Row r = rows[i];
      r.id = res[i].id;
      if (res[i].what == history::Stored::kReplaced) batch.replaced.push_back(r);
      batch.newest.push_back(std::move(r));
      if (batch.newest.size() > kRecent) batch.newest.pop_front();
    }
    return true;
  }

  // Rows in their own transaction (no journal); true once committed.
  bool store(const std::vector<Row>& rows) {
    Batch batch;
    try {
      db_->begin();
    } catch (const Error& e) {
      fail_db(e.what());
      return false;
    }
    if (!put(rows, batch)) return false;
    try {
      db_->commit();
    } catch (const Error& e) {
      db_->rollback();
      fail_db(e.what());
      return false;
    }
    publish(batch);
    return true;
  }

  // Queues run times for the event loop and wakes it.
  void hand_over(std::vector<RunTime> runs) {
    if (runs.empty()) return;
    {
      std::lock_guard<std::mutex> lk(mu_);
      for (RunTime& r : runs) run_times_.push_back(std::move(r));
    }
    std::uint64_t one = 1;
    (void)!::write(done_.get(), &one, sizeof one);
  }

  void publish(Batch& batch) {
    hand_over(std::move(batch.run_times));
    if (batch.newest.empty()) return;
    stored_since_prune_ = true;
    std::lock_guard<std::mutex> lk(mu_);
    totals_.jobs += batch.delta.jobs;
    totals_.failed += batch.delta.failed;
    totals_.timed_out += batch.delta.timed_out;
    totals_.core_seconds += batch.delta.core_seconds;
    auto shown = [&](const Row& r) {
      return std::find_if(recent_.begin(), recent_.end(), [&](const Row& x) { return x.tag == r.tag; });
    };
    for (const Row& r : batch.replaced) {
      if (auto it = shown(r); it != recent_.end()) *it = r;
    }
    for (const Row& r : batch.newest) {
      if (auto it = shown(r); it != recent_.end()) {
        *it = r;
      } else {
        recent_.push_back(r);
        if (recent_.size() > kRecent) recent_.pop_front();
      }
    }
  }

  // Moves every byte launchers appended to the journal into the staging
  // file and empties the journal, under the journal's lock: launchers wait
  // for it only as long as a copy takes (they give up waiting after a
  // while: proto/history.h), never across our database's transaction. A
  // crash after the copy and before the truncation leaves records in both
  // files: rows are keyed by tag, so nothing is stored twice. False when a
  // launcher holds the lock (try again soon).
  bool take_journal() {
    struct stat st;
    if (::stat(cfg_.journal.c_str(), &st) != 0 || st.st_size == 0) return true;
    std::optional<Journal> j = open_journal(cfg_.journal, false);
    if (!j) return true;
    if (::flock(j->fd.get(), LOCK_EX | LOCK_NB) != 0) return false;
    Fd out(::open(staging_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!out) {
      problem_journal(std::string("cannot open the staging file: ") + std::strerror(errno));
      return true;  // the records stay in the journal
    }
    off_t before = ::lseek(out.get(), 0, SEEK_END);
    std::string buf(1u << 20, '\0');
    off_t at = 0;
    for (;;) {
      ssize_t n = ::pread(j->fd.get(), buf.data(), buf.size(), at);
      if (n < 0 && errno == EINTR) continue;
      bool ok = n >= 0;
      for (ssize_t w = 0; ok && w < n;) {
        ssize_t k = ::write(out.get(), buf.data() + w, static_cast<std::size_t>(n - w));
        if (k < 0 && errno == EINTR) continue;
        ok = k > 0;
        w += ok ? k : 0;
      }
      if (!ok) {
        problem_journal(std::string("cannot move the journal to the staging file: ") + std::strerror(errno));
        if (before >= 0 && ::ftruncate(out.get(), before) != 0) {
        }
        return true;  // the records stay in the journal
      }
      if (n == 0) break;
      at += n;
    }
    if (::ftruncate(j->fd.get(), 0) != 0) problem_journal(std::string("cannot empty the journal: ") + std::strerror(errno));
    return true;
  }

  // The journal, if it is a regular file of ours. create: make it (to put
  // our rows in it). A thing that is not ours is removed (our private
  // directory: launchers make a proper one anew) and logged once.
  std::optional<Journal> open_journal(const std::string& path, bool create) {
    int flags = O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | (create ? O_CREAT : 0);
    Journal j;
    j.fd = Fd(::open(path.c_str(), flags, 0600));
    if (!j.fd) {
      if (errno != ENOENT) {
        problem_journal(std::string("cannot open the journal: ") + std::strerror(errno));
        if (errno == ELOOP) ::unlink(path.c_str());
      }
      return std::nullopt;
    }
    struct stat st;
    const char* why = nullptr;
    if (::fstat(j.fd.get(), &st) != 0) {
      why = "cannot stat it";
    } else if (!S_ISREG(st.st_mode)) {
      why = "not a regular file";
    } else if (st.st_uid != ::geteuid()) {
      why = "owned by another user";
    }
    if (why) {
      problem_journal(std::string("the journal is ") + why + "; removed it");
      ::unlink(path.c_str());
      return std::nullopt;
    }
    j.size = st.st_size;
    return j;
  }

  void problem_journal(const std::string& what) {
    if (logged_.insert(what).second) log(what);
  }

  // Reads every record (under the lock), handing them to take a chunk at a
  // time. False on a read error (logged) or when take fails.
  template <typename Take>
  bool read_journal(Journal& j, std::size_t& skipped, Take take) {
    std::string buf;
    off_t at = 0;
    for (;;) {
      std::size_t have = buf.size();
      buf.resize(have + kReadChunk);
      ssize_t n = ::pread(j.fd.get(), buf.data() + have, kReadChunk, at);
      if (n < 0 && errno == EINTR) {
        buf.resize(have);
        continue;
      }
      if (n < 0) {
        problem_journal(std::string("cannot read the journal: ") + std::strerror(errno));
        return false;
      }
      buf.resize(have + static_cast<std::size_t>(n));
      at += n;
      bool end = n == 0;
      history::JournalScan s = history::scan_journal(buf, end);
      skipped += s.skipped;
      buf.erase(0, s.consumed);
      if (!take(s.rows)) return false;
      if (end) return true;
    }
  }

  // The database is down: our rows are appended as records, and past the
  // cap the oldest records go (the newest half of the cap is kept).
  void keep_in_journal(Journal& j, const std::vector<Row>& rows) {
    off_t size = j.size;
    for (const Row& r : rows) {
      jiffy_history_record rec = history::to_record(r);
      if (::pwrite(j.fd.get(), &rec, sizeof rec, size) == static_cast<ssize_t>(sizeof rec)) {
        size += static_cast<off_t>(sizeof rec);
      } else {
        problem_journal(std::string("cannot append to the journal: ") + std::strerror(errno));
        if (::ftruncate(j.fd.get(), size) != 0) {
        }
        break;
      }
    }
    if (static_cast<std::size_t>(size) > cfg_.journal_cap) size = trim(j, size);
    set_pending(static_cast<std::int64_t>(size) / JIFFY_HISTORY_RECORD_SIZE);
  }

  off_t trim(Journal& j, off_t size) {
    std::size_t keep = cfg_.journal_cap / 2;
    off_t from = (size - static_cast<off_t>(keep)) & ~off_t{7};
    std::string buf(static_cast<std::size_t>(size - from), '\0');
    ssize_t n = ::pread(j.fd.get(), buf.data(), buf.size(), from);
    if (n < 0) return size;
    buf.resize(static_cast<std::size_t>(n));
    history::JournalScan s = history::scan_journal(buf, true);
    std::string out;
    out.reserve(s.rows.size() * JIFFY_HISTORY_RECORD_SIZE);
    for (const Row& r : s.rows) {
      jiffy_history_record rec = history::to_record(r);
      out.append(reinterpret_cast<const char*>(&rec), sizeof rec);
    }
    if (::ftruncate(j.fd.get(), 0) != 0) return size;
    ssize_t w = ::pwrite(j.fd.get(), out.data(), out.size(), 0);
    off_t now = w > 0 ? w : 0;
    std::int64_t dropped = (static_cast<std::int64_t>(size) - now) / JIFFY_HISTORY_RECORD_SIZE;
    if (!cap_said_) {
      log("the journal passed " + std::to_string(cfg_.journal_cap >> 20) +
          " MiB while the database is unavailable: dropped its oldest " + std::to_string(dropped) +
          " record(s) (said once)");
      cap_said_ = true;
    }
    return now;
  }

  void set_pending(std::int64_t n) {
    std::lock_guard<std::mutex> lk(mu_);
    pending_ = n;
  }

  HistoryWriterConfig cfg_;
  // <key>.history.ingest: records taken from the journal, until stored.
  std::string staging_ = cfg_.journal + ".ingest";
  Fd done_;
  std::thread thread_;

  // Shared with the event loop, under mu_.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::vector<Row> rows_;
  std::size_t queued_rows_ = 0;  // rows handed over and not stored nor journaled yet
  std::vector<std::uint64_t> asks_;
  std::vector<std::uint64_t> done_asks_;
  std::string db_shown_;
  std::string error_;
  std::int64_t pending_ = 0;
  std::deque<Row> recent_;
  Totals totals_;
  std::vector<RunTime> run_times_;  // learned, not yet taken by the loop

  // The thread's own.
  std::unique_ptr<history::Db> db_;
  double next_open_ = 0;
  double next_prune_ = 0;
  bool stored_since_prune_ = false;
  bool machine_recorded_ = false;
  bool learned_ = false;  // the database's run times were handed over
  bool cap_said_ = false;
  double stop_since_ = 0;
  std::int64_t started_ns_ = 0;  // the daemon started (the machines row)
  std::set<std::string> logged_;
};

}  // namespace

double core_seconds(const history::Row& row) {
  if (row.start_ns == 0 || row.end_ns <= row.start_ns) return 0;
  std::set<int> cores;
  for (const auto& rank : history::parse_core_lists(row.cores)) cores.insert(rank.begin(), rank.end());
  double n = cores.empty() ? row.ntasks : static_cast<double>(cores.size());
  return n * static_cast<double>(row.end_ns - row.start_ns) / 1e9;
}

std::unique_ptr<HistoryService> start_history_writer(HistoryWriterConfig config) {
  return std::make_unique<HistoryWriter>(std::move(config));
}

}  // namespace jiffy
