#include "daemon/server.h"

#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "daemon/families.h"
#include "daemon/job_state.h"
#include "proto/lane.h"
#include "daemon/server_internal.h"
#include "util/error.h"
#include "util/process.h"
#include "util/sys.h"

namespace jiffy {

namespace server_detail {

Bind parse_bind(const std::string& s) {
  if (s == "core") return Bind::Core;
  if (s == "hwthread") return Bind::HwThread;
  if (s == "none") return Bind::None;
  throw Error("malformed submit message: unknown bind '" + s + "'");
}

// Whether path is a job directory a launcher of ours made for job id:
// TMPDIR/jiffy-<uid>-job<id>-XXXXXX, a real directory that we own.
bool is_job_dir(const std::string& path, JobId id) {
  std::string prefix = "jiffy-" + std::to_string(::geteuid()) + "-job" + std::to_string(id) + "-";
  auto slash = path.rfind('/');
  if (path.empty() || path[0] != '/' || slash == std::string::npos ||
      path.find("/../") != std::string::npos || path.compare(slash + 1, prefix.size(), prefix) != 0 ||
      path.size() != slash + 1 + prefix.size() + 6) {
    return false;
  }
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == ::geteuid();
}

}  // namespace server_detail

using namespace server_detail;

Server::Server(ServerConfig config, Fd listener)
    : config_(std::move(config)),
      sched_(config_.resources, config_.policy),
      listener_(std::move(listener)),
      state_file_(config_.paths.state),
      lane_(config_.paths.lane, config_.resources, 1,
            [](const std::string& line, void* self) { static_cast<Server*>(self)->log(line); }, this),
      claim_(static_cast<std::size_t>(lane_.size()), 0),
      stale_(static_cast<std::size_t>(lane_.size()), 0),
      started_at_(now_s()),
      idle_since_(started_at_) {
  epoll_ = Fd(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_) throw_errno("epoll_create1");
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&mask, s);
  if (::sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) throw_errno("sigprocmask");
  signals_ = Fd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signals_) throw_errno("signalfd");
  ::signal(SIGPIPE, SIG_IGN);
  int history_fd = config_.history ? config_.history->done_fd() : -1;
  for (int fd : {listener_.get(), signals_.get(), config_.lock.name.get(), history_fd}) {
    if (fd < 0) continue;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) throw_errno("epoll_ctl");
  }
  struct stat st;
  if (::stat(config_.paths.socket.c_str(), &st) == 0) {
    socket_dev_ = st.st_dev;
    socket_ino_ = st.st_ino;
  }
  recover();
  open_lane();
  schedule_pass();  // lends what is free
}

// After a crash, launchers may hold lane slots: those of our predecessor's
// lane jobs (they stay lent until they come back), and, for an instant,
// slots its death freed, which a launcher locked before seeing the lane
// closed and lets go again. A recovered grant's slot must be ours before
// launchers may see us alive (proto/lane.h): it is waited for, briefly.
void Server::open_lane() {
  lane_.resync();  // recover() raised the ids
  std::vector<int> wanted;
  for (int u : lane_.held_elsewhere()) {
    if (sched_.slot_holder(lane_.slot(u)) != 0) wanted.push_back(u);
  }
  for (int round = 0; !wanted.empty() && round < 200; ++round) {
    ::usleep(1000);
    std::erase_if(wanted, [&](int u) { return lane_.take(u); });
  }
  for (int u : lane_.held_elsewhere()) {
    bool ours = sched_.slot_holder(lane_.slot(u)) != 0;
    if (ours && std::find(wanted.begin(), wanted.end(), u) != wanted.end()) {
      log("lane slot " + std::to_string(u) + " is held by a launcher and by a recovered job");
      continue;
    }
    if (ours) continue;  // taken back in the wait above
    sched_.adopt(Grant{Lane::lent_id(u), {lane_.slot(u)}, {}, false});
  }
  if (!lane_.held_elsewhere().empty()) {
    log(std::to_string(lane_.held_elsewhere().size()) +
        " lane slot(s) are held by launchers of an earlier daemon; they are granted once free");
  }
  // A record on a slot we took names a job whose launcher died (maybe
  // with our predecessor): the slot is lent to no one, nor granted, until
  // nothing of that job runs (clean_slot).
  for (int u = 0; u < lane_.size(); ++u) {
    if (sched_.slot_holder(lane_.slot(u)) != 0 || !lane_.record_at(u)) continue;
    sched_.adopt(Grant{Lane::lent_id(u), {lane_.slot(u)}, {}, false});
    if (clean_slot(u)) sched_.release(Lane::lent_id(u));
  }
  if (!wanted.empty()) return;  // the lane stays shut: launchers always ask
  lane_.hold_daemon_byte();
}

Server::~Server() = default;

// Our socket file must stay where launchers look for it. If the runtime
// directory was removed or the socket replaced, make them anew: until then
// launchers cannot reach us, and a daemon they start gives up on our
// lifetime lock, so nothing is ever granted twice.
void Server::heal() {
  double now = now_s();
  if (now < next_heal_check_) return;
  next_heal_check_ = now + kHealPeriodS;
  struct stat st;
  if (::stat(config_.paths.socket.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) &&
      st.st_dev == socket_dev_ && st.st_ino == socket_ino_) {
    return;
  }
  log("socket " + config_.paths.shown(config_.paths.socket) + " was removed or replaced; re-creating it");
  try {
    runtime_dir();  // re-creates and re-checks the directory (our descriptor of it follows)
    if (!retake_lock_file(config_.paths, config_.lock.file)) {
      log("cannot take " + config_.paths.shown(config_.paths.lock) + " anew (the process table still says we serve)");
    }
    if (::unlink(config_.paths.socket.c_str()) != 0 && errno != ENOENT) {
      throw_errno("unlink " + config_.paths.shown(config_.paths.socket));
    }
    Fd listener = unix_listen(config_.paths.socket, 4096);
    if (::stat(config_.paths.socket.c_str(), &st) != 0) throw_errno("stat " + config_.paths.shown(config_.paths.socket));
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, listener_.get(), nullptr);
    listener_ = std::move(listener);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = listener_.get();
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, listener_.get(), &ev) != 0) throw_errno("epoll_ctl");
    socket_dev_ = st.st_dev;
    socket_ino_ = st.st_ino;
    state_file_.reopen();
    persist();
  } catch (const Error& e) {
    log(std::string("cannot re-create the socket: ") + e.what());
  }
}

void Server::pause_accepting() {
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, listener_.get(), nullptr);
  accept_paused_until_ = now_s() + 0.1;
}

void Server::log(const std::string& line) const {
  if (config_.log_to_stderr) std::fprintf(stderr, "jiffyd[%d]: %s\n", ::getpid(), line.c_str());
}

namespace {

// Times the steps of one turn of the event loop. A launcher gives up on a
// daemon that has not answered within JIFFY_DAEMON_TIMEOUT (10 s), so a turn
// of a second or more is worth a line in the log, naming where it went.
class TurnClock {
 public:
  void step(const char* what) {
    const double now = now_s();
    if (now - last_ > slowest_s_) {
      slowest_s_ = now - last_;
      slowest_ = what;
    }
    last_ = now;
  }
  std::string slow() const {
    constexpr double kSlowS = 1;
    const double took = last_ - start_;
    if (took < kSlowS) return "";
    char line[160];
    std::snprintf(line, sizeof line, "slow turn of the event loop: %.1f s, %.1f s of it in %s", took, slowest_s_,
                  slowest_);
    return line;
  }

 private:
  double start_ = now_s();
  double last_ = start_;
  double slowest_s_ = 0;
  const char* slowest_ = "";
};

}  // namespace

void Server::run() {
  log("serving " + std::to_string(config_.resources.cores.size()) + " cores (" +
      std::to_string(config_.resources.total_slots()) + " slots), " +
      std::to_string(config_.resources.gpus.size()) + " GPUs on " + config_.paths.shown(config_.paths.socket));
  epoll_event events[64];
  const int history_fd = config_.history ? config_.history->done_fd() : -1;
  while (!stopping_) {
    int timeout = static_cast<int>(next_wakeup_ms());
    int n = ::epoll_wait(epoll_.get(), events, 64, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("epoll_wait");
    }
    TurnClock turn;  // says which step of a slow turn took the time
    for (int i = 0; i < n && !stopping_; ++i) {
      int fd = events[i].data.fd;
      if (fd == listener_.get()) {
        accept_clients();
      } else if (fd == config_.lock.name.get()) {
        // Another daemon checking who holds the lock: it has its answer.
        for (int probe; (probe = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC)) >= 0;) ::close(probe);
      } else if (fd == signals_.get()) {
        signalfd_siginfo si;
        if (::read(fd, &si, sizeof si) == sizeof si) {
          log(std::string("stopping on signal ") + strsignal(static_cast<int>(si.ssi_signo)));
          stopping_ = true;
        }
      } else if (fd == history_fd) {
        history_done();
      } else if (auto it = clients_.find(fd); it != clients_.end()) {
        Client& c = *it->second;
        if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
        if (clients_.count(fd) && (events[i].events & EPOLLOUT)) on_writable(c);
      }
    }
    turn.step("events");
    reap_lost_jobs();
    if (positions_due_ && now_s() >= next_positions_at_) send_positions();
    if (lane_retry_ && (sched_.queued() > 0 || !lane_.usable())) schedule_pass();
    turn.step("reaping and positions");
    check_lane_jobs();
    check_stale();
    check_detached();
    turn.step("liveness checks");
    heal();
    turn.step("socket self-check");
    if (std::string slow = turn.slow(); !slow.empty()) log(slow);
    if (accept_paused_until_ > 0 && now_s() >= accept_paused_until_) {
      accept_paused_until_ = 0;
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.fd = listener_.get();
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, listener_.get(), &ev);
    }
    if (clients_.empty() && lost_.empty() && detached_.empty() && config_.idle_timeout_s > 0 &&
        now_s() - idle_since_ >= config_.idle_timeout_s) {
      if (lane_busy()) {  // lane jobs run, or a dead one's processes may: they need us
        idle_since_ = now_s();
        continue;
      }
      log("idle for " + std::to_string(static_cast<int>(config_.idle_timeout_s)) + " s, exiting");
      stopping_ = true;
    }
  }
}

double Server::next_wakeup_ms() const {
  double wake = kHealPeriodS * 1000;  // the socket self-check
  if (accept_paused_until_ > 0) wake = std::min(wake, 100.0);
  if (!lost_.empty() || recovering_ || lane_retry_ || !stale_jobs_.empty()) {
    wake = 10;  // poll the dying groups, the recovery, the lane
  }
  if (!detached_.empty()) wake = std::min(wake, kLivenessPeriodS * 1000);
  if (positions_due_) wake = std::min(wake, std::max(0.0, (next_positions_at_ - now_s()) * 1000) + 1);
  if (clients_.empty() && config_.idle_timeout_s > 0) {
    double left = (idle_since_ + config_.idle_timeout_s - now_s()) * 1000;
    wake = std::min(wake, std::max(0.0, left) + 1);
  }
  return wake;
}

void Server::accept_clients() {
  for (;;) {
    int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EMFILE || errno == ENFILE) {
        // Stop listening a while rather than spin on a listener that stays
        // readable; clients that leave free descriptors meanwhile.
        log("out of file descriptors; not accepting for 100 ms");
        pause_accepting();
        return;
      }
      throw_errno("accept4");
    }
    Fd conn(fd);
    PeerCred cred;
    try {
      cred = peer_cred(fd);
    } catch (const Error& e) {
      continue;
    }
    if (cred.uid != ::geteuid()) {
      log("refused a connection from uid " + std::to_string(cred.uid));
      continue;
    }
    if (clients_.size() >= kMaxClients) {
      std::string frame = proto::encode(proto::error_message("daemon has too many clients"));
      (void)::send(fd, frame.data(), frame.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      continue;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) throw_errno("epoll_ctl");
    auto c = std::make_unique<Client>();
    c->fd = std::move(conn);
    c->peer_pid = cred.pid;
    c->peer_start = process_start_time(cred.pid);
    c->serial = ++next_serial_;
    clients_.emplace(fd, std::move(c));
  }
}

void Server::on_readable(Client& c) {
  const int fd = c.fd.get();  // c may be destroyed by dispatch: check clients_ by fd
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      if (c.closing) continue;  // discard input from a client being dropped
      c.decoder.feed(std::string_view(buf, static_cast<std::size_t>(n)));
      try {
        while (auto msg = c.decoder.next()) {
          dispatch(c, *msg);
          if (!clients_.count(fd) || c.closing) return;
        }
      } catch (const Error& e) {
        drop(c, e.what());
        return;
      } catch (const std::exception& e) {  // e.g. a JSON type error
        drop(c, std::string("malformed message: ") + e.what());
        return;
      }
      if (static_cast<std::size_t>(n) < sizeof buf) return;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    client_gone(c);  // EOF or error
    return;
  }
}

void Server::watch(Client& c, bool writable) {
  epoll_event ev{};
  ev.events = EPOLLIN | (writable ? EPOLLOUT : 0u);
  ev.data.fd = c.fd.get();
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
}

// Writes what the socket takes. Never destroys c: a broken peer is marked
// closing and goes away when epoll reports its hang-up.
bool Server::flush(Client& c) {
  try {
    std::size_t n = write_some(c.fd.get(), c.out, "send to client");
    c.out.erase(0, n);
    pending_out_ -= n;
  } catch (const Error&) {
    forget_output(c);
    c.closing = true;
  }
  if (c.out.empty() && c.out.capacity() > 65536) std::string().swap(c.out);  // a big reply's memory
  return c.out.empty();
}

// Drops what c has not read yet, memory included.
void Server::forget_output(Client& c) {
  pending_out_ -= c.out.size();
  std::string().swap(c.out);
}

void Server::on_writable(Client& c) {
  if (!flush(c)) return;
  if (c.closing) {
    client_gone(c);
    return;
  }
  watch(c, false);
}

void Server::send(Client& c, const proto::Json& msg) {
  if (c.closing && c.out.empty()) return;  // dropped for its backlog: nothing more
  bool was_empty = c.out.empty();
  std::string frame = proto::encode(msg);
  c.out += frame;
  pending_out_ += frame.size();
  if (!was_empty && c.out.size() > kMaxPendingOutput) {
    shed_output(c);
    return;
  }
  while (pending_out_ > kMaxPendingTotal) {
    auto largest = std::max_element(clients_.begin(), clients_.end(), [](const auto& a, const auto& b) {
      return a.second->out.size() < b.second->out.size();
    });
    shed_output(*largest->second);
  }
  if (!c.closing && was_empty && !flush(c)) watch(c, true);
}

// A client that does not read: its backlog goes, and so does it. Never
// destroys c (callers may be iterating): the hang-up reaches client_gone.
void Server::shed_output(Client& c) {
  log("dropping a client that does not read (" + std::to_string(c.out.size()) + " bytes unread)");
  forget_output(c);
  c.closing = true;
  ::shutdown(c.fd.get(), SHUT_RDWR);  // epoll reports the hang-up; client_gone follows
}

// Answers a bad client with the error, then hangs up once that is written.
// REQUIRES: the caller does not touch c afterwards.
void Server::drop(Client& c, const std::string& why) {
  log("dropping a client: " + why);
  send(c, proto::error_message(why));
  c.closing = true;
  if (c.out.empty()) client_gone(c);
}

void Server::dispatch(Client& c, const proto::Json& msg) {
  static const std::map<std::string, void (Server::*)(Client&, const proto::Json&)> table = {
      {proto::type::kSubmit, &Server::handle_submit},
      {proto::type::kPreparing, &Server::handle_preparing},
      {proto::type::kStarted, &Server::handle_started},
      {proto::type::kFinished, &Server::handle_finished},
      {proto::type::kStatus, &Server::handle_status},
      {proto::type::kStop, &Server::handle_stop},
      {proto::type::kReattach, &Server::handle_reattach},
      {proto::type::kLane, &Server::handle_lane},
      {proto::type::kHistory, &Server::handle_history},
      {proto::type::kForward, &Server::handle_forward},
  };
  if (forwarded_.has(c.fd.get())) return forwarded_.on_message(c.fd.get(), msg);
  const std::string& type = msg["type"].get_ref<const std::string&>();
  auto it = table.find(type);
  if (it == table.end()) throw Error("unknown message type '" + type.substr(0, 64) + "'");
  (this->*(it->second))(c, msg);
}

namespace {

// The GPUs a submit names (CTest chose them: cli/ctest.h), as indices into
// the set, in the order given.
std::vector<int> gpus_named(const ResourceSet& set, const proto::Json& msg) {
  std::vector<int> out;
  for (const std::string& name : proto::get_string_list(msg, "gpu_names", set.gpus.size() + 1, 256)) {
    auto it = std::find_if(set.gpus.begin(), set.gpus.end(), [&](const Gpu& g) { return g.name == name; });
    if (it == set.gpus.end()) {
      throw Error("no GPU named '" + name.substr(0, 64) + "' here (jiffy resource-spec lists them)");
    }
    out.push_back(static_cast<int>(it - set.gpus.begin()));
  }
  return out;
}

}  // namespace

void Server::handle_submit(Client& c, const proto::Json& msg) {
  int v = static_cast<int>(proto::get_int(msg, "v", 0, 1 << 20));
  if (v != proto::kVersion) {
    throw Error("protocol version " + std::to_string(v) + " not supported (daemon speaks " +
                std::to_string(proto::kVersion) + "); stop the old daemon with 'jiffy stop'");
  }
  if (c.job != 0) throw Error("submit sent twice on one connection");
  constexpr int kMax = 1 << 20;
  Request r;
  r.ntasks = static_cast<int>(proto::get_int(msg, "ntasks", 1, kMax));
  r.cores_per_task = static_cast<int>(proto::get_int(msg, "cores_per_task", 1, kMax));
  r.gpus_per_task = static_cast<int>(proto::get_int(msg, "gpus_per_task", 0, kMax));
  r.gpus_per_job = static_cast<int>(proto::get_int(msg, "gpus_per_job", 0, kMax));
  if (static_cast<long long>(r.ntasks) * r.cores_per_task > kMax) throw Error("request too large");
  r.allow_oversubscribe = proto::get_bool(msg, "allow_oversubscribe", true);
  if (msg.contains("gpu_names")) r.gpu_choice = gpus_named(sched_.resources(), msg);
  c.bind = parse_bind(proto::get_string(msg, "bind", 16));
  c.pid = static_cast<int>(proto::get_int(msg, "pid", 0, 1 << 30));
  c.command = proto::get_string(msg, "command", kMaxCommandLen);
  c.wants_progress = proto::get_bool(msg, "progress", false);
  if (msg.contains("tag")) c.group.tag = proto::get_tag(msg);
  if (msg.contains("parent")) adopt_parent(c, msg, r);
  c.cwd = msg.contains("cwd") ? proto::get_string(msg, "cwd", kMaxCwdLen) : "";
  c.label = msg.contains("label") ? proto::get_string(msg, "label", kMaxLabelLen) : "";
  r.predicted_s = run_times_.predict(c.cwd, c.command, r.ntasks);
  // A launcher whose daemon died asks again with its old job id, so that the
  // queue keeps its original order.
  JobId arrival = msg.contains("arrival")
                      ? static_cast<JobId>(proto::get_int(msg, "arrival", 0, kMaxJobId))
                      : 0;
  if (auto it = detached_.find(arrival); it != detached_.end() && it->second.pid == c.peer_pid) {
    // Granted by our predecessor, which died before the launcher heard of it.
    sched_.release(arrival);
    tags_.release(it->second.group.tag, arrival);
    detached_.erase(it);
  }
  bool arrival_free = arrival != 0 && !jobs_.count(arrival) && !detached_.count(arrival) &&
                      !lost_.count(arrival);
  lane_verify(false);  // no id from a counter someone overwrote
  r.id = arrival_free ? arrival : lane_.new_job_id();
  if (!c.parent) claim_tag(c.group.tag, r.id);  // a spawn's is its parent's
  try {
    if (arrival_free) {
      sched_.submit_in_order(r);
    } else {
      sched_.submit(r);
    }
  } catch (const Error& e) {
    // A request that can never be granted: answer and hang up.
    tags_.release(c.group.tag, r.id);
    drop(c, e.what());
    return;
  }
  lane_.raise_next_job(r.id + 1);
  lane_.resync();
  c.job = r.id;
  c.request = r;
  c.state = JobState::Queued;
  c.submitted_at = now_s();
  c.submit_ns = realtime_ns();
  jobs_[r.id] = &c;
  if (recovering_) parked_.push_back(&c);
  schedule_pass();
  if (c.state == JobState::Queued) {
    int pos = sched_.position(c.job);
    c.last_position = pos;
    send(c, {{"type", proto::type::kQueued}, {"job", c.job}, {"position", pos}});
  }
}

// A spawn's cores (daemon/families.h): the parent must be a running job of
// this very launcher; the sub-job shares its process group and tag (killed
// with it if the launcher dies), never oversubscribes, and is refused at
// once when it could never be granted beside what the family holds.
void Server::adopt_parent(Client& c, const proto::Json& msg, Request& r) {
  const JobId parent = static_cast<JobId>(proto::get_int(msg, "parent", 1, kMaxJobId));
  if (msg.contains("tag")) throw Error("a spawn's submit carries no tag (it shares its parent's)");
  auto it = jobs_.find(parent);
  const Client* p = it == jobs_.end() ? nullptr : it->second;
  if (!p || p->parent || p->peer_pid != c.peer_pid ||
      (p->state != JobState::Granted && p->state != JobState::Running)) {
    throw Error("spawn: job " + std::to_string(parent) + " is not a running job of this launcher");
  }
  c.parent = parent;
  c.group = p->group;
  r.allow_oversubscribe = false;
  // What stays held however long this spawn waits: the job's own cores and
  // those of the spawned world that asks, and of the worlds that spawned
  // it in turn (each waits for the next). Other spawned worlds may end
  // meanwhile (a world whose ranks finished, siblings), so they do not count.
  if (msg.contains("asker")) c.asker = static_cast<JobId>(proto::get_int(msg, "asker", 0, kMaxJobId));
  FamilyUse held{static_cast<int>(p->grant.slots.size()), static_cast<int>(p->grant.gpus.size())};
  JobId a = c.asker;
  for (int depth = 0; a != 0 && depth < 1024; ++depth) {
    auto j = jobs_.find(a);
    auto d = detached_.find(a);
    if (j != jobs_.end() && j->second->parent == parent && j->second->state != JobState::Queued) {
      held.slots += static_cast<int>(j->second->grant.slots.size());
      held.gpus += static_cast<int>(j->second->grant.gpus.size());
      a = j->second->asker;
    } else if (d != detached_.end() && d->second.parent == parent) {  // granted before a crash
      held.slots += static_cast<int>(d->second.grant.slots.size());
      held.gpus += static_cast<int>(d->second.grant.gpus.size());
      a = 0;
    } else {
      throw Error("spawn: job " + std::to_string(a) + " is no running spawn of job " + std::to_string(parent));
    }
  }
  std::string why = spawn_refusal(r, parent, held, sched_.resources().total_slots(),
                                  static_cast<int>(sched_.resources().gpus.size()));
  if (!why.empty()) throw Error(why);
}

// A launcher names its job directory as soon as it makes it, so that the
// directory goes if the launcher dies: while queued (jiffy-pmix starts its
// PMIx server before the grant; a grant may cross the message), or while
// running (the PMIx helper of a rendezvous, started by the first Open MPI
// rank behind a wrapper).
// A launch that runs as a Slurm step: listed until its connection closes
// (daemon/forwarded.h). Its id comes from the jobs' counter, so that status
// and the history never show two launches under one number.
void Server::handle_forward(Client& c, const proto::Json& msg) {
  int v = static_cast<int>(proto::get_int(msg, "v", 0, 1 << 20));
  if (v != proto::kVersion) throw Error("protocol version " + std::to_string(v) + " not supported");
  if (c.job != 0) throw Error("forward on a connection that submitted");
  lane_verify(false);
  JobId id = lane_.new_job_id();
  forwarded_.add(c.fd.get(), id, msg, now_s());
  send(c, {{"type", proto::type::kOk}, {"job", id}});
}

void Server::handle_preparing(Client& c, const proto::Json& msg) {
  if (c.state != JobState::Queued && c.state != JobState::Granted && c.state != JobState::Running) {
    throw Error("'preparing' without a job");
  }
  c.jobdir = proto::get_string(msg, "jobdir", 4096);
  if (c.state == JobState::Running) persist();  // a successor must know it too
}

void Server::handle_started(Client& c, const proto::Json& msg) {
  if (c.state != JobState::Granted) throw Error("'started' before a grant");
  pid_t pgid = static_cast<pid_t>(proto::get_int(msg, "pgid", 1, 1 << 30));
  std::string tag = msg.contains("tag") ? proto::get_tag(msg) : c.group.tag;
  if (c.parent && tag != c.group.tag) throw Error("a spawn's ranks carry their parent's tag");
  if (tag != c.group.tag) {  // another job's tag would get that job killed with ours
    claim_tag(tag, c.job);
    tags_.release(c.group.tag, c.job);
  }
  // Only a group led by this launcher's own child is ever killed on its
  // behalf; another is ignored (the job stays known by its tag). A group
  // already gone is a job already over, read late: its "finished" follows.
  if (std::optional<JobGroup> group = job_group_of_child(pgid, c.peer_pid)) {
    c.group = *group;
  } else if (::kill(pgid, 0) == 0 || errno != ESRCH) {
    log("job " + std::to_string(c.job) + ": ignoring process group " + std::to_string(pgid) +
        ", not led by a child of its launcher");
  }
  c.group.tag = tag;
  if (msg.contains("jobdir")) c.jobdir = proto::get_string(msg, "jobdir", 4096);
  c.state = JobState::Running;
  persist();  // a successor must know which group to kill if the launcher dies
}

void Server::handle_finished(Client& c, const proto::Json& msg) {
  if (c.state != JobState::Granted && c.state != JobState::Running) {
    throw Error("'finished' without a running job");
  }
  proto::get_int(msg, "code", -1, 1 << 16);
  c.state = JobState::Exited;
  if (c.lane) {
    unclaim(c);  // the launcher let go of its slots before saying so
  } else {
    sched_.release(c.job);
  }
  tags_.release(c.group.tag, c.job);
  jobs_.erase(c.job);
  c.state = JobState::Released;
  c.job = 0;
  persist();
  schedule_pass();
}

void Server::handle_status(Client& c, const proto::Json&) {
  lane_verify(false);
  send(c, status_json());
}

void Server::handle_stop(Client& c, const proto::Json&) {
  log("stop requested");
  send(c, {{"type", proto::type::kOk}});
  stopping_ = true;
}

void Server::client_gone(Client& c) {
  int fd = c.fd.get();
  // A forwarded launch's launcher that vanished took its srun along, but
  // not the step: Slurm would notice late.
  if (std::vector<std::string> scancel = forwarded_.gone(fd); !scancel.empty()) {
    log("cancelling Slurm step " + scancel.back() + " of a launcher that vanished");
    if (!config_.run_detached(scancel)) log("cannot run " + scancel.front() + ": not on PATH");
  }
  if (c.job != 0) {
    if (c.state == JobState::Queued) {
      // (A front handing over lives on, asks again, and reports the launch.)
      if (!launcher_lives_on(c) && !c.parent) {  // (a spawn is part of its parent's launch)
        record(history_row(c, JIFFY_OUTCOME_CANCELLED, "launcher went away while queued"));
      }
      sched_.cancel(c.job);
      tags_.release(c.group.tag, c.job);
      if (is_job_dir(c.jobdir, c.job)) remove_tree(c.jobdir);
      c.state = JobState::Cancelled;
      parked_.erase(std::remove(parked_.begin(), parked_.end(), &c), parked_.end());
    } else if (c.state == JobState::Granted || c.state == JobState::Running) {
      c.state = JobState::Lost;
      if (c.lane) {
        // Its records stay: they keep its slots from anyone until nothing
        // of the job runs (check_lane_jobs, at once).
        unclaim(c, false);
        next_lane_check_ = 0;
      }
      lose(stored(c), c.lane, history_row(c, JIFFY_OUTCOME_LOST, "launcher vanished (killed?)"));
    }
    jobs_.erase(c.job);
  }
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  forget_output(c);
  clients_.erase(fd);
  if (clients_.empty()) idle_since_ = now_s();
  persist();
  schedule_pass();
}

// A job whose launcher is gone: its ranks must not outlive it, and its
// resources come back only once its process group is empty.
void Server::lose(const StoredJob& lost, bool lane, std::optional<history::Row> row) {
  StoredJob job = lost;
  forget_taken_family_tag(job);
  if (!row) row = history_row(job);
  kill_job_group(job.group);  // also helpers that left the group (by their tag)
  if (job_group_alive(job.group)) {
    lost_[job.grant.id] = LostJob{job, now_s() + kLostJobGraceS, lane, std::move(*row)};
    log("job " + std::to_string(job.grant.id) + " lost its launcher; killed process group " +
        std::to_string(job.group.pgid));
  } else {
    finish_lost(job, std::move(*row));
  }
}

// A spawn kills by its family's tag, never by one another job took since:
// the tag is its parent's, which may have ended and let it go (a spawn
// left detached after a crash outlives its parent's re-attached launch).
void Server::forget_taken_family_tag(StoredJob& job) const {
  if (job.parent && !tag_free_for(job.group.tag, job.parent)) job.group.tag.clear();
}

// The launcher could not clean up after itself: its job directory goes too,
// if it is one a launcher of ours made (never a path a message merely names).
void Server::finish_lost(const StoredJob& job, history::Row row) {
  row.end_ns = realtime_ns();  // the group is empty (or given up on)
  if (!job.parent) record(std::move(row));  // a spawn's is its launch's record
  sched_.release(job.grant.id);
  tags_.release(job.group.tag, job.grant.id);
  if (is_job_dir(job.jobdir, job.grant.id)) remove_tree(job.jobdir);
}

void Server::reap_lost_jobs() {
  if (lost_.empty()) return;
  double now = now_s();
  bool freed = false;
  for (auto it = lost_.begin(); it != lost_.end();) {
    forget_taken_family_tag(it->second.job);  // (its parent may end meanwhile)
    const JobGroup& g = it->second.job.group;
    if (job_group_alive(g) && now < it->second.give_up_at) {
      kill_job_group(g);
      ++it;
      continue;
    }
    finish_lost(it->second.job, std::move(it->second.row));
    it = lost_.erase(it);
    freed = true;
  }
  if (freed) {
    if (clients_.empty()) idle_since_ = now;
    persist();
    schedule_pass();
  }
}

void Server::schedule_pass() {
  if (recovering_) {  // survivors first: see recover()
    lane_.set_open(false);
    return;
  }
  if (sched_.queued() > 0 || !lane_.usable()) take_back();
  std::vector<Grant> grants = sched_.schedule(now_s());
  std::vector<Client*> granted;
  for (const Grant& g : grants) {
    auto it = jobs_.find(g.id);
    if (it == jobs_.end()) {  // cannot happen: cancelled jobs leave the queue
      sched_.release(g.id);
      continue;
    }
    Client& c = *it->second;
    c.state = JobState::Granted;
    c.granted_at = now_s();
    c.start_ns = realtime_ns();
    c.grant = g;
    // A spawn's ranks join its parent's group: the parent may have named
    // it ("started") since the spawn asked.
    if (auto p = jobs_.find(c.parent); c.parent && p != jobs_.end()) c.group = p->second->group;
    granted.push_back(&c);
  }
  // On disk before the launchers hear of it: a successor must never grant
  // these resources again, whenever we die.
  if (!granted.empty()) persist();
  for (Client* c : granted) {
    const Grant& g = c->grant;
    proto::Json ranks = proto::Json::array();
    c->rank_cores.clear();
    c->rank_gpus.clear();
    c->oversubscribed = g.exclusive;  // wider than the set: ranks share its cores
    for (const RankPlacement& p : layout(config_.resources, c->request, g, c->bind)) {
      proto::Json gpus = proto::Json::array();
      std::vector<std::string> names;
      for (int i : p.gpus) names.push_back(config_.resources.gpus[static_cast<std::size_t>(i)].name);
      for (const std::string& n : names) gpus.push_back(n);
      c->rank_cores.push_back(p.cores);
      c->rank_gpus.push_back(std::move(names));
      ranks.push_back({{"cores", p.cores}, {"cpus", p.cpus}, {"gpus", gpus}});
    }
    proto::Json slots = proto::Json::array();
    for (const SlotRef& r : g.slots) slots.push_back({r.core, r.slot});
    send(*c, {{"type", proto::type::kGrant},
              {"job", g.id},
              {"exclusive", g.exclusive},
              {"slots", std::move(slots)},
              {"gpu_ids", g.gpus},
              {"ranks", std::move(ranks)}});
  }
  positions_due_ = true;  // sent by run(), at most every kPositionPeriodS
  if (sched_.queued() == 0 && !stopping_ && lane_.usable()) lend_free();
}

// Nothing waits: every free slot goes to the lane, and launchers may take
// them without asking (proto/lane.h).
void Server::lend_free() {
  for (int u = 0; u < lane_.size(); ++u) {
    if (sched_.slot_holder(lane_.slot(u)) != 0) continue;  // held, or lent already
    sched_.adopt(Grant{Lane::lent_id(u), {lane_.slot(u)}, {}, false});
    lane_.lend(u);
  }
  lane_.set_open(true);
  lane_retry_ = false;
}

// A request waits (or the lane file is damaged): the lane closes (so the
// request is served in its turn), and each lent slot that no launcher is
// known to hold comes back. One still locked (a launcher took it a moment
// ago) is tried again shortly; one with a dead launcher's record comes back
// once that job's processes are gone (check_stale).
void Server::take_back() {
  lane_.set_open(false);
  lane_retry_ = false;
  for (int u = 0; u < lane_.size(); ++u) {
    if (!lent_unclaimed(u)) continue;
    if (!lane_.take(u)) {
      lane_retry_ = true;
    } else if (clean_slot(u)) {
      sched_.release(Lane::lent_id(u));
    }
  }
}

// The lane indices of g's slots when every one of them is lent, unclaimed,
// locked by someone and recorded as job g.id's by launcher: a launcher that
// took them from the lane. Empty otherwise.
std::vector<int> Server::lane_held(const Grant& g, pid_t launcher) const {
  std::vector<int> units;
  for (const SlotRef& s : g.slots) {
    int u = lane_.index(s);
    if (u < 0 || !lent_unclaimed(u) || std::find(units.begin(), units.end(), u) != units.end() ||
        !lane_.held_by_other(u)) {
      return {};
    }
    std::optional<LaneJob> j = lane_.job_at(u);  // the record: this job, this launcher
    if (!j || j->job != g.id || j->pid != launcher) return {};
    units.push_back(u);
  }
  if (!g.gpus.empty() || g.exclusive) return {};
  return units;
}

// The jobs launchers run on lent slots without a connection to us, from
// the slots' records (only slots someone holds count: a record outlives
// its job).
std::map<JobId, LaneJob> Server::lane_jobs() const {
  std::map<JobId, LaneJob> jobs;
  for (int u = 0; u < lane_.size(); ++u) {
    if (!lent_unclaimed(u)) continue;
    std::optional<LaneJob> j = lane_.job_at(u);
    if (j && !jobs.count(j->job) && lane_.held_by_other(u)) jobs.emplace(j->job, std::move(*j));
  }
  return jobs;
}

// Whether any lent slot is held (a lane job runs, or a moment of one ends)
// or has a record on it (a dead launcher's job, cleaned or not yet seen).
bool Server::lane_busy() const {
  if (!stale_jobs_.empty()) return true;
  for (int u = 0; u < lane_.size(); ++u) {
    if (lent(u) && (lane_.held_by_other(u) || lane_.record_at(u))) return true;
  }
  return false;
}

// The lane file checked whole, then: a lane job whose launcher died while
// its slots stay held (something else holds its lock: cannot be a rank of
// ours, which never gets the descriptor) has what carries its tag killed.
// And a record on a lent slot nobody holds names a job whose launcher is
// gone (it died, its lock with it, before clearing its records): we take
// the slot, and keep it until nothing of that job runs (clean_slot).
void Server::check_lane_jobs() {
  double now = now_s();
  if (now < next_lane_check_) return;
  next_lane_check_ = now + kLaneCheckPeriodS;
  lane_verify(true);
  std::map<JobId, LaneJob> jobs = lane_jobs();
  std::erase_if(lane_orphans_, [&](const auto& kv) { return !jobs.count(kv.first); });
  for (const auto& [id, job] : jobs) {
    std::optional<ProcStat> st = read_proc_stat(job.pid);
    bool alive = st && st->state != 'Z' &&
                 static_cast<double>(st->start) / static_cast<double>(::sysconf(_SC_CLK_TCK)) <=
                     job.claimed_s + 0.05;
    if (alive) continue;
    if (!lane_orphans_.count(id)) {
      log("lane job " + std::to_string(id) + " lost its launcher (pid " + std::to_string(job.pid) +
          "); killing what its ranks left");
    }
    lane_orphans_[id] = now;
    kill_tagged(job.tag, id);
  }
  bool released = false;
  for (int u = 0; u < lane_.size(); ++u) {
    if (!lent_unclaimed(u) || !lane_.record_at(u) || lane_.held_by_other(u) || !lane_.take(u)) continue;
    if (clean_slot(u)) released |= return_slot(u);  // else held until check_stale sees it clean
  }
  if (released) schedule_pass();
}

// The group of a dead launcher's job as its record names it: the tag, and
// the process group only while its leader provably is one of the job's
// (it carries the tag; a group id alone may have been reused).
static JobGroup lane_group(const LaneJob& r) {
  JobGroup g;
  g.tag = r.tag;
  if (r.pgid > 1 && !r.tag.empty()) {
    if (std::optional<JobGroup> led = job_group_with_tag(r.pgid, r.tag)) g = *led;
  }
  return g;
}

// REQUIRES: we hold slot u, lent in the Scheduler. A record on it names a
// job whose launcher is gone, and whose processes may still run (the ranks
// die with their launcher, by their parent-death signal; what they started
// need not). Kills what is left of it; true once nothing is (the record is
// cleared then), false while something is (the slot stays ours: stale_).
bool Server::clean_slot(int u) {
  JobId& mark = stale_[static_cast<std::size_t>(u)];
  std::optional<LaneJob> r = lane_.record_at(u);
  if (r && !stale_jobs_.count(r->job)) {
    log("lane job " + std::to_string(r->job) + " lost its launcher and left its record on slot " +
        std::to_string(u) + "; the slot is held until nothing of the job runs");
    stale_jobs_.emplace(r->job, *r);
  }
  const JobId was = mark;
  if (r && !tag_free_for(r->tag, r->job)) {
    // Another job's tag: whoever wrote this record copied it, and killing
    // by it would kill that job. Nothing proves a process is this one's.
    log("lane job " + std::to_string(r->job) + " names the tag of another job; not killing by it");
    lane_.clear_job(u, r->job);
  } else if (r) {
    mark = r->job;
    JobGroup g = lane_group(*r);
    JobGroup tagged;  // a group's liveness is its members': the tag's, apart
    tagged.tag = r->tag;
    kill_job_group(g);
    if (job_group_alive(g) || (g.pgid > 1 && job_group_alive(tagged))) return false;
    lane_.clear_job(u, r->job);
  }
  mark = 0;
  for (JobId id : {was, r ? r->job : JobId{0}}) {
    if (!id || std::find(stale_.begin(), stale_.end(), id) != stale_.end()) continue;
    if (auto it = stale_jobs_.find(id); it != stale_jobs_.end()) {
      if (tag_free_for(it->second.tag, id)) record_lane_lost(it->second);
      stale_jobs_.erase(it);
    }
  }
  return true;
}

// Slot u, held by us and clean, goes back: to the lane while it lends,
// else to the Scheduler (true: the caller runs a scheduling pass).
bool Server::return_slot(int u) {
  if (lane_.usable() && sched_.queued() == 0 && !recovering_ && !stopping_) {
    lane_.lend(u);  // still lent in the Scheduler
    return false;
  }
  sched_.release(Lane::lent_id(u));
  return true;
}

// The slots kept for dead launchers' jobs: each goes back once nothing of
// its job runs.
void Server::check_stale() {
  if (stale_jobs_.empty()) return;
  double now = now_s();
  if (now < next_stale_check_) return;
  next_stale_check_ = now + 0.01;
  bool released = false;
  for (int u = 0; u < lane_.size(); ++u) {
    if (stale_[static_cast<std::size_t>(u)] != 0 && clean_slot(u)) released |= return_slot(u);
  }
  if (released) schedule_pass();
  if (stale_jobs_.empty() && clients_.empty()) idle_since_ = now;
}

// A damaged lane file is given up (Lane::verify logs it); the slots still
// lent come back as for a waiting request (take_back, retried).
void Server::lane_verify(bool full) {
  if (lane_.usable() && !lane_.verify(full)) lane_retry_ = true;
}

// Every process carrying a lane job's tag. The record says which job the
// tag is, but anyone who can write a record can copy another job's tag: a
// tag another known job holds is not killed for this one.
void Server::kill_tagged(const std::string& tag, JobId job) {
  if (!is_job_tag(tag)) return;
  if (!tag_free_for(tag, job)) {
    log("lane job " + std::to_string(job) + " names the tag of another job; not killing by it");
    return;
  }
  JobGroup g;
  g.tag = tag;
  kill_job_group(g);
}

// Whether tag may be job's: no other job holds it, known to us (tags_) or
// on a lane slot's record. An empty tag is none.
bool Server::tag_free_for(const std::string& tag, JobId job) const {
  if (tag.empty()) return true;
  JobId owner = tags_.owner(tag);
  if (owner != 0 && owner != job) return false;
  for (int u = 0; u < lane_.size(); ++u) {
    std::optional<LaneJob> j = lane_.job_at(u);
    if (j && j->job != job && j->tag == tag) return false;
  }
  return true;
}

// Makes tag job's, or throws Error (the message is refused) when another
// job holds it.
void Server::claim_tag(const std::string& tag, JobId job) {
  if (!tag_free_for(tag, job)) throw Error("the tag is another job's");
  tags_.claim(tag, job);
}

bool Server::lent(int u) const { return sched_.slot_holder(lane_.slot(u)) == Lane::lent_id(u); }

bool Server::lent_unclaimed(int u) const {
  return lent(u) && claim_[static_cast<std::size_t>(u)] == 0 && stale_[static_cast<std::size_t>(u)] == 0;
}

void Server::claim(Client& c, JobId job, const std::vector<int>& units) {
  c.lane = true;
  for (int u : units) claim_[static_cast<std::size_t>(u)] = job;
}

// On "finished" the job is over, every process of it gone (its launcher
// killed and reaped them first), so its records go too (clear_records):
// only those still naming this job (a launcher may have taken a slot anew
// already). On a hang-up they stay: the launcher died, and its job's
// processes may still run; the records keep the slots from anyone until
// they are gone (clean_slot).
void Server::unclaim(Client& c, bool clear_records) {
  for (std::size_t u = 0; u < claim_.size(); ++u) {
    if (claim_[u] != c.job) continue;
    claim_[u] = 0;
    if (clear_records) lane_.clear_job(static_cast<int>(u), c.job);
  }
}

// A launcher took slots from the lane itself and says so, right after: its
// job is recorded as granted, off the launch's critical path. Nothing is
// answered (the launcher is not waiting); a claim that does not check out
// drops the client, as any bad message does.
void Server::handle_lane(Client& c, const proto::Json& msg) {
  if (proto::get_int(msg, "v", 0, 1 << 20) != proto::kVersion) throw Error("protocol version mismatch");
  if (c.job != 0) throw Error("'lane' on a connection that already holds a job");
  lane_verify(false);
  // (A lane shut for a damaged file still has its lent slots: they are
  // claimed as before, and come back when their launchers let go.)
  if (lane_.size() == 0) throw Error("'lane': this daemon's lane is off");
  JobId id = static_cast<JobId>(proto::get_int(msg, "job", 1, kMaxJobId));
  int first = static_cast<int>(proto::get_int(msg, "first", 0, lane_.size() - 1));
  int count = static_cast<int>(proto::get_int(msg, "count", 1, JIFFY_LANE_MAX_TASKS));
  if (first + count > lane_.size()) throw Error("'lane': slots beyond the lane");
  if (id >= lane_.peek_next_job() || jobs_.count(id) || lost_.count(id) || detached_.count(id)) {
    throw Error("'lane': job " + std::to_string(id) + " was not taken from the lane");
  }
  // A slot nobody holds any more: the job is over already (we were slow,
  // and its "finished" follows). A slot not lent, or another job's: a lie.
  Grant g;
  g.id = id;
  std::vector<int> units;
  for (int u = first; u < first + count; ++u) {
    if (!lent_unclaimed(u)) {
      throw Error("'lane': slot " + std::to_string(u) + " is not lent, or is another job's");
    }
    g.slots.push_back(lane_.slot(u));
    if (lane_.held_by_other(u)) units.push_back(u);
  }
  c.pid = static_cast<int>(proto::get_int(msg, "pid", 0, 1 << 30));
  c.command = proto::get_string(msg, "command", kMaxCommandLen);
  c.group.tag = proto::get_tag(msg);
  c.cwd = msg.contains("cwd") ? proto::get_string(msg, "cwd", kMaxCwdLen) : "";
  c.label = msg.contains("label") ? proto::get_string(msg, "label", kMaxLabelLen) : "";
  claim_tag(c.group.tag, id);
  c.bind = Bind::Core;
  c.job = id;
  c.grant = g;
  c.request = Request{};
  c.request.id = id;
  c.request.ntasks = count;
  c.state = JobState::Granted;
  c.submitted_at = c.granted_at = now_s();
  c.submit_ns = c.start_ns = realtime_ns();
  c.rank_cores.clear();
  for (int u = first; u < first + count; ++u) c.rank_cores.push_back({lane_.slot(u).core});
  jobs_[id] = &c;
  claim(c, id, units);
  // Its slots' stand-ins get its prediction, so that a waiting head's
  // start can be timed (backfill). It started a moment before it said so.
  c.request.predicted_s = run_times_.predict(c.cwd, c.command, count);
  for (int u : units) sched_.predict(Lane::lent_id(u), c.granted_at, c.request.predicted_s);
}

StoredJob Server::stored(const Client& c) const {
  return StoredJob{c.grant, c.peer_pid, c.peer_start, c.group,
                   c.request.ntasks, c.command, c.jobdir, c.parent};
}

// The ledger holds the daemon's own grants; lane jobs are in the locks.
void Server::persist() {
  lane_verify(false);  // no counter someone overwrote goes into the state file
  StoredState st;
  st.next_job = lane_.peek_next_job();
  for (const auto& [id, c] : jobs_) {
    if (!c->lane && (c->state == JobState::Granted || c->state == JobState::Running)) {
      st.jobs.push_back(stored(*c));
    }
  }
  for (const auto& [id, job] : detached_) st.jobs.push_back(job);
  for (const auto& [id, lost] : lost_) {
    if (!lost.lane) st.jobs.push_back(lost.job);
  }
  state_file_.save(st);
}

// Queue positions for launchers that show them ("progress"): one pass over
// the queue, at most every kPositionPeriodS, and only to clients whose
// position changed since they last heard. Every grant moves every waiting
// request, so sending each move was quadratic in the queue's length.
void Server::send_positions() {
  positions_due_ = false;
  next_positions_at_ = now_s() + kPositionPeriodS;
  std::vector<JobId> order = sched_.queue_order();
  for (std::size_t pos = 0; pos < order.size(); ++pos) {
    auto it = jobs_.find(order[pos]);
    if (it == jobs_.end()) continue;
    Client& c = *it->second;
    if (!c.wants_progress || c.state != JobState::Queued || c.last_position == static_cast<int>(pos)) {
      continue;
    }
    c.last_position = static_cast<int>(pos);
    send(c, {{"type", proto::type::kQueued}, {"job", c.job}, {"position", c.last_position}});
  }
}

proto::Json Server::status_json() const {
  using proto::Json;
  double now = now_s();
  const ResourceSet& rs = config_.resources;
  const std::map<JobId, LaneJob> on_lane = lane_jobs();
  std::vector<JobId> lane_holder = claim_;  // per lane slot: the job on it, 0 when free
  for (const auto& [id, job] : on_lane) {
    for (int u = job.first; u < job.first + job.count; ++u) lane_holder[static_cast<std::size_t>(u)] = id;
  }
  for (std::size_t u = 0; u < stale_.size(); ++u) {
    if (stale_[u]) lane_holder[u] = stale_[u];  // a dead launcher's job may still run there
  }
  Json cores = Json::array();
  for (std::size_t i = 0; i < rs.cores.size(); ++i) {
    Json holders = Json::array();
    for (int s = 0; s < rs.cores[i].slots; ++s) {
      JobId h = sched_.slot_holder(SlotRef{static_cast<int>(i), s});
      if (Lane::is_lent_id(h)) {
        std::size_t u = static_cast<std::size_t>(h - Lane::kLentBase);
        h = u < lane_holder.size() ? lane_holder[u] : 0;
      }
      holders.push_back(h ? Json(h) : Json(nullptr));
    }
    cores.push_back({{"id", i},
                     {"cpus", rs.cores[i].pus},
                     {"numa", rs.cores[i].numa},
                     {"slots", rs.cores[i].slots},
                     {"holders", std::move(holders)}});
  }
  Json gpus = Json::array();
  for (std::size_t i = 0; i < rs.gpus.size(); ++i) {
    JobId h = sched_.gpu_holder(static_cast<int>(i));
    gpus.push_back({{"id", i}, {"name", rs.gpus[i].name}, {"holder", h ? Json(h) : Json(nullptr)}});
  }
  Json running = Json::array();
  Json queued = Json::array();
  for (const auto& [id, c] : jobs_) {
    Json j = {{"job", id},
              {"ntasks", c->request.ntasks},
              {"slots", c->request.slots()},
              {"gpus_requested", c->request.gpus()},
              {"pid", c->pid},
              {"command", c->command},
              {"state", to_string(c->state)}};
    j["cwd"] = c->cwd;
    j["label"] = c->label;
    j["jobdir"] = c->jobdir;  // "" until its launcher names one
    j["parent"] = c->parent;  // a spawn's cores: the job that asked; 0 otherwise
    j["submit"] = static_cast<double>(c->submit_ns) / 1e9;
    j["predicted_s"] = c->request.predicted_s < 0 ? Json(nullptr) : Json(c->request.predicted_s);
    if (c->state != JobState::Queued) j["backfilled"] = c->grant.backfilled;
    if (c->state == JobState::Queued) {
      j["position"] = sched_.position(id);
      // The head's deadline (docs/scheduling.md): backfill may start it no later.
      double deadline = sched_.deadline_of(id);
      j["start_by_s"] = deadline < 0 ? Json(nullptr) : Json(std::max(0.0, deadline - now));
      j["age_s"] = now - c->submitted_at;
      j["wait_s"] = now - c->submitted_at;
      queued.push_back(std::move(j));
    } else {
      std::vector<int> held_cores;
      for (const SlotRef& s : c->grant.slots) held_cores.push_back(s.core);
      held_cores.erase(std::unique(held_cores.begin(), held_cores.end()), held_cores.end());
      j["cores"] = held_cores;
      j["gpus"] = c->grant.gpus;
      j["exclusive"] = c->grant.exclusive;
      j["age_s"] = now - c->granted_at;
      j["waited_s"] = c->granted_at - c->submitted_at;
      j["rank_cores"] = c->rank_cores;
      j["rank_gpus"] = c->rank_gpus;
      j["start"] = static_cast<double>(c->start_ns) / 1e9;
      j["lane"] = c->lane;
      running.push_back(std::move(j));
    }
  }
  // The history's fields (docs/history.md) for jobs known without their
  // launcher's messages: what is not known is empty.
  auto known = [](Json j, const std::vector<std::vector<int>>& ranks, double start, bool lane) {
    j["cwd"] = "";
    j["label"] = "";
    j["rank_cores"] = ranks;
    j["rank_gpus"] = Json::array();
    j["submit"] = start;
    j["start"] = start;
    j["lane"] = lane;
    if (!j.contains("parent")) j["parent"] = 0;
    return j;
  };
  const double unix_now = static_cast<double>(realtime_ns()) / 1e9;
  auto adopted = [&](const StoredJob& job, const char* state) {
    std::vector<int> held;
    for (const SlotRef& s : job.grant.slots) held.push_back(s.core);
    held.erase(std::unique(held.begin(), held.end()), held.end());
    return known(Json{{"job", job.grant.id}, {"ntasks", job.ntasks}, {"slots", job.grant.slots.size()},
                      {"pid", job.pid}, {"command", job.command}, {"state", state}, {"cores", held},
                      {"gpus", job.grant.gpus}, {"exclusive", job.grant.exclusive}, {"age_s", 0.0},
                      {"waited_s", 0.0}, {"gpus_requested", job.grant.gpus.size()},
                      {"parent", job.parent}},
                 {}, 0.0, false);
  };
  for (const auto& [id, job] : on_lane) {
    std::vector<int> held;
    for (int u = job.first; u < job.first + job.count; ++u) held.push_back(lane_.slot(u).core);
    held.erase(std::unique(held.begin(), held.end()), held.end());
    double age = std::max(0.0, boot_s() - job.claimed_s);
    std::vector<std::vector<int>> ranks;
    for (int u = job.first; u < job.first + job.count; ++u) ranks.push_back({lane_.slot(u).core});
    running.push_back(known(Json{{"job", id}, {"ntasks", job.count}, {"slots", job.count},
                                 {"pid", job.pid}, {"command", job.command}, {"state", "running"},
                                 {"cores", held}, {"gpus", Json::array()}, {"exclusive", false},
                                 {"age_s", age}, {"waited_s", 0.0}, {"gpus_requested", 0}},
                            ranks, unix_now - age, true));
  }
  for (const auto& [id, job] : stale_jobs_) {
    if (on_lane.count(id) || lost_.count(id)) continue;
    std::vector<int> held;
    for (std::size_t u = 0; u < stale_.size(); ++u) {
      if (stale_[u] == id) held.push_back(lane_.slot(static_cast<int>(u)).core);
    }
    held.erase(std::unique(held.begin(), held.end()), held.end());
    running.push_back(known(Json{{"job", id}, {"ntasks", held.size()}, {"slots", held.size()},
                                 {"pid", job.pid}, {"command", job.command}, {"state", "dying"},
                                 {"cores", held}, {"gpus", Json::array()}, {"exclusive", false},
                                 {"age_s", 0.0}, {"waited_s", 0.0}, {"gpus_requested", 0}},
                            {}, 0.0, true));
  }
  for (const auto& [id, job] : detached_) running.push_back(adopted(job, "detached"));
  for (const auto& [id, lost] : lost_) running.push_back(adopted(lost.job, "dying"));
  std::sort(queued.begin(), queued.end(),
            [](const Json& a, const Json& b) { return a["position"] < b["position"]; });
  return {{"type", proto::type::kStatusReply},
          {"daemon",
           {{"pid", ::getpid()},
            {"uptime_s", now - started_at_},
            {"key", config_.paths.key},
            {"socket", config_.paths.shown(config_.paths.socket)},
            {"clients", clients_.size()},
            {"idle_timeout_s", config_.idle_timeout_s},
            {"max_oversubscribe", config_.policy.max_oversubscribe}}},
          {"resources", {{"cores", std::move(cores)}, {"gpus", std::move(gpus)}}},
          {"running", std::move(running)},
          {"queued", std::move(queued)},
          {"forwarded", forwarded_.status(now)},
          {"recent", config_.history ? config_.history->recent_json() : Json::array()},
          {"totals", config_.history ? config_.history->totals_json()
                                     : Json{{"since", unix_now - (now - started_at_)}, {"jobs", 0}, {"failed", 0},
                                            {"timed_out", 0}, {"core_seconds", 0.0}}},
          {"history", history_state()}};
}

}  // namespace jiffy
