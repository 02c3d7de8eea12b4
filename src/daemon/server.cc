#include "daemon/server.h"

#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "daemon/job_state.h"
#include "util/error.h"
#include "util/sys.h"

namespace jiffy {

namespace {

constexpr std::size_t kMaxClients = 8192;
constexpr std::size_t kMaxCommandLen = 4096;
constexpr std::size_t kMaxPendingOutput = 32 * 1024 * 1024;  // a client that never reads
constexpr double kLostJobGraceS = 5.0;  // how long a killed group may take to vanish

Bind parse_bind(const std::string& s) {
  if (s == "core") return Bind::Core;
  if (s == "hwthread") return Bind::HwThread;
  if (s == "none") return Bind::None;
  throw Error("malformed submit message: unknown bind '" + s + "'");
}

// True while any process is in group pgid (zombies included).
bool group_alive(int pgid) { return pgid > 0 && (::kill(-pgid, 0) == 0 || errno == EPERM); }

}  // namespace

struct Server::Client {
  Fd fd;
  proto::FrameDecoder decoder;
  std::string out;        // encoded frames not yet written
  bool closing = false;   // drop once `out` is flushed
  JobId job = 0;
  JobState state = JobState::Submitted;
  Request request;
  Bind bind = Bind::Core;
  bool wants_progress = false;
  int last_position = -1;
  int pid = 0;  // the launcher's pid, for status
  int pgid = 0;
  std::string command;
  double submitted_at = 0;
  double granted_at = 0;
  Grant grant;
};

Server::Server(ServerConfig config, Fd listener)
    : config_(std::move(config)),
      sched_(config_.resources, config_.policy),
      listener_(std::move(listener)),
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
  for (int fd : {listener_.get(), signals_.get()}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) throw_errno("epoll_ctl");
  }
}

Server::~Server() = default;

void Server::log(const std::string& line) const {
  if (config_.log_to_stderr) std::fprintf(stderr, "jiffyd[%d]: %s\n", ::getpid(), line.c_str());
}

void Server::run() {
  log("serving " + std::to_string(config_.resources.cores.size()) + " cores (" +
      std::to_string(config_.resources.total_slots()) + " slots), " +
      std::to_string(config_.resources.gpus.size()) + " GPUs on " + config_.paths.socket);
  epoll_event events[64];
  while (!stopping_) {
    int timeout = static_cast<int>(next_wakeup_ms());
    int n = ::epoll_wait(epoll_.get(), events, 64, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("epoll_wait");
    }
    for (int i = 0; i < n && !stopping_; ++i) {
      int fd = events[i].data.fd;
      if (fd == listener_.get()) {
        accept_clients();
      } else if (fd == signals_.get()) {
        signalfd_siginfo si;
        if (::read(fd, &si, sizeof si) == sizeof si) {
          log(std::string("stopping on signal ") + strsignal(static_cast<int>(si.ssi_signo)));
          stopping_ = true;
        }
      } else if (auto it = clients_.find(fd); it != clients_.end()) {
        Client& c = *it->second;
        if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
        if (clients_.count(fd) && (events[i].events & EPOLLOUT)) on_writable(c);
      }
    }
    reap_lost_jobs();
    if (clients_.empty() && lost_.empty() && config_.idle_timeout_s > 0 &&
        now_s() - idle_since_ >= config_.idle_timeout_s) {
      log("idle for " + std::to_string(static_cast<int>(config_.idle_timeout_s)) + " s, exiting");
      stopping_ = true;
    }
  }
}

double Server::next_wakeup_ms() const {
  double wake = 1e9;
  if (!lost_.empty()) wake = 10;  // poll the dying groups
  if (clients_.empty() && config_.idle_timeout_s > 0) {
    double left = (idle_since_ + config_.idle_timeout_s - now_s()) * 1000;
    wake = std::min(wake, std::max(0.0, left) + 1);
  }
  return wake >= 1e9 ? -1 : wake;
}

void Server::accept_clients() {
  for (;;) {
    int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EMFILE || errno == ENFILE) {
        log("out of file descriptors; refusing connections for now");
        return;
      }
      throw_errno("accept4");
    }
    Fd conn(fd);
    uid_t uid;
    try {
      uid = peer_uid(fd);
    } catch (const Error& e) {
      continue;
    }
    if (uid != ::geteuid()) {
      log("refused a connection from uid " + std::to_string(uid));
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
    c.out.erase(0, write_some(c.fd.get(), c.out, "send to client"));
  } catch (const Error&) {
    c.out.clear();
    c.closing = true;
  }
  return c.out.empty();
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
  bool was_empty = c.out.empty();
  c.out += proto::encode(msg);
  if (c.out.size() > kMaxPendingOutput) {  // a client that never reads
    c.out.clear();
    c.closing = true;
    ::shutdown(c.fd.get(), SHUT_RDWR);  // epoll reports the hang-up; client_gone follows
    return;
  }
  if (was_empty && !flush(c)) watch(c, true);
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
      {proto::type::kStarted, &Server::handle_started},
      {proto::type::kFinished, &Server::handle_finished},
      {proto::type::kStatus, &Server::handle_status},
      {proto::type::kStop, &Server::handle_stop},
  };
  const std::string& type = msg["type"].get_ref<const std::string&>();
  auto it = table.find(type);
  if (it == table.end()) throw Error("unknown message type '" + type.substr(0, 64) + "'");
  (this->*(it->second))(c, msg);
}

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
  c.bind = parse_bind(proto::get_string(msg, "bind", 16));
  c.pid = static_cast<int>(proto::get_int(msg, "pid", 0, 1 << 30));
  c.command = proto::get_string(msg, "command", kMaxCommandLen);
  c.wants_progress = proto::get_bool(msg, "progress", false);
  r.id = next_job_;
  try {
    sched_.submit(r);
  } catch (const Error& e) {
    // A request that can never be granted: answer and hang up.
    drop(c, e.what());
    return;
  }
  ++next_job_;
  c.job = r.id;
  c.request = r;
  c.state = JobState::Queued;
  c.submitted_at = now_s();
  jobs_[r.id] = &c;
  schedule_pass();
  if (c.state == JobState::Queued) {
    int pos = sched_.position(c.job);
    c.last_position = pos;
    send(c, {{"type", proto::type::kQueued}, {"job", c.job}, {"position", pos}});
  }
}

void Server::handle_started(Client& c, const proto::Json& msg) {
  if (c.state != JobState::Granted) throw Error("'started' before a grant");
  c.pgid = static_cast<int>(proto::get_int(msg, "pgid", 1, 1 << 30));
  c.state = JobState::Running;
}

void Server::handle_finished(Client& c, const proto::Json& msg) {
  if (c.state != JobState::Granted && c.state != JobState::Running) {
    throw Error("'finished' without a running job");
  }
  proto::get_int(msg, "code", -1, 1 << 16);
  c.state = JobState::Exited;
  sched_.release(c.job);
  jobs_.erase(c.job);
  c.state = JobState::Released;
  c.job = 0;
  schedule_pass();
}

void Server::handle_status(Client& c, const proto::Json&) { send(c, status_json()); }

void Server::handle_stop(Client& c, const proto::Json&) {
  log("stop requested");
  send(c, {{"type", proto::type::kOk}});
  stopping_ = true;
}

void Server::client_gone(Client& c) {
  int fd = c.fd.get();
  if (c.job != 0) {
    if (c.state == JobState::Queued) {
      sched_.cancel(c.job);
      c.state = JobState::Cancelled;
    } else if (c.state == JobState::Granted || c.state == JobState::Running) {
      c.state = JobState::Lost;
      if (c.pgid > 0) {
        // The launcher died without reporting: its ranks must not outlive it.
        ::kill(-c.pgid, SIGKILL);
        lost_[c.job] = LostJob{c.pgid, now_s() + kLostJobGraceS};
        log("job " + std::to_string(c.job) + " lost its launcher; killed process group " +
            std::to_string(c.pgid));
      } else {
        sched_.release(c.job);
      }
    }
    jobs_.erase(c.job);
  }
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  clients_.erase(fd);
  if (clients_.empty()) idle_since_ = now_s();
  schedule_pass();
}

void Server::reap_lost_jobs() {
  if (lost_.empty()) return;
  double now = now_s();
  bool freed = false;
  for (auto it = lost_.begin(); it != lost_.end();) {
    if (group_alive(it->second.pgid) && now < it->second.give_up_at) {
      ::kill(-it->second.pgid, SIGKILL);
      ++it;
      continue;
    }
    sched_.release(it->first);
    it = lost_.erase(it);
    freed = true;
  }
  if (freed) {
    if (clients_.empty()) idle_since_ = now;
    schedule_pass();
  }
}

void Server::schedule_pass() {
  for (const Grant& g : sched_.schedule()) {
    auto it = jobs_.find(g.id);
    if (it == jobs_.end()) {  // cannot happen: cancelled jobs leave the queue
      sched_.release(g.id);
      continue;
    }
    Client& c = *it->second;
    c.state = JobState::Granted;
    c.granted_at = now_s();
    c.grant = g;
    proto::Json ranks = proto::Json::array();
    for (const RankPlacement& p : layout(config_.resources, c.request, g, c.bind)) {
      proto::Json gpus = proto::Json::array();
      for (int i : p.gpus) gpus.push_back(config_.resources.gpus[static_cast<std::size_t>(i)].name);
      ranks.push_back({{"cores", p.cores}, {"cpus", p.cpus}, {"gpus", gpus}});
    }
    send(c, {{"type", proto::type::kGrant},
             {"job", g.id},
             {"exclusive", g.exclusive},
             {"ranks", std::move(ranks)}});
  }
  send_positions();
}

// Queue positions for launchers that show a status line (stderr on a tty).
void Server::send_positions() {
  for (auto& [id, c] : jobs_) {
    if (!c->wants_progress || c->state != JobState::Queued) continue;
    int pos = sched_.position(id);
    if (pos == c->last_position) continue;
    c->last_position = pos;
    send(*c, {{"type", proto::type::kQueued}, {"job", id}, {"position", pos}});
  }
}

proto::Json Server::status_json() const {
  using proto::Json;
  double now = now_s();
  const ResourceSet& rs = config_.resources;
  Json cores = Json::array();
  for (std::size_t i = 0; i < rs.cores.size(); ++i) {
    Json holders = Json::array();
    for (int s = 0; s < rs.cores[i].slots; ++s) {
      JobId h = sched_.slot_holder(SlotRef{static_cast<int>(i), s});
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
    if (c->state == JobState::Queued) {
      j["position"] = sched_.position(id);
      j["age_s"] = now - c->submitted_at;
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
      running.push_back(std::move(j));
    }
  }
  std::sort(queued.begin(), queued.end(),
            [](const Json& a, const Json& b) { return a["position"] < b["position"]; });
  return {{"type", proto::type::kStatusReply},
          {"daemon",
           {{"pid", ::getpid()},
            {"uptime_s", now - started_at_},
            {"key", config_.paths.key},
            {"socket", config_.paths.socket},
            {"clients", clients_.size()},
            {"idle_timeout_s", config_.idle_timeout_s},
            {"max_oversubscribe", config_.policy.max_oversubscribe}}},
          {"resources", {{"cores", std::move(cores)}, {"gpus", std::move(gpus)}}},
          {"running", std::move(running)},
          {"queued", std::move(queued)}};
}

}  // namespace jiffy
