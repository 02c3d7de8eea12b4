// The server's side of the history (docs/history.md): the rows the daemon
// writes itself, for launches no launcher is left to report (a launcher
// killed while its job ran: lost; while it waited: cancelled), and the
// `history` message. The database itself is the history thread's
// (daemon/history_writer.h); nothing here waits for it.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "daemon/server_internal.h"
#include "util/error.h"
#include "util/fd.h"
#include "util/process.h"
#include "util/sys.h"

namespace jiffy {

using namespace server_detail;

namespace {

std::string join_cores(const std::vector<std::vector<int>>& ranks) {
  std::string out;
  for (std::size_t i = 0; i < ranks.size(); ++i) {
    if (i) out += ';';
    out += format_cpu_list(ranks[i]);
  }
  return out;
}

std::string join_names(const std::vector<std::vector<std::string>>& ranks) {
  std::string out;
  for (std::size_t i = 0; i < ranks.size(); ++i) {
    if (i) out += ';';
    for (std::size_t k = 0; k < ranks[i].size(); ++k) out += (k ? "," : "") + ranks[i][k];
  }
  bool any = std::any_of(ranks.begin(), ranks.end(), [](const auto& r) { return !r.empty(); });
  return any ? out : std::string();
}

// At most n bytes of s, on a character boundary (the record's fields are
// fixed; to_record would cut the same way but flag the whole row).
std::string cut(const std::string& s, std::size_t n) {
  if (s.size() <= n) return s;
  std::size_t at = n;
  while (at > 0 && (static_cast<unsigned char>(s[at]) & 0xC0) == 0x80) --at;
  return s.substr(0, at);
}

// PF_EXITING (include/linux/sched.h): set first thing in do_exit(), before
// the process's descriptors are closed, so a launcher killed by SIGKILL has
// it by the time its hang-up reaches us.
constexpr unsigned long kPfExiting = 0x4;

}  // namespace

// Whether the process that connected as c goes on: a front that handed its
// job over closes its connection and lives on as jiffy-launch (which asks
// anew and reports the launch itself); a launcher killed does not.
bool Server::launcher_lives_on(const Client& c) const {
  std::optional<ProcStat> st = read_proc_stat(c.peer_pid);
  if (!st || st->start != c.peer_start || st->state == 'Z' || st->state == 'X') return false;
  return !(st->flags & kPfExiting);
}

// What the daemon knows of a client's launch. end_ns is now; a lost job's
// is set again once its group is empty.
history::Row Server::history_row(const Client& c, int outcome, const char* reason) const {
  history::Row r;
  r.tag = c.group.tag;
  r.job = c.job;
  r.source = JIFFY_HISTORY_FROM_DAEMON;
  r.outcome = outcome;
  r.pid = c.pid;
  r.ntasks = c.request.ntasks;
  r.flags = (c.lane ? JIFFY_HISTORY_LANE : 0u) | (c.oversubscribed ? JIFFY_HISTORY_OVERSUBSCRIBED : 0u);
  r.submit_ns = c.submit_ns;
  bool ran = c.state != JobState::Queued && c.state != JobState::Cancelled;
  r.start_ns = ran ? c.start_ns : 0;
  r.end_ns = realtime_ns();
  r.label = cut(c.label, sizeof(jiffy_history_record::label) - 1);
  r.command = cut(c.command, sizeof(jiffy_history_record::command) - 1);
  r.cwd = cut(c.cwd, sizeof(jiffy_history_record::cwd) - 1);
  if (ran) {
    r.cores = join_cores(c.rank_cores);
    if (r.cores.size() >= sizeof(jiffy_history_record::cores)) r.cores.clear();
    r.gpus = join_names(c.rank_gpus);
    if (r.gpus.size() >= sizeof(jiffy_history_record::gpus)) r.gpus.clear();
  }
  r.reason = reason;
  return r;
}

// A job recovered from a predecessor's ledger whose launcher never came
// back: what the ledger says.
history::Row Server::history_row(const StoredJob& job) const {
  history::Row r;
  r.tag = job.group.tag;
  r.job = job.grant.id;
  r.source = JIFFY_HISTORY_FROM_DAEMON;
  r.outcome = JIFFY_OUTCOME_LOST;
  r.pid = job.pid;
  r.ntasks = job.ntasks;
  r.command = cut(job.command, sizeof(jiffy_history_record::command) - 1);
  r.end_ns = realtime_ns();
  r.reason = "launcher vanished (killed?)";
  return r;
}

// A lane job whose dead launcher left its record on its slots, all cleaned now.
void Server::record_lane_lost(const LaneJob& job) {
  history::Row r;
  r.tag = job.tag;
  r.job = job.job;
  r.source = JIFFY_HISTORY_FROM_DAEMON;
  r.outcome = JIFFY_OUTCOME_LOST;
  r.pid = job.pid;
  r.ntasks = job.count;
  r.flags = JIFFY_HISTORY_LANE;
  std::int64_t now = realtime_ns();
  double ago = std::max(0.0, boot_s() - job.claimed_s);
  r.submit_ns = r.start_ns = now - static_cast<std::int64_t>(ago * 1e9);
  r.end_ns = now;
  r.command = cut(job.command, sizeof(jiffy_history_record::command) - 1);
  std::vector<std::vector<int>> ranks;
  for (int u = job.first; u < job.first + job.count && u < lane_.size(); ++u) ranks.push_back({lane_.slot(u).core});
  r.cores = join_cores(ranks);
  if (r.cores.size() >= sizeof(jiffy_history_record::cores)) r.cores.clear();
  r.reason = "launcher vanished (killed?)";
  record(std::move(r));
}

// Rows without a tag cannot be keyed (no launcher of ours omits it).
void Server::record(history::Row row) {
  if (!config_.history || row.tag.empty()) return;
  config_.history->record(std::move(row));
}

proto::Json Server::history_state() const {
  if (!config_.history) return {{"db", ""}, {"error", "off (this daemon keeps no history)"}, {"pending", 0}};
  return config_.history->state_json();
}

// Answered once the history thread has ingested the journal (history_done).
void Server::handle_history(Client& c, const proto::Json& msg) {
  if (proto::get_int(msg, "v", 0, 1 << 20) != proto::kVersion) throw Error("protocol version mismatch");
  if (!config_.history) {
    proto::Json reply = history_state();
    reply["type"] = proto::type::kHistoryReply;
    send(c, reply);
    return;
  }
  config_.history->ask(c.serial);
}

void Server::history_done() {
  // Run times first: a `history` reply then means its runs are known.
  for (const RunTime& r : config_.history->take_run_times()) run_times_.add(r);
  std::vector<std::uint64_t> done = config_.history->completed();
  if (done.empty()) return;
  proto::Json reply = history_state();
  reply["type"] = proto::type::kHistoryReply;
  for (std::uint64_t serial : done) {
    for (auto& [fd, c] : clients_) {
      if (c->serial != serial) continue;
      send(*c, reply);  // a client gone meanwhile is simply not found
      break;
    }
  }
}

}  // namespace jiffy
