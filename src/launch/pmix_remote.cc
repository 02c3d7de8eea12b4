// The lean launcher's PmixServer: the shared server of its resource set
// (launch/pmix_shared.h), reached over its socket (pmi/pmix_wire.h). One
// connection per job; what setup_fork gave each rank comes back in the
// server's answer, and the job's events (a rank connected, finalized,
// aborted, asked to spawn) arrive on the same connection. The launcher
// polls an epoll descriptor holding both the socket and an eventfd, so
// that events read while it waited for an answer are still seen at once.
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <utility>

#include "launch/client.h"
#include "launch/pmix_shared.h"
#include "pmi/pmix_server.h"
#include "pmi/pmix_wire.h"
#include "util/error.h"
#include "util/sys.h"

namespace jiffy {

namespace {

// The connection open_shared made, for the job's start().
Fd g_shared;
bool g_opened = false;

class Remote final : public PmixServer {
 public:
  Remote(Fd fd, const PmixJob& job) : fd_(std::move(fd)), server_pid_(peer_cred(fd_.get()).pid) {
    wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!wake_ || !epoll_) throw_errno("PMIx: eventfd/epoll");
    for (int watched : {fd_.get(), wake_.get()}) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.fd = watched;
      if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, watched, &ev) != 0) throw_errno("PMIx: epoll_ctl");
    }
    send(pmix_wire::job_message({job.nspace, job.appnum, job.dir}));
    vars_[0] = pmix_wire::parse_vars(answer(), 0, job.appnum.size());
  }

  std::vector<std::pair<std::string, std::string>> rank_variables(int world, int rank) const override {
    return vars_.at(world).at(static_cast<std::size_t>(rank));
  }

  int event_fd() const override { return epoll_.get(); }

  std::vector<PmixEvent> take_events() override {
    uint64_t n;
    (void)!::read(wake_.get(), &n, sizeof n);
    const bool ended = read_socket();
    while (std::optional<proto::Json> m = next()) {
      if ((*m)["type"] == pmix_wire::type::kEvent) events_.push_back(pmix_wire::parse_event(*m));
    }
    if (ended) {
      PmixEvent e;
      e.kind = PmixEvent::Kind::Lost;
      e.message = "jiffy-pmix, pid " + std::to_string(server_pid_);
      events_.push_back(std::move(e));
    }
    return std::exchange(events_, {});
  }

  void add_world(int world, const std::vector<int>& appnum, int spawn_id) override {
    send(pmix_wire::world_message({world, appnum, spawn_id}));
    vars_[world] = pmix_wire::parse_vars(answer(), world, appnum.size());
  }

  void spawn_done(int spawn_id, bool ok, int world) override {
    try_send(pmix_wire::spawn_done_message(spawn_id, ok, world));
  }

  void abandon_port(const std::string& port) override { try_send(pmix_wire::abandon_port_message(port)); }

 private:
  void send(const proto::Json& m) { write_all(fd_.get(), proto::encode(m), "to the shared PMIx server"); }
  // A server that is gone is told by the socket's end (take_events).
  void try_send(const proto::Json& m) {
    try {
      send(m);
    } catch (const Error&) {
    }
  }

  // Reads what the socket holds, without waiting. Returns true once, when
  // it finds the socket's end (the server went away).
  bool read_socket() {
    if (lost_) return false;
    char buf[65536];
    for (;;) {
      ssize_t n = ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        decoder_.feed(std::string_view(buf, static_cast<std::size_t>(n)));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
      lost_ = true;
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd_.get(), nullptr);
      return true;
    }
  }

  std::optional<proto::Json> next() {
    try {
      return decoder_.next();
    } catch (const Error& e) {
      throw Error(std::string("the shared PMIx server: ") + e.what());
    }
  }

  // The server's answer to what was just sent; events that come first are
  // kept for take_events (and the eventfd tells the launcher's loop).
  proto::Json answer() {
    const double deadline = now_s() + daemon_answer_timeout_s();
    for (;;) {
      while (std::optional<proto::Json> m = next()) {
        const std::string& type = (*m)["type"].get_ref<const std::string&>();
        if (type == pmix_wire::type::kEvent) {
          events_.push_back(pmix_wire::parse_event(*m));
          uint64_t one = 1;
          (void)!::write(wake_.get(), &one, sizeof one);
          continue;
        }
        if (type == proto::type::kError) throw Error("the shared PMIx server: " + proto::get_string(*m, "message", 4096));
        return *m;
      }
      if (lost_) throw Error("the shared PMIx server ended", ECONNRESET);
      pollfd p{fd_.get(), POLLIN, 0};
      const int left = static_cast<int>((deadline - now_s()) * 1000);
      if (left <= 0) throw Error("the shared PMIx server did not answer");
      if (::poll(&p, 1, left) < 0 && errno != EINTR) throw_errno("poll");
      read_socket();  // its end is seen above, once the messages before it are read
    }
  }

  Fd fd_;
  Fd wake_;
  Fd epoll_;
  proto::FrameDecoder decoder_{pmix_wire::kMaxFrame};
  std::vector<PmixEvent> events_;
  std::map<int, std::vector<pmix_wire::Vars>> vars_;  // per world
  pid_t server_pid_;
  bool lost_ = false;
};

}  // namespace

bool PmixServer::available() { return g_opened; }

bool PmixServer::open_shared() {
  if (g_shared) return true;
  // The user configures libpmix's server (PMIX_MCA_*): that is a server of
  // its own, as the launcher's own (jiffy-pmix) would start it.
  for (char** e = environ; *e; ++e) {
    if (std::strncmp(*e, "PMIX_MCA_", 9) == 0) return false;
  }
  try {
    g_shared = connect_shared_pmix(daemon_paths(), /*start_if_missing=*/true);
  } catch (const Error&) {
    return false;  // jiffy-pmix serves the job itself, and says what fails
  }
  g_opened = static_cast<bool>(g_shared);
  return g_opened;
}

std::unique_ptr<PmixServer> PmixServer::start(const PmixJob& job) {
  // A server may be going as we register (idle, or stopped, after it
  // accepted us): its successor is asked instead, once.
  for (int attempt = 0;; ++attempt) {
    Fd fd = g_shared ? std::exchange(g_shared, Fd()) : connect_shared_pmix(daemon_paths(), /*start_if_missing=*/true);
    try {
      return std::make_unique<Remote>(std::move(fd), job);
    } catch (const Error& e) {
      if (attempt > 0 || !daemon_restarting(e)) throw;
    }
  }
}

int PmixServer::host_main(const std::vector<std::string>&) {
  throw Error("this executable has no PMIx support (use jiffy-pmix)");
}

int PmixServer::serve_main(const std::vector<std::string>&) {
  throw Error("this executable has no PMIx support (use jiffy-pmix)");
}

}  // namespace jiffy
