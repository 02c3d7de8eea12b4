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
  predecessor_next_job_ = lane_.peek_next_job();
  // Launches first: a spawn's tag is its parent's, so the parent's claim
  // must be known before the spawn is checked against it.
  std::stable_partition(st.jobs.begin(), st.jobs.end(),
                        [](const StoredJob& j) { return j.parent == 0; });
  for (StoredJob& job : st.jobs) {
    lane_.raise_next_job(job.grant.id + 1);
    try {
      sched_.adopt(job.grant);
    } catch (const Error& e) {
      log(std::string("state file: ") + e.what());
      continue;
    }
    const JobId owner = tags_.owner(job.group.tag);
    if (owner != 0 && owner != job.parent) {  // two jobs, one tag: it proves neither
      log("state file: job " + std::to_string(job.grant.id) + " names another job's tag; ignoring it");
      job.group.tag.clear();
    }
    if (!job.parent) tags_.claim(job.group.tag, job.grant.id);  // a spawn's is its parent's
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
  // (A spawn's cores need not come back for the queue to move: they stay
  // held, detached, until their launcher re-attaches them or exits.)
  const bool awaited = std::any_of(detached_.begin(), detached_.end(),
                                   [](const auto& kv) { return kv.second.parent == 0; });
  if (!recovering_ || now < recovery_hold_until_ || (awaited && now < recovery_deadline_)) {
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

// Only what this daemon recovered may re-attach: a job its predecessor's
// state file names (detached_), from the launcher it names, with the
// resources it names; or a lane job, recognised by its slots' records
// (its launcher holds them). Anything else would take resources outside
// the queue, and is refused.
void Server::handle_reattach(Client& c, const proto::Json& msg) {
  if (proto::get_int(msg, "v", 0, 1 << 20) != proto::kVersion)
    throw Error("protocol version mismatch");
  if (c.job != 0) throw Error("reattach on a connection that already holds a job");
  JobId id = static_cast<JobId>(proto::get_int(msg, "job", 1, kMaxJobId));
  if (jobs_.count(id) || lost_.count(id))
    throw Error("job " + std::to_string(id) + " is already attached");
  // Everything is read and checked before anything changes.
  Grant claimed;
  claimed.id = id;
  for (auto [core, slot] : proto::get_int_pairs(msg, "slots", 1 << 20, 0, (1 << 20) - 1)) {
    claimed.slots.push_back({core, slot});
  }
  claimed.gpus = proto::get_int_list(msg, "gpu_ids", 1 << 20, 0, (1 << 20) - 1);
  claimed.exclusive = proto::get_bool(msg, "exclusive", false);
  std::string tag = msg.contains("tag") ? proto::get_tag(msg) : "";
  pid_t pgid = static_cast<pid_t>(proto::get_int(msg, "pgid", 0, 1 << 30));
  int ntasks = static_cast<int>(proto::get_int(msg, "ntasks", 0, 1 << 20));
  std::string command = proto::get_string(msg, "command", kMaxCommandLen);
  std::string jobdir = msg.contains("jobdir") ? proto::get_string(msg, "jobdir", 4096) : "";
  // A spawn's cores (daemon/families.h) re-attach naming their parent.
  const JobId parent =
      msg.contains("parent") ? static_cast<JobId>(proto::get_int(msg, "parent", 1, kMaxJobId)) : 0;

  StoredJob job;
  std::vector<int> lane_units;  // a job that took its slots from our predecessor's lane
  auto it = detached_.find(id);
  if (it != detached_.end()) {
    const StoredJob& was = it->second;
    if (was.pid != c.peer_pid)
      throw Error("job " + std::to_string(id) + " belongs to another launcher");
    if (was.grant.slots != claimed.slots || was.grant.gpus != claimed.gpus ||
        was.grant.exclusive != claimed.exclusive) {
      throw Error("job " + std::to_string(id) + " holds other resources than the ledger says");
    }
    if (!was.group.tag.empty() && !tag.empty() && tag != was.group.tag)
      throw Error("job " + std::to_string(id) + " carries another tag than the ledger says");
    if (was.parent != parent) {
      const std::string is =
          was.parent ? " is a spawn of job " + std::to_string(was.parent) : std::string(" is no spawn");
      throw Error("job " + std::to_string(id) + is + ", the ledger says");
    }
    job = was;
  } else {
    lane_units = lane_held(claimed, c.peer_pid);
    // A grant our crashed predecessor made but could not write down (a full
    // disk): believed only during the recovery after its crash (nothing is
    // granted meanwhile), for an id it handed out, and only where nothing
    // else holds the resources. Refusing it would leave a running job's
    // cores to be granted again.
    bool missed = lane_units.empty() && recovering_ && config_.unclean_start && id < predecessor_next_job_;
    if (parent != 0 || (lane_units.empty() && !missed)) {  // (a spawn is never on the lane)
      throw Error("job " + std::to_string(id) +
                  " was not granted by this daemon's predecessor (nothing to re-attach)");
    }
    job.grant = claimed;
    job.pid = c.peer_pid;
    job.pid_start = c.peer_start;
  }
  if (job.group.tag.empty()) job.group.tag = tag;
  // A spawn's tag is its family's: its parent's (or no one's, once the
  // parent is gone), never a third job's; it claims none.
  if (!tag_free_for(job.group.tag, parent ? parent : id)) throw Error("the tag is another job's");

  if (it == detached_.end() && lane_units.empty()) sched_.adopt(job.grant);  // throws on a conflict
  if (it != detached_.end()) detached_.erase(it);
  if (!parent) tags_.claim(job.group.tag, id);
  if (std::optional<JobGroup> g = job_group_of_child(pgid, c.peer_pid)) {
    g->tag = job.group.tag;
    job.group = *g;
  } else {
    if (pgid != 0) {
      log("job " + std::to_string(id) + ": ignoring process group " + std::to_string(pgid) +
          ", not led by a child of its launcher");
    }
    job.group = JobGroup{0, 0, 0, job.group.tag};
  }
  job.ntasks = ntasks;
  job.command = std::move(command);
  job.jobdir = std::move(jobdir);
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
  c.parent = job.parent;
  c.submitted_at = c.granted_at = now_s();
  jobs_[c.job] = &c;
  persist();
  send(c, {{"type", proto::type::kOk}});
  log("job " + std::to_string(c.job) + " re-attached");
  maybe_end_recovery();
}

// Queue positions for launchers that show a status line (stderr on a tty).
}  // namespace jiffy
