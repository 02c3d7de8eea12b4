// jiffyd: the per-user, per-resource-set daemon. Started by the first
// launcher that finds none (with --detached-child and a readiness pipe on fd
// 3) or by hand as `jiffy daemon [options]`.
//
// Start-up order matters for "exactly one daemon": take the lifetime lock
// (an abstract socket name, see take_lifetime_lock) first: a second daemon
// for the same set gives up here, then discover the
// resources, then replace any stale socket and listen, then report ready.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "cli/command.h"
#include "core/topology.h"
#include "daemon/server.h"
#include "util/error.h"
#include "util/runtime_dir.h"
#include "util/sys.h"

namespace {

using namespace jiffy;

// Every client costs a descriptor: take all the kernel allows us.
void raise_fd_limit() {
  rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

constexpr int kReadyFd = 3;  // a launcher starting us reads our verdict here

std::optional<std::string> getenv_opt(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::optional<std::string>(v) : std::nullopt;
}

// The lifetime lock, two locks in one. An flock on <key>.lock in the
// private runtime directory, which no other user can touch, and a listening
// Unix socket bound to an abstract name made of our uid, the resource-set
// key and the directory. The kernel releases both when we die, however we
// die. The abstract name also survives the directory being removed, so no
// second daemon can start beside us then. If another user squats that name
// (it is not secret) the flock alone decides: a probe connection tells whose
// it is (SO_PEERCRED). Returns the abstract socket (or, when squatted, the
// flock fd alone); an invalid Fd when a daemon of ours holds the lock.
struct LifetimeLock {
  Fd file;
  Fd name;  // listening; Server accepts and closes the probes
};

sockaddr_un lock_address(const DaemonPaths& paths, socklen_t* len) {
  std::string name = "jiffy/" + std::to_string(::geteuid()) + "/" + paths.key + "/" + paths.dir;
  if (name.size() > sizeof(sockaddr_un::sun_path) - 1) {
    name = "jiffy/" + std::to_string(::geteuid()) + "/" + paths.key + "/" +
           std::to_string(std::hash<std::string>{}(paths.dir));
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, name.data(), name.size());  // sun_path[0] = 0: abstract
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  return addr;
}

// Who holds the abstract name: our uid (a live daemon), another, or nobody
// listening (-1: foreign too, our daemons always listen).
long holder_uid(const sockaddr_un& addr, socklen_t len) {
  Fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!probe) return -1;
  if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
    return errno == EAGAIN ? static_cast<long>(::geteuid()) : -1;  // a full backlog: busy, alive
  }
  try {
    return static_cast<long>(peer_uid(probe.get()));
  } catch (const Error&) {
    return -1;
  }
}

std::optional<LifetimeLock> take_lifetime_lock(const DaemonPaths& paths) {
  LifetimeLock lock;
  lock.file = Fd(::open(paths.lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock.file) throw_errno("open " + paths.lock);
  if (::flock(lock.file.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return std::nullopt;
    throw_errno("flock " + paths.lock);
  }
  socklen_t len;
  sockaddr_un addr = lock_address(paths, &len);
  lock.name = Fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!lock.name) throw_errno("socket");
  if (::bind(lock.name.get(), reinterpret_cast<sockaddr*>(&addr), len) == 0) {
    if (::listen(lock.name.get(), 64) != 0) throw_errno("listen on the daemon lock");
  } else {
    if (errno != EADDRINUSE) throw_errno("bind the daemon lock");
    long uid = holder_uid(addr, len);
    if (uid == static_cast<long>(::geteuid())) return std::nullopt;
    std::fprintf(stderr, "jiffy: warning: the daemon lock name is held by %s; relying on %s alone\n",
                 uid < 0 ? "a process not of ours" : ("uid " + std::to_string(uid)).c_str(),
                 paths.lock.c_str());
    lock.name.reset();
  }
  int fd = lock.file.get();
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) == 0) (void)!::pwrite(fd, pid.data(), pid.size(), 0);
  return lock;
}

void report_ready(bool detached, const std::string& verdict) {
  if (!detached) return;
  (void)!::write(kReadyFd, verdict.data(), verdict.size());
  ::close(kReadyFd);
}

int serve(const DaemonOptions& opt) {
  DaemonPaths paths = daemon_paths();
  std::optional<LifetimeLock> lock = take_lifetime_lock(paths);
  if (!lock) {  // another daemon won the race: the launcher will use it
    if (!opt.detached_child) {
      throw Error("a daemon is already running for this resource set (" + paths.socket + ")");
    }
    report_ready(opt.detached_child, "running\n");
    return 0;
  }
  raise_fd_limit();
  ResourceSpec spec;
  spec.fake_cores = opt.cores;
  spec.gpus = opt.gpus;
  spec.gpu_names = opt.gpu_names;
  spec.slots_per_core = opt.slots_per_core;
  spec.hyperthreads = opt.hyperthreads;
  ServerConfig config;
  config.resources = discover_resources(spec);
  config.policy.max_oversubscribe = opt.max_oversubscribe;
  config.idle_timeout_s = opt.idle_timeout_s;
  config.paths = paths;
  // We hold the lifetime lock, so whatever sits at the socket path is stale:
  // left by a daemon that died without cleaning up.
  config.unclean_start = ::unlink(paths.socket.c_str()) == 0;
  if (!config.unclean_start && errno != ENOENT) throw_errno("unlink " + paths.socket);
  try {
    export_topology_xml(paths.topology);
  } catch (const Error& e) {
    std::fprintf(stderr, "jiffy: warning: %s (ranks will discover the topology themselves)\n", e.what());
  }
  Fd listener = unix_listen(paths.socket, 4096);
  config.lock_fd = lock->name.get();
  Server server(std::move(config), std::move(listener));
  report_ready(opt.detached_child, "ok\n");
  server.run();
  ::unlink(paths.socket.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  if (args.size() < 2 || args[1] != "daemon") args.insert(args.begin() + 1, "daemon");
  bool detached = false;
  try {
    Command cmd = parse_command_line(args, getenv_opt);
    auto* d = std::get_if<DaemonCommand>(&cmd);
    if (!d) throw Error("jiffyd only runs the daemon (see jiffy --help)");
    detached = d->options.detached_child;
    return serve(d->options);
  } catch (const Error& e) {
    std::fprintf(stderr, "jiffy: %s\n", e.what());
    report_ready(detached, std::string("error: ") + e.what() + "\n");
    return 1;
  }
}
