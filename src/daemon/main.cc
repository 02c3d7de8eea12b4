// jiffyd: the per-user, per-resource-set daemon. Started by the first
// launcher that finds none (with --detached-child and a readiness pipe on fd
// 3) or by hand as `jiffy daemon [options]`.
//
// Start-up order matters for "exactly one daemon": take the lifetime lock
// (an abstract socket name, see take_lifetime_lock) first: a second daemon
// for the same set gives up here, then discover the
// resources, then replace any stale socket and listen, then report ready.
#include <fcntl.h>
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

// So that `jiffy stop` fails over to kill when a daemon hangs, and a person
// can find the daemon: <key>.lock holds its pid (informative only).
void write_pid_file(const std::string& path) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  std::string pid = std::to_string(::getpid()) + "\n";
  if (fd) (void)!::write(fd.get(), pid.data(), pid.size());
}

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

// The lifetime lock: a Unix socket bound to an abstract name made of our uid,
// the resource-set key and the runtime directory. The kernel releases it when we die, however we
// die, and, unlike a lock file, nobody can delete it: a runtime directory
// removed under a live daemon cannot let a second daemon start beside it.
// Returns an invalid Fd when another daemon holds it (and quiet_if_taken).
Fd take_lifetime_lock(const DaemonPaths& paths, bool quiet_if_taken) {
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) throw_errno("socket");
  // The directory is part of the name: daemons of other runtime directories
  // (tests, separate users of one uid) are other daemons.
  std::string name = "jiffy/" + std::to_string(::geteuid()) + "/" + paths.key + "/" + paths.dir;
  if (name.size() > sizeof(sockaddr_un::sun_path) - 1) {
    name = "jiffy/" + std::to_string(::geteuid()) + "/" + paths.key + "/" + std::to_string(std::hash<std::string>{}(paths.dir));
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, name.data(), name.size());  // sun_path[0] = 0: abstract
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    if (errno == EADDRINUSE) {
      if (quiet_if_taken) return Fd();
      throw Error("a daemon is already running for this resource set (" + paths.socket + ")");
    }
    throw_errno("bind the daemon lock");
  }
  write_pid_file(paths.lock);
  return fd;
}

void report_ready(bool detached, const std::string& verdict) {
  if (!detached) return;
  (void)!::write(kReadyFd, verdict.data(), verdict.size());
  ::close(kReadyFd);
}

int serve(const DaemonOptions& opt) {
  DaemonPaths paths = daemon_paths();
  Fd lock = take_lifetime_lock(paths, opt.detached_child);
  if (!lock) {  // another daemon won the race: the launcher will use it
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
  // We hold the lifetime lock, so whatever sits at the socket path is stale.
  if (::unlink(paths.socket.c_str()) != 0 && errno != ENOENT) throw_errno("unlink " + paths.socket);
  try {
    export_topology_xml(paths.topology);
  } catch (const Error& e) {
    std::fprintf(stderr, "jiffy: warning: %s (ranks will discover the topology themselves)\n", e.what());
  }
  Fd listener = unix_listen(paths.socket, 4096);
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
