#include "launch/history_journal.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "proto/history.h"
#include "sched/layout.h"
#include "util/error.h"
#include "util/process.h"
#include "util/runtime_dir.h"
#include "util/sys.h"

namespace jiffy {

std::string history_label(const char* label_env, const std::string& cwd) {
  if (label_env && *label_env) return label_env;
  std::string base = cwd.substr(cwd.rfind('/') + 1);
  return base.rfind("run", 0) == 0 ? base : std::string();
}

std::string rank_core_lists(const JobGrant& grant) {
  std::string s;
  for (std::size_t r = 0; r < grant.ranks.size(); ++r) {
    if (r) s += ';';
    s += format_cpu_list(grant.ranks[r].cores);
  }
  return s;
}

std::string rank_gpu_lists(const JobGrant& grant) {
  std::string s;
  bool any = false;
  for (std::size_t r = 0; r < grant.ranks.size(); ++r) {
    if (r) s += ';';
    for (std::size_t g = 0; g < grant.ranks[r].gpus.size(); ++g) {
      s += (g ? "," : "") + grant.ranks[r].gpus[g];
      any = true;
    }
  }
  return any ? s : std::string();
}

namespace {

std::string working_directory() {
  char buf[PATH_MAX + 1];
  return ::getcwd(buf, sizeof buf) ? std::string(buf) : std::string();
}

// One line: a reason is shown in a table.
std::string one_line(std::string s) {
  for (char& c : s) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  return s;
}

}  // namespace

LaunchHistory::LaunchHistory(const LaunchOptions& opt, std::string command, std::int64_t submit_ns) {
  row_.source = JIFFY_HISTORY_FROM_LAUNCHER;
  row_.pid = static_cast<int>(::getpid());
  row_.ntasks = opt.total_tasks();
  row_.ngroups = static_cast<int>(opt.apps.size());
  row_.submit_ns = submit_ns;
  row_.command = std::move(command);
  row_.cwd = working_directory();
  row_.label = history_label(std::getenv("JIFFY_LABEL"), row_.cwd);
}

void LaunchHistory::handed_over(const Handoff& h) {
  row_.flags |= JIFFY_HISTORY_HANDED_OVER;
  if (h.lane) row_.flags |= JIFFY_HISTORY_LANE;
  if (h.submit_ns > 0) row_.submit_ns = h.submit_ns;
  row_.start_ns = h.start_ns > 0 ? h.start_ns : realtime_ns();
  row_.tag = h.tag;
}

void LaunchHistory::granted(const JobGrant& grant) {
  row_.job = grant.id;
  row_.cores = rank_core_lists(grant);
  row_.gpus = rank_gpu_lists(grant);
  std::vector<std::vector<int>> cores;
  for (const RankGrant& r : grant.ranks) cores.push_back(r.cores);
  if (ranks_share_cpus(cores)) row_.flags |= JIFFY_HISTORY_OVERSUBSCRIBED;
}

void LaunchHistory::slurm_step(const std::string& step, const std::string& nodes) {
  row_.step = step;
  row_.nodes = nodes;
  row_.flags |= JIFFY_HISTORY_SLURM;
}

void LaunchHistory::not_started(std::string reason) {
  row_.start_ns = 0;
  refused(std::move(reason));
}

void LaunchHistory::ended(const Job::Ending& e) {
  row_.outcome = e.outcome;
  row_.signal = e.signal;
  row_.end_ns = e.end_ns;
  outcome_set_ = true;
}

void LaunchHistory::refused(std::string reason) {
  row_.outcome = JIFFY_OUTCOME_REFUSED;
  row_.reason = one_line(std::move(reason));
  outcome_set_ = true;
}

void LaunchHistory::interrupted(int signo) {
  row_.outcome = JIFFY_OUTCOME_SIGNALED;
  row_.signal = signo;
  outcome_set_ = true;
}

void LaunchHistory::failed(const std::string& why) {
  if (row_.start_ns == 0) {
    refused(why);
    return;
  }
  // The launcher itself failed while the ranks ran (they are gone: the
  // Job's destructor and their parent-death signal saw to it).
  row_.outcome = JIFFY_OUTCOME_EXITED;
  row_.reason = one_line(why);
  outcome_set_ = true;
}

history::Row LaunchHistory::row(int exit_code) const {
  history::Row r = row_;
  if (!outcome_set_) r.outcome = JIFFY_OUTCOME_EXITED;
  r.exit_code = exit_code;
  if (r.end_ns == 0) r.end_ns = realtime_ns();  // not ended (refused, failed): now
  if (r.tag.empty()) r.tag = new_job_tag();  // refused before the job had one
  if (r.start_ns != 0) {
    // The ranks' CPU time and peak memory: every child we reaped, which
    // survives the front's exec into us. It counts the jiffy-pmix helper
    // of an Open MPI job behind a wrapper (the PMIx rendezvous,
    // launch/bootstrap.h) too: a child of ours, killed and reaped with
    // what the ranks left before the record is made. A daemon this
    // launcher started is not, but the instant intermediate process that
    // detached it is (launch/client.cc): next to nothing, but its peak RSS
    // (the launcher's at the fork) may exceed a tiny rank's.
    rusage ru{};
    if (::getrusage(RUSAGE_CHILDREN, &ru) == 0) {
      r.user_us = static_cast<std::int64_t>(ru.ru_utime.tv_sec) * 1000000 + ru.ru_utime.tv_usec;
      r.sys_us = static_cast<std::int64_t>(ru.ru_stime.tv_sec) * 1000000 + ru.ru_stime.tv_usec;
      r.maxrss_kb = ru.ru_maxrss;
    }
  }
  return r;
}

void LaunchHistory::write(int exit_code) {
  const char* off = std::getenv("JIFFY_HISTORY");
  if (off && std::strcmp(off, "0") == 0) return;
  std::string path = journal_;
  if (path.empty()) {
    try {
      path = daemon_paths().history;
    } catch (const Error&) {
      return;  // no runtime directory we trust: nowhere to write
    }
  }
  append_history_record(path, row(exit_code));
}

bool append_history_record(const std::string& path, const history::Row& row) {
  const jiffy_history_record r = history::to_record(row);
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return false;
  // Shared: writers append side by side (O_APPEND places each whole record);
  // the daemon's exclusive lock keeps appends out while it moves the
  // journal aside (proto/history.h).
  jiffy_history_lock(fd);
  ssize_t n;
  do {
    n = ::write(fd, &r, sizeof r);
  } while (n < 0 && errno == EINTR);
  ::close(fd);
  return n == static_cast<ssize_t>(sizeof r);
}

}  // namespace jiffy
