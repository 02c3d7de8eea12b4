#include "launch/client.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "util/error.h"
#include "util/sys.h"

namespace jiffy {

namespace {

constexpr double kStartTimeoutS = 15;  // hwloc discovery on a big machine takes a while

std::string dirname_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// Waits between polls of the start lock: 1 ms, doubling to 32 ms (a start
// takes tens of ms; a waiter never sleeps much past its end).
class StartBackoff {
 public:
  void pause() {
    std::this_thread::sleep_for(std::chrono::microseconds(us_));
    us_ = std::min(2 * us_, 32000);
  }

 private:
  int us_ = 1000;
};

}  // namespace

// Waits for an exclusive flock without hanging forever on a wedged holder.
Fd lock_exclusive(const DaemonPaths& paths, const std::string& path, double timeout_s) {
  Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) throw_errno("open " + paths.shown(path));
  double deadline = now_s() + timeout_s;
  // Polled, not blocked on (a blocking flock has no timeout), and ever
  // less often: 32 launchers waking every 2 ms kept the daemon they wait
  // for from running (its topology discovery binds it to each CPU in turn,
  // and waits on each for a turn).
  StartBackoff backoff;
  while (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) throw_errno("flock " + paths.shown(path));
    if (now_s() > deadline) throw Error("timed out waiting for another launcher to start the daemon");
    backoff.pause();
  }
  return fd;
}

namespace {

// Connects to the daemon's socket; an invalid Fd when nobody listens. The
// peer must be of our uid: the directory is private, but a daemon is
// trusted with our commands, so it is checked both ways (the daemon checks
// us too).
Fd connect_daemon(const DaemonPaths& paths) {
  Fd fd = unix_connect(paths.socket);
  if (fd) {
    uid_t uid = peer_uid(fd.get());
    if (uid != ::geteuid()) {
      throw Error("the daemon socket " + paths.shown(paths.socket) + " is served by uid " + std::to_string(uid) +
                  ", not by us; refusing to use it");
    }
  }
  return fd;
}

// Whether a launcher was starting a daemon (it held the start lock) and we
// waited, up to timeout_s, for it to finish: then the socket is worth
// another try. A shared lock, held for an instant, never delays a starter
// by more than its 2 ms poll.
bool waited_for_starter(const DaemonPaths& paths, double timeout_s) {
  Fd fd(::open(paths.start.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return false;  // nobody ever started one here
  const double deadline = now_s() + timeout_s;
  bool waited = false;
  StartBackoff backoff;
  while (::flock(fd.get(), LOCK_SH | LOCK_NB) != 0) {
    if ((errno != EWOULDBLOCK && errno != EINTR) || now_s() > deadline) return false;
    waited = true;
    backoff.pause();
  }
  return waited;  // closing fd lets the lock go
}

}  // namespace

double daemon_answer_timeout_s() {
  const char* t = std::getenv("JIFFY_DAEMON_TIMEOUT");
  char* end = nullptr;
  double v = t ? std::strtod(t, &end) : 0;
  return (t && end && *end == '\0' && v > 0 && v < 1e6) ? v : 10.0;
}

bool daemon_restarting(const Error& e) { return e.sys_errno() == ECONNRESET || e.sys_errno() == EPIPE; }

void RestartBackoff::pause() {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms_));
  ms_ = std::min(2 * ms_, 100);
}

std::string start_daemon(const DaemonPaths& paths, const std::vector<std::string>& extra_args) {
  // argv[0] names the daemon's identity (daemon/rendezvous.h).
  std::vector<std::string> argv = {"jiffyd:" + paths.identity, "daemon", "--detached-child"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  return start_detached(daemon_executable(), argv, paths, paths.log, "the daemon");
}

std::string start_detached(const std::string& exe, const std::vector<std::string>& args, const DaemonPaths& paths,
                           const std::string& log_path, const std::string& what) {
  if (::access(exe.c_str(), X_OK) != 0) throw_errno("cannot run " + what + " " + exe);
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) throw_errno("pipe2");
  Fd ready_r(ready[0]), ready_w(ready[1]);
  // Built before fork: the child of a threaded launcher (libpmix) must not allocate.
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);
  // The daemon works from "/": a relative JIFFY_RUNTIME_DIR is given to it
  // resolved, as we found it. A launcher inside a job (a rank's script)
  // passes on no JIFFY_JOB_TAG: the daemon kills and waits for what carries
  // a job's tag (util/process.h), and a long-lived process is no job's.
  std::vector<std::string> env_text;
  for (char** e = environ; *e; ++e) {
    if (std::strncmp(*e, "JIFFY_RUNTIME_DIR=", 18) != 0 && std::strncmp(*e, "JIFFY_JOB_TAG=", 14) != 0) {
      env_text.emplace_back(*e);
    }
  }
  if (const char* d = std::getenv("JIFFY_RUNTIME_DIR"); d && *d) env_text.push_back("JIFFY_RUNTIME_DIR=" + paths.dir);
  std::vector<const char*> envp;
  for (const std::string& e : env_text) envp.push_back(e.c_str());
  envp.push_back(nullptr);
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : paths.cpus) CPU_SET(c, &set);
  // A launcher running a job is a child subreaper: were it one now, the
  // daemon orphaned below would be adopted by it, not by init, and killed
  // with the job's leftovers.
  int subreaper = 0;
  ::prctl(PR_GET_CHILD_SUBREAPER, &subreaper);
  if (subreaper) ::prctl(PR_SET_CHILD_SUBREAPER, 0);
  pid_t child = ::fork();
  if (child < 0) throw_errno("fork");
  if (child == 0) {
    // Intermediate child: new session, then fork again so the daemon is
    // adopted by init and never becomes a zombie of ours.
    ::setsid();
    if (::fork() != 0) ::_exit(0);
    int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    ::dup2(null, 0);
    ::dup2(log >= 0 ? log : null, 1);
    ::dup2(log >= 0 ? log : null, 2);
    ::dup2(ready_w.get(), 3);  // dup2 clears close-on-exec on the copy
    // Whatever else our caller let us inherit (make's jobserver pipe, a
    // test harness's pipes) must not be held open by a long-lived daemon.
    ::close_range(4, ~0u, 0);
    (void)!::chdir("/");
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    // The daemon serves the CPUs its resource set was named after, even
    // when we have since narrowed our own affinity.
    if (!paths.cpus.empty()) ::sched_setaffinity(0, sizeof set, &set);
    ::execve(exe.c_str(), const_cast<char* const*>(argv.data()), const_cast<char* const*>(envp.data()));
    ::_exit(127);
  }
  ready_w.reset();
  int status;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (subreaper) ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  std::string verdict;
  double deadline = now_s() + kStartTimeoutS;
  for (;;) {
    pollfd p{ready_r.get(), POLLIN, 0};
    int left = static_cast<int>((deadline - now_s()) * 1000);
    if (left <= 0) throw Error(what + " did not start within 15 s (log: " + paths.shown(log_path) + ")");
    int n = ::poll(&p, 1, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("poll");
    if (n == 0) continue;
    char buf[512];
    ssize_t r = ::read(ready_r.get(), buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    verdict.append(buf, static_cast<std::size_t>(r));
  }
  while (!verdict.empty() && verdict.back() == '\n') verdict.pop_back();
  if (verdict.empty()) {
    verdict = "error: " + what + " exited during start-up (log: " + paths.shown(log_path) + ")";
  }
  return verdict;
}

std::string daemon_executable() {
  if (const char* d = std::getenv("JIFFY_DAEMON"); d && *d) return d;
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw_errno("readlink /proc/self/exe");
  buf[n] = '\0';
  return dirname_of(buf) + "/jiffyd";
}

DaemonClient::DaemonClient(Fd fd, DaemonPaths paths) : fd_(std::move(fd)), paths_(std::move(paths)) {}

DaemonClient DaemonClient::adopt(Fd fd, DaemonPaths paths) {
  ::fcntl(fd.get(), F_SETFD, FD_CLOEXEC);
  return DaemonClient(std::move(fd), std::move(paths));
}

std::optional<DaemonClient> DaemonClient::connect_existing() { return connect_existing(daemon_paths()); }

std::optional<DaemonClient> DaemonClient::connect_existing(const DaemonPaths& paths) {
  const double deadline = now_s() + kStartTimeoutS;
  for (;;) {
    if (Fd fd = connect_daemon(paths)) return DaemonClient(std::move(fd), paths);
    if (!waited_for_starter(paths, deadline - now_s())) return std::nullopt;
  }
}

std::optional<proto::Json> DaemonClient::ask(const proto::Json& msg, int timeout_ms, bool start_if_missing) {
  const DaemonPaths paths = daemon_paths();
  const double give_up = now_s() + kRestartWindowS;
  RestartBackoff backoff;
  for (;;) {
    std::optional<DaemonClient> client =
        start_if_missing ? std::optional<DaemonClient>(connect(paths, true)) : connect_existing(paths);
    if (!client) return std::nullopt;
    try {
      client->send(msg);
      if (auto reply = client->receive(timeout_ms)) return reply;
      throw Error("the daemon did not answer within " + std::to_string(timeout_ms / 1000) + " s", ETIMEDOUT);
    } catch (const Error& e) {
      if (!daemon_restarting(e) || now_s() > give_up) throw;
    }
    backoff.pause();
  }
}

DaemonClient reattach_to_successor(const DaemonPaths& paths, const proto::Json& msg) {
  for (int attempt = 0;; ++attempt) {
    try {
      DaemonClient client = DaemonClient::connect(paths, /*start_if_missing=*/true);
      client.send(msg);
      return client;
    } catch (const Error&) {
      if (attempt == 2) throw;
    }
  }
}

proto::Json slot_pairs(const std::vector<std::pair<int, int>>& slots) {
  proto::Json out = proto::Json::array();
  for (auto [core, slot] : slots) out.push_back({core, slot});
  return out;
}

DaemonClient DaemonClient::connect(bool start_if_missing) {
  return connect(daemon_paths(), start_if_missing);
}

DaemonClient DaemonClient::connect(const DaemonPaths& paths, bool start_if_missing) {
  if (Fd fd = connect_daemon(paths)) return DaemonClient(std::move(fd), paths);
  if (!start_if_missing) throw Error("no daemon is running for this resource set");
  // A daemon may be exiting while we start another: the new one waits for
  // the old one's lifetime lock, so retry a few times.
  double deadline = now_s() + kStartTimeoutS;
  for (bool first = true; now_s() < deadline; first = false) {
    // The directory may have been removed or replaced meanwhile: look it up
    // anew (our descriptor keeps its number, so paths stay valid).
    if (!first) runtime_dir();
    Fd start_lock = lock_exclusive(paths, paths.start, kStartTimeoutS);
    if (Fd fd = connect_daemon(paths)) return DaemonClient(std::move(fd), paths);
    std::string verdict = start_daemon(paths, {});
    if (verdict.rfind("error: ", 0) == 0) throw Error("cannot start the daemon: " + verdict.substr(7));
    // "ok", or "running": one we could not reach a moment ago (it may be
    // exiting, or just starting); try again.
    if (Fd fd = connect_daemon(paths)) return DaemonClient(std::move(fd), paths);
    start_lock.reset();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  throw Error("cannot reach the daemon at " + paths.shown(paths.socket));
}

void DaemonClient::send(const proto::Json& msg) {
  std::string frame = proto::encode(msg);
  for (std::string_view rest = frame; !rest.empty();) {
    ssize_t n = ::send(fd_.get(), rest.data(), rest.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("send to daemon");
    }
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
}

std::optional<proto::Json> DaemonClient::read_available() {
  if (auto msg = decoder_.next()) return msg;
  char buf[65536];
  ssize_t n;
  do {
    n = ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return std::nullopt;
  if (n < 0) throw_errno("receive from daemon");
  if (n == 0) throw Error("the daemon closed the connection", ECONNRESET);
  decoder_.feed(std::string_view(buf, static_cast<std::size_t>(n)));
  return decoder_.next();
}

std::optional<proto::Json> DaemonClient::receive(int timeout_ms) {
  double deadline = now_s() + timeout_ms / 1000.0;
  for (;;) {
    if (auto msg = read_available()) return msg;
    int left = timeout_ms < 0 ? -1 : static_cast<int>((deadline - now_s()) * 1000);
    if (timeout_ms >= 0 && left <= 0) return std::nullopt;
    pollfd p{fd_.get(), POLLIN, 0};
    int n = ::poll(&p, 1, left);
    if (n < 0 && errno != EINTR) throw_errno("poll");
  }
}

}  // namespace jiffy
