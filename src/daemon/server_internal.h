// Server internals shared by server.cc and recovery.cc: the per-client
// record and a few helpers. Not part of the daemon's interface.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "daemon/job_state.h"
#include "daemon/server.h"
#include "util/fd.h"
#include "util/process.h"

namespace jiffy {
namespace server_detail {

constexpr std::size_t kMaxClients = 8192;
constexpr std::size_t kMaxCommandLen = 4096;
constexpr std::size_t kMaxCwdLen = 4096;   // "cwd" of submit/lane (the history keeps 1023 bytes)
constexpr std::size_t kMaxLabelLen = 1024; // "label" of submit/lane (the history keeps 127)
// Replies a client has not read yet. One client beyond its share, or all
// of them beyond the budget (then the largest backlog goes), is dropped: a
// client that asks without reading must not grow the daemon. A status
// reply for thousands of jobs is about 2 MiB; one message alone is always
// accepted.
constexpr std::size_t kMaxPendingOutput = 4 * 1024 * 1024;
constexpr std::size_t kMaxPendingTotal = 32 * 1024 * 1024;
// Queue positions go out at most this often (each grant moves every
// waiting request: sent each time, 1,500 waiting launchers got a million).
constexpr double kPositionPeriodS = 1.0;
constexpr double kLostJobGraceS = 5.0;    // how long a killed group may take to vanish
constexpr double kRecoveryWindowS = 3.0;  // how long re-attaching launchers get
constexpr double kUncleanHoldS = 0.5;     // grants held after a crash the state file may not show
constexpr double kLivenessPeriodS = 0.1;  // how often detached launchers are checked
constexpr double kHealPeriodS = 0.5;      // how often the socket file is checked
constexpr double kLaneCheckPeriodS = 0.5; // how often lane jobs' launchers are checked

Bind parse_bind(const std::string& s);
// Whether path is a job directory a launcher of ours made for job id.
bool is_job_dir(const std::string& path, JobId id);

}  // namespace server_detail

// One connection: a launcher's request for its whole life, or a status/stop query.
struct Server::Client {
  Fd fd;
  pid_t peer_pid = 0;  // from SO_PEERCRED: what the state file trusts
  unsigned long long peer_start = 0;
  proto::FrameDecoder decoder;
  std::string out;       // encoded frames not yet written
  bool closing = false;  // drop once `out` is flushed
  JobId job = 0;
  JobState state = JobState::Submitted;
  Request request;
  Bind bind = Bind::Core;
  bool wants_progress = false;
  int last_position = -1;  // the position it last heard
  int pid = 0;  // the launcher's pid, for status
  // The ranks' processes: the tag from "submit" (so that a launcher that
  // dies before "started" still has its ranks found), the group once
  // "started" named it and it checked out.
  JobGroup group;
  std::string command;
  std::string jobdir;
  double submitted_at = 0;
  double granted_at = 0;
  Grant grant;
  bool lane = false;  // took its slots from the lane itself ("lane" message)
  // For the history (docs/history.md): never 0 or reused in one daemon's
  // life, so a reply the history thread completes late finds its client.
  std::uint64_t serial = 0;
  std::string cwd, label;           // "submit"/"lane", optional
  std::int64_t submit_ns = 0;       // CLOCK_REALTIME: the submit arrived
  std::int64_t start_ns = 0;        // CLOCK_REALTIME: granted
  std::vector<std::vector<int>> rank_cores;          // per rank, the daemon's core numbers
  std::vector<std::vector<std::string>> rank_gpus;   // per rank, GPU names
  bool oversubscribed = false;      // ranks share cores
  // A spawn's cores (daemon/families.h): the job whose launcher asked. It
  // shares that job's process group and tag, and owns no tag of its own.
  JobId parent = 0;
  JobId asker = 0;  // the spawn whose ranks asked for this one (0: the job's own)
};

}  // namespace jiffy
