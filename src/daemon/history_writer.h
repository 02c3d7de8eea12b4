// The daemon's history thread: it owns the history database's connection
// (history/db.h) and moves launch records from the journal
// (proto/history.h, <key>.history in the runtime directory) into it.
//
// The event loop (daemon/server.h) never touches SQLite and never waits
// for this thread. It talks to it through HistoryService: record() and
// ask() queue work under a mutex and wake the thread; the thread answers
// asks through done_fd() (an eventfd the loop polls) and completed(); the
// loop reads what status shows (state, recent rows, totals) from a
// snapshot the thread publishes under that mutex, never held across I/O.
//
// The thread ingests at most poll_s after a record arrives (it stats the
// journal once a poll period: an idle daemon wakes once a second for a
// stat()) and at once when asked. One ingestion: open the journal
// (O_NOFOLLOW, a regular file of ours), flock(LOCK_EX|LOCK_NB) (a writer
// holding it: retried a few ms later), copy it to the staging file
// <key>.history.ingest and empty it, unlock (so launchers never wait for
// the database); then read every record of the staging file (scan_journal
// skips garbage), upsert them with the daemon's own rows in one
// transaction, commit, empty the staging file. A crash anywhere in between
// leaves the records in one of the two files (or both); rows are keyed by
// tag, so reading them again stores nothing twice.
//
// When the database cannot be used (no directory, locked, corrupt, full,
// read-only) launches go on: records wait in the staging file (capped at
// journal_cap: the oldest are dropped, which is logged), the daemon's own
// rows are appended to it, each distinct problem is logged once, the
// database is opened anew every retry_s (a corrupt file deleted heals),
// and the problem shows in history_reply and status. With history off the
// journal is only emptied, so it never grows.
//
// Retention (history::Retention) runs after a store, at most once per
// prune_s: a daemon's first store prunes at once.
//
// Run times (daemon/run_times.h) go the same way as answers: the thread
// queues those of the rows it reads or stores, and done_fd wakes the loop.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "daemon/run_times.h"
#include "history/db.h"
#include "history/row.h"
#include "proto/message.h"

namespace jiffy {

// The event loop's view of the history thread. Every call is cheap and
// never blocks on the database.
class HistoryService {
 public:
  virtual ~HistoryService() = default;
  // Readable while completed() has tokens to hand back.
  virtual int done_fd() const = 0;
  // A row the daemon observed itself (a launcher vanished): stored with the
  // next ingestion (or put in the journal while the database is down).
  virtual void record(history::Row row) = 0;
  // Ingest now; token comes back from completed() once that was tried.
  virtual void ask(std::uint64_t token) = 0;
  // Tokens whose ingestion was tried since the last call (drains done_fd).
  virtual std::vector<std::uint64_t> completed() = 0;
  // The run times learned since the last call, oldest first (for RunTimes):
  // once the database's newest successes (up to learn_rows) when it is
  // first opened, then those of every batch stored. done_fd turns readable
  // when some wait. Taken before the asks they answer are completed, so a
  // `history` reply means its runs are known.
  virtual std::vector<RunTime> take_run_times() = 0;
  // {db, error, pending}: docs/history.md, "Daemon messages".
  virtual proto::Json state_json() const = 0;
  // The newest finished rows (at most 20), oldest first, as to_json gives them.
  virtual proto::Json recent_json() const = 0;
  // {since, jobs, failed, timed_out, core_seconds} since the daemon started.
  virtual proto::Json totals_json() const = 0;
};

struct HistoryWriterConfig {
  std::string journal;     // <key>.history, through the runtime directory's descriptor
  std::string db_path;     // history::default_db_path()
  bool enabled = true;     // false: --history=off / JIFFY_HISTORY=0: the journal is only emptied
  history::Retention keep;
  // This daemon, for the machines table.
  int cores = 0;
  std::string gpus;  // names, ','-separated
  std::string identity;
  std::function<void(const std::string&)> log;  // called from the thread
  double poll_s = 1.0;     // how often the journal's size is looked at
  double retry_s = 10.0;   // how often a failed database is opened anew
  double prune_s = 60.0;   // how often retention runs at most
  std::size_t journal_cap = 64u << 20;  // bytes kept while the database is down
  int learn_rows = 100000;  // run times read from the database at start (RunTimes' keys)
};

// Starts the thread. The service's destructor stops it: one last ingestion
// stores what is queued (or puts it in the journal), then it joins.
std::unique_ptr<HistoryService> start_history_writer(HistoryWriterConfig config);

// Busy core-seconds of a finished row: run time times its distinct cores
// (ntasks when it names none). 0 for a job that never ran.
double core_seconds(const history::Row& row);

}  // namespace jiffy
