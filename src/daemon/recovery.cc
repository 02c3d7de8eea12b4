// Server's recovery from a predecessor's crash: adopting the stored ledger,
// launchers re-attaching, and the parked queue (see docs/protocol.md,
// "Surviving a daemon crash").
#include <algorithm>

#include "daemon/server.h"
#include "daemon/server_internal.h"
#include "util/error.h"
#include "util/process.h"
#include "util/sys.h"

namespace jiffy {

using namespace server_detail;

// Takes over the ledger of a predecessor that died: every grant in the
// state file is held again; those whose launchers live wait for them to
// re-attach (and nothing is granted meanwhile), those whose launchers died
// are killed and released once their process group is empty.
void Server::recover() {
  StoredState st = state_file_.load();
  lane_.raise_next_job(st.next_job);
  for (const StoredJob& job : st.jobs) {
    lane_.raise_next_job(job.grant.id + 1);
    try {
      sched_.adopt(job.grant);
    } catch (const Error& e) {
      log(std::string("state file: ") + e.what());
      continue;
    }
    if (process_alive(job.pid, job.pid_start)) {
      detached_[job.grant.id] = job;
    } else {
      lose(job);
    }
  }
  if (!st.jobs.empty()) {
    log("recovered " + std::to_string(st.jobs.size()) + " job(s) from " + state_file_.path() +
        ": " + std::to_string(detached_.size()) + " running, waiting for them to re-attach");
  }
  if (!detached_.empty() || config_.unclean_start) {
    recovering_ = true;
    recovery_deadline_ = now_s() + kRecoveryWindowS;
    if (config_.unclean_start) recovery_hold_until_ = now_s() + kUncleanHoldS;
  }
  persist();
}

void Server::check_detached() {
  double now = now_s();
  if (detached_.empty() && !recovering_) return;
  if (now < next_liveness_check_ && !(recovering_ && (now >= recovery_deadline_ ||
                                                     (now >= recovery_hold_until_ && detached_.empty())))) {
    return;
  }
  next_liveness_check_ = now + (recovering_ ? 0.01 : kLivenessPeriodS);
  bool changed = false;
  for (auto it = detached_.begin(); it != detached_.end();) {
    if (process_alive(it->second.pid, it->second.pid_start)) {
      ++it;
      continue;
    }
    lose(it->second);
    it = detached_.erase(it);
    changed = true;
  }
  if (changed) persist();
  maybe_end_recovery();
  if (changed) schedule_pass();
}

// Once every surviving job is back (or the window has passed), the parked
// requests are queued in their original order and scheduling resumes.
void Server::maybe_end_recovery() {
  double now = now_s();
  if (!recovering_ || now < recovery_hold_until_ || (!detached_.empty() && now < recovery_deadline_)) {
    return;
  }
  recovering_ = false;
  std::sort(parked_.begin(), parked_.end(),
            [](const Client* a, const Client* b) { return a->job < b->job; });
  for (Client* c : parked_) sched_.cancel(c->job);
  for (Client* c : parked_) sched_.submit_in_order(c->request);  // validated when it came
  log("recovery done; " + std::to_string(detached_.size()) + " job(s) never re-attached, " +
      std::to_string(parked_.size()) + " request(s) queued in their original order");
  parked_.clear();
  schedule_pass();
}

void Server::handle_reattach(Client& c, const proto::Json& msg) {
  if (proto::get_int(msg, "v", 0, 1 << 20) != proto::kVersion)
    throw Error("protocol version mismatch");
  if (c.job != 0) throw Error("reattach on a connection that already holds a job");
  JobId id = static_cast<JobId>(proto::get_int(msg, "job", 1, INT64_MAX / 2));
  if (jobs_.count(id) || lost_.count(id))
    throw Error("job " + std::to_string(id) + " is already attached");
  StoredJob job;
  std::vector<int> lane_units;  // a job that took its slots from our predecessor's lane
  if (auto it = detached_.find(id); it != detached_.end()) {
    if (it->second.pid != c.peer_pid)
      throw Error("job " + std::to_string(id) + " belongs to another launcher");
    job = it->second;
    detached_.erase(it);
  } else {
    // Not in the state file (it could not be written or was lost): take the
    // launcher's word for its grant, unless that would double-book.
    job.grant.id = id;
    const proto::Json& slots = msg.at("slots");
    if (!slots.is_array() || slots.size() > (1u << 20))
      throw Error("malformed reattach message: slots");
    for (const proto::Json& pair : slots) {
      if (!pair.is_array() || pair.size() != 2 || !pair[0].is_number_integer() ||
          !pair[1].is_number_integer()) {
        throw Error("malformed reattach message: slot");
      }
      job.grant.slots.push_back({pair[0].get<int>(), pair[1].get<int>()});
    }
    job.grant.gpus = proto::get_int_list(msg, "gpu_ids", 1 << 20, 0, 1 << 20);
    job.grant.exclusive = proto::get_bool(msg, "exclusive", false);
    job.pid = c.peer_pid;
    job.pid_start = c.peer_start;
    lane_units = lane_held(job.grant);
    if (lane_units.empty()) {
      try {
        sched_.adopt(job.grant);
      } catch (const Error& e) {
        drop(c, e.what());
        return;
      }
    }
    lane_.raise_next_job(id + 1);
    lane_.resync();
  }
  pid_t pgid = static_cast<pid_t>(proto::get_int(msg, "pgid", 0, 1 << 30));
  if (std::optional<JobGroup> g = job_group_of_child(pgid, c.peer_pid)) {
    g->tag = msg.contains("tag") ? proto::get_string(msg, "tag", 64) : "";
    job.group = *g;
  } else if (pgid != 0) {
    log("job " + std::to_string(id) + ": ignoring process group " + std::to_string(pgid) +
        ", not led by a child of its launcher");
    job.group = {};
  }
  job.ntasks = static_cast<int>(proto::get_int(msg, "ntasks", 0, 1 << 20));
  job.command = proto::get_string(msg, "command", kMaxCommandLen);
  if (msg.contains("jobdir")) job.jobdir = proto::get_string(msg, "jobdir", 4096);
  if (!lane_units.empty()) claim(c, id, lane_units);
  attach(c, job);
}

void Server::attach(Client& c, const StoredJob& job) {
  c.job = job.grant.id;
  c.state = JobState::Running;
  c.grant = job.grant;
  c.group = job.group;
  c.request.id = job.grant.id;
  c.request.ntasks = job.ntasks;
  c.command = job.command;
  c.jobdir = job.jobdir;
  c.pid = job.pid;
  c.submitted_at = c.granted_at = now_s();
  jobs_[c.job] = &c;
  persist();
  send(c, {{"type", proto::type::kOk}});
  log("job " + std::to_string(c.job) + " re-attached");
  maybe_end_recovery();
}

// Queue positions for launchers that show a status line (stderr on a tty).
}  // namespace jiffy
