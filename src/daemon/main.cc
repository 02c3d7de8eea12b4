// jiffyd: the per-user, per-resource-set daemon. Started by the first
// launcher that finds none (with --detached-child and a readiness pipe on fd
// 3) or by hand as `jiffy daemon [options]`.
//
// Start-up order matters for "exactly one daemon": take the lifetime lock
// (daemon/rendezvous.h) first: a second daemon for the same set gives up
// here, then discover the resources, then replace any stale socket and
// listen, then report ready.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
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
#include "daemon/history_writer.h"
#include "daemon/rendezvous.h"
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

void report_ready(bool detached, const std::string& verdict) {
  if (!detached) return;
  (void)!::write(kReadyFd, verdict.data(), verdict.size());
  ::close(kReadyFd);
}

void warn(const std::string& line) { std::fprintf(stderr, "jiffy: warning: %s\n", line.c_str()); }

// The history thread for this daemon (daemon/history_writer.h).
std::unique_ptr<HistoryService> start_history(const DaemonOptions& opt, const ServerConfig& config) {
  HistoryWriterConfig h;
  h.journal = config.paths.history;
  h.enabled = opt.history;
  h.db_path = history::default_db_path(getenv_opt);
  h.keep.keep_jobs = opt.history_keep_jobs;
  h.keep.keep_days = opt.history_keep_days;
  h.cores = static_cast<int>(config.resources.cores.size());
  for (const auto& g : config.resources.gpus) h.gpus += (h.gpus.empty() ? "" : ",") + g.name;
  h.identity = config.paths.identity;
  h.log = [](const std::string& line) { std::fprintf(stderr, "jiffyd[%d]: %s\n", ::getpid(), line.c_str()); };
  return start_history_writer(std::move(h));
}

// Runs us again under the argv[0] that names our identity in /proc (see
// daemon/rendezvous.h), unless we already have it. Launchers that start us
// set it themselves; this covers jiffyd run by hand.
void take_identity(const DaemonPaths& paths, char** argv) {
  std::string argv0 = daemon_argv0(paths);
  if (argv0 == argv[0]) return;
  argv[0] = argv0.data();
  char exe[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) throw_errno("readlink /proc/self/exe");
  exe[n] = '\0';
  ::execv(exe, argv);  // by its name: /proc/self/exe would rename the process "exe"
  throw_errno("cannot re-execute the daemon");
}

int serve(const DaemonOptions& opt, char** argv) {
  DaemonPaths paths = daemon_paths();
  take_identity(paths, argv);
  std::optional<LifetimeLock> lock = take_lifetime_lock(paths, warn);
  if (!lock) {  // another daemon won the race: the launcher will use it
    if (!opt.detached_child) {
      throw Error("a daemon is already running for this resource set (" + paths.shown(paths.socket) + ")");
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
  config.policy.backfill = opt.backfill;
  config.policy.backfill_slack = opt.backfill_slack;
  config.idle_timeout_s = opt.idle_timeout_s;
  config.paths = paths;
  // We hold the lifetime lock, so whatever sits at the socket path is stale:
  // left by a daemon that died without cleaning up.
  config.unclean_start = ::unlink(paths.socket.c_str()) == 0;
  if (!config.unclean_start && errno != ENOENT) throw_errno("unlink " + paths.shown(paths.socket));
  try {
    export_topology_xml(paths.topology);
  } catch (const Error& e) {
    std::fprintf(stderr, "jiffy: warning: %s (ranks will discover the topology themselves)\n", e.what());
  }
  Fd listener = unix_listen(paths.socket, 4096);
  config.lock = std::move(*lock);
  config.history = start_history(opt, config);
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
    return serve(d->options, argv);
  } catch (const Error& e) {
    std::fprintf(stderr, "jiffy: %s\n", e.what());
    report_ready(detached, std::string("error: ") + e.what() + "\n");
    return 1;
  }
}
