// `jiffy-pmix --jiffy-pmix-serve`: the shared PMIx server of a user's
// resource set (launch/pmix_shared.h says who starts it and where it
// listens; pmi/pmix_wire.h its protocol). libpmix's server is initialised
// once, for the life of this process; each launcher's connection is one
// job, a Host of its own (pmix_host.cc) whose events are written on that
// connection.
//
// One thread (this loop) accepts launchers, reads their requests and
// registers their namespaces; libpmix's progress thread runs the
// callbacks, which write a job's events on its connection. A write never
// waits: what the socket cannot take at once is queued and written by the
// loop (a launcher that stopped reading must not stall every job). A
// launcher that goes away ends its job: its namespaces are deregistered.
//
// The server exits when `jiffy stop` asks (once its jobs have ended) or
// after idle_timeout_s() without a job; before it goes it removes its socket and
// drops its lifetime lock, so that the next launcher starts a successor
// while it finishes. It also makes way for a successor after kJobsPerLife
// jobs, so that whatever libpmix keeps per namespace never accumulates.
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "pmi/pmix_server.h"
#include "pmi/pmix_wire.h"
#include "proto/message.h"
#include "util/error.h"
#include "util/fd.h"
#include "util/runtime_dir.h"
#include "util/sys.h"

namespace jiffy {

namespace {

constexpr long kJobsPerLife = 5000;

// How long the server waits for a job before it exits: 60 s, as the
// daemon's default, or $JIFFY_PMIX_IDLE_TIMEOUT seconds.
double idle_timeout_s() {
  const char* t = std::getenv("JIFFY_PMIX_IDLE_TIMEOUT");
  char* end = nullptr;
  double v = t ? std::strtod(t, &end) : 0;
  return (t && end && *end == '\0' && v > 0 && v < 1e7) ? v : 60.0;
}

// One launcher's connection, and its job once registered.
struct Conn {
  Fd fd;
  proto::FrameDecoder in{pmix_wire::kMaxFrame};
  std::mutex out_mutex;
  std::string out;      // what the socket could not take yet
  std::atomic<bool> broken{false};  // gone or a write failed: the loop drops the connection
  std::unique_ptr<PmixServer> job;

  // From either thread. wake tells the loop when something is queued.
  void send(const proto::Json& m, int wake) {
    std::string frame = proto::encode(m);
    std::lock_guard<std::mutex> lock(out_mutex);
    if (broken) return;
    std::string_view rest = frame;
    if (out.empty()) {
      ssize_t n;
      do {
        n = ::send(fd.get(), rest.data(), rest.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      } while (n < 0 && errno == EINTR);
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        broken = true;
      } else if (n > 0) {
        rest.remove_prefix(static_cast<std::size_t>(n));
      }
      if (rest.empty() && !broken) return;
    }
    out.append(rest);
    uint64_t one = 1;
    (void)!::write(wake, &one, sizeof one);
  }

  // The loop, on POLLOUT.
  void flush() {
    std::lock_guard<std::mutex> lock(out_mutex);
    while (!out.empty() && !broken) {
      ssize_t n = ::send(fd.get(), out.data(), out.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n < 0) {
        broken = true;
        return;
      }
      out.erase(0, static_cast<std::size_t>(n));
    }
  }

  bool wants_out() {
    std::lock_guard<std::mutex> lock(out_mutex);
    return !out.empty();
  }
};

class Service {
 public:
  Service(Fd listener, Fd lifetime_lock, std::string socket_path)
      : listener_(std::move(listener)), lock_(std::move(lifetime_lock)), socket_path_(std::move(socket_path)) {
    wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake_) throw_errno("eventfd");
    idle_since_ = now_s();
    idle_s_ = idle_timeout_s();
  }

  void run() {
    for (;;) {
      std::vector<pollfd> fds;
      fds.push_back({wake_.get(), POLLIN, 0});
      if (listener_) fds.push_back({listener_.get(), POLLIN, 0});
      std::vector<Conn*> polled;
      for (auto& [fd, c] : conns_) {
        fds.push_back({fd, static_cast<short>(POLLIN | (c->wants_out() ? POLLOUT : 0)), 0});
        polled.push_back(c.get());
      }
      // A launcher connected but not registered yet counts: it registers
      // next (even once we take no more launchers).
      int timeout = -1;
      if (conns_.empty()) {
        if (!listener_) return;  // stopping (or making way), and nothing left to serve
        timeout = std::max(0, static_cast<int>((idle_since_ + idle_s_ - now_s()) * 1000) + 1);
      }
      int n = ::poll(fds.data(), fds.size(), timeout);
      if (n < 0 && errno != EINTR) throw_errno("poll");
      if (n <= 0) {
        if (conns_.empty() && now_s() >= idle_since_ + idle_s_) make_way("idle");
        continue;
      }
      std::size_t at = 0;
      if (fds[at++].revents) {
        uint64_t v;
        (void)!::read(wake_.get(), &v, sizeof v);
      }
      if (listener_ && fds[at++].revents) accept_all();
      for (Conn* c : polled) {
        const pollfd& p = fds[at++];
        if (p.revents & POLLOUT) c->flush();
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) read_from(*c);
      }
      for (auto it = conns_.begin(); it != conns_.end();) {
        if (it->second->broken) {
          drop(*it->second);
          it = conns_.erase(it);
        } else {
          ++it;
        }
      }
    }
  }

 private:

  // No more launchers: the socket goes and the lifetime lock with it, so
  // the next launcher starts a successor; the jobs we serve go on.
  void make_way(const char* why) {
    if (!listener_) return;
    std::fprintf(stderr, "jiffy-pmix: %s: taking no more jobs\n", why);
    ::unlink(socket_path_.c_str());
    listener_.reset();
    lock_.reset();
  }

  void accept_all() {
    for (;;) {
      Fd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      if (!fd) return;
      // Only our own user's launchers (the directory is private; checked
      // all the same).
      if (peer_uid(fd.get()) != ::geteuid()) continue;
      auto c = std::make_unique<Conn>();
      c->fd = std::move(fd);
      const int key = c->fd.get();
      conns_[key] = std::move(c);
    }
  }

  void read_from(Conn& c) {
    char buf[65536];
    for (;;) {
      ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n <= 0) {
        c.broken = true;  // the launcher is gone: its job ends
        return;
      }
      c.in.feed(std::string_view(buf, static_cast<std::size_t>(n)));
    }
    try {
      while (std::optional<proto::Json> m = c.in.next()) handle(c, *m);
    } catch (const Error& e) {
      std::fprintf(stderr, "jiffy-pmix: dropping a launcher: %s\n", e.what());
      c.broken = true;
    }
  }

  void handle(Conn& c, const proto::Json& m) {
    const std::string& type = m["type"].get_ref<const std::string&>();
    try {
      if (type == pmix_wire::type::kJob) return register_job(c, pmix_wire::parse_job(m));
      if (type == pmix_wire::type::kStop) {
        make_way("stop requested");
        return c.send({{"type", proto::type::kOk}}, wake_.get());
      }
      if (type == pmix_wire::type::kStatus) {
        long jobs = 0;
        for (const auto& [fd, other] : conns_) jobs += other->job != nullptr;
        return c.send({{"type", proto::type::kOk}, {"pid", ::getpid()}, {"jobs", jobs}, {"served", served_},
                       {"stopping", !listener_}},
                      wake_.get());
      }
      if (!c.job) throw Error("no job registered on this connection");
      if (type == pmix_wire::type::kWorld) {
        pmix_wire::WorldRequest w = pmix_wire::parse_world(m);
        c.job->add_world(w.world, w.appnum, w.spawn_id);
        return c.send(vars(*c.job, w.world, w.appnum.size()), wake_.get());
      }
      if (type == pmix_wire::type::kSpawnDone) {
        return c.job->spawn_done(static_cast<int>(proto::get_int(m, "spawn_id", 0, 1 << 30)),
                                 proto::get_bool(m, "ok", false),
                                 static_cast<int>(proto::get_int(m, "world", 0, 1 << 20)));
      }
      if (type == pmix_wire::type::kAbandonPort) return c.job->abandon_port(proto::get_string(m, "port", 4096));
      throw Error("unknown message type '" + type.substr(0, 64) + "'");
    } catch (const Error& e) {
      c.send(proto::error_message(e.what()), wake_.get());
    }
  }

  void register_job(Conn& c, const pmix_wire::JobRequest& r) {
    if (c.job) throw Error("a job is registered on this connection already");
    PmixJob job;
    job.nspace = r.nspace;
    job.appnum = r.appnum;
    job.size = static_cast<int>(r.appnum.size());
    job.dir = r.dir;
    job.uid = ::geteuid();
    job.gid = ::getegid();
    Conn* conn = &c;
    const int wake = wake_.get();
    job.sink = [conn, wake](const PmixEvent& e) { conn->send(pmix_wire::event_message(e), wake); };
    c.job = PmixServer::start(job);
    c.send(vars(*c.job, 0, r.appnum.size()), wake_.get());
    if (++served_ >= kJobsPerLife) make_way("served enough jobs for one life");
  }

  static proto::Json vars(const PmixServer& s, int world, std::size_t n) {
    std::vector<pmix_wire::Vars> ranks;
    for (std::size_t r = 0; r < n; ++r) ranks.push_back(s.rank_variables(world, static_cast<int>(r)));
    return pmix_wire::vars_message(world, ranks);
  }

  // The job ends (its namespaces deregistered: no callback reaches the
  // connection any more), then the connection.
  void drop(Conn& c) {
    c.job.reset();
    c.fd.reset();
    idle_since_ = now_s();
  }

  Fd listener_;
  Fd lock_;
  std::string socket_path_;
  Fd wake_;
  std::map<int, std::unique_ptr<Conn>> conns_;
  double idle_since_ = 0;
  double idle_s_ = 60;
  long served_ = 0;
};

}  // namespace

int PmixServer::serve_main(const std::vector<std::string>&) {
  // Descriptor 3: the starter's pipe, for our verdict (launch/client.h,
  // start_detached).
  Fd verdict_fd(3);
  auto verdict = [&](const std::string& v) {
    if (!verdict_fd) return;
    std::string line = v + "\n";
    (void)!::write(verdict_fd.get(), line.data(), line.size());
    verdict_fd.reset();
  };
  std::string dir;
  try {
    const DaemonPaths paths = daemon_paths();
    Fd lock(::open(paths.pmix_lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!lock) throw_errno("open " + paths.shown(paths.pmix_lock));
    if (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
      verdict("running");
      return 0;
    }
    ::unlink(paths.pmix_socket.c_str());  // a dead predecessor's
    Fd listener = unix_listen(paths.pmix_socket, SOMAXCONN);
    ::fcntl(listener.get(), F_SETFL, O_NONBLOCK);
    // libpmix's own files (not the jobs': each job's are in its directory).
    std::string templ = paths.dir + "/pmix-XXXXXX";
    if (!::mkdtemp(templ.data())) throw_errno("mkdtemp " + templ);
    dir = templ;
    PmixLibrary library(dir, read_file_or_empty(paths.topology));
    verdict("ok");
    Service(std::move(listener), std::move(lock), paths.pmix_socket).run();
  } catch (const Error& e) {
    verdict(std::string("error: ") + e.what());
    std::fprintf(stderr, "jiffy-pmix: %s\n", e.what());
    if (!dir.empty()) remove_tree(dir);
    return 1;
  }
  remove_tree(dir);
  return 0;
}

}  // namespace jiffy
