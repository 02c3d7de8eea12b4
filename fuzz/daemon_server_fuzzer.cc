// Fuzzes the real daemon: a jiffy::Server with its epoll loop, listening on
// a Unix socket in a private temporary directory, serves clients that send
// the fuzzer's bytes, then leave.
//
// Input: what the clients send, one connection after another, separated by
// the line "--" ("\n--\n"); at most 16 connections. A first part that starts
// with '{' is not a connection but the state file a crashed predecessor left
// (daemon/state_file.h): the server recovers from it before serving.
//
// Each run: write the state file, listen, connect every client and write its
// bytes (what the socket buffer takes), shut down their sending side (the
// daemon reads their bytes, then the hang-up), then Server::run()
// on a fake machine (fuzz_util.h) with an idle timeout of ~0: the server
// accepts everyone, handles every message (submit, grant, started,
// finished, reattach, lane, status, stop, garbage; its lane lends and takes
// back slots as requests come and go), sees every client go (queued
// requests cancelled, granted jobs lost and released) and returns once it
// has no client left. A hang is a finding (libFuzzer's -timeout).
//
// "started" and "reattach" name the ranks' process group, which the daemon
// accepts only when a child of the launcher leads it: the word CHILDPGID in
// the input is replaced by the pid of such a child (a process of ours that
// waits in its own group and dies with us), so that jobs can run.
//
// The daemon kills the process groups of lost jobs; the groups here come
// from the fuzzer's bytes. kill() and killpg() are therefore replaced below:
// no group is alive, nothing is ever signalled, and a kill that would reach
// every process (pid -1), our own group or ourselves is a finding.
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/server.h"
#include "fuzz_util.h"
#include "util/error.h"
#include "util/fd.h"
#include "util/sys.h"

extern "C" int kill(pid_t pid, int sig) {
  if (sig != 0 && (pid == -1 || pid == 0 || pid == ::getpid() || pid == -::getpgrp())) {
    std::fprintf(stderr, "fuzz check failed: the daemon sent signal %d to pid %d\n", sig, pid);
    __builtin_trap();
  }
  errno = ESRCH;
  return -1;
}

extern "C" int killpg(pid_t pgrp, int sig) { return kill(pgrp > 0 ? -pgrp : pgrp, sig); }

namespace {

constexpr std::string_view kSeparator = "\n--\n";
constexpr std::size_t kMaxConnections = 16;

struct Dir {
  std::string path;
  Dir() {
    char tmpl[] = "/tmp/jfuzz-XXXXXX";  // short: sun_path is 108 bytes
    if (!::mkdtemp(tmpl)) __builtin_trap();
    path = tmpl;
  }
  ~Dir() { jiffy::remove_tree(path); }
};

jiffy::DaemonPaths paths(const std::string& dir) {
  jiffy::DaemonPaths p;
  p.dir = dir;
  p.key = "0123456789abcdef";
  p.socket = dir + "/" + p.key + ".sock";
  p.lock = dir + "/" + p.key + ".lock";
  p.start = dir + "/" + p.key + ".start";
  p.log = dir + "/" + p.key + ".log";
  p.topology = dir + "/" + p.key + ".topo.xml";
  p.state = dir + "/" + p.key + ".state";
  p.lane = dir + "/" + p.key + ".lane";
  return p;
}

pid_t g_child = 0;

void reap_child() {  // at exit; kill() itself is the stub above
  ::syscall(SYS_kill, g_child, SIGKILL);
  ::waitpid(g_child, nullptr, 0);
}

// A child that leads its own process group and waits; SIGKILLed and reaped
// when we exit (and killed by the kernel when we die).
pid_t group_leader_child() {
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  FUZZ_CHECK(pid >= 0);
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(0);
    for (;;) ::pause();
  }
  ::setpgid(pid, pid);  // either of us may get there first
  g_child = pid;
  std::atexit(reap_child);
  return pid;
}

// CHILDPGID -> the child's pid, padded with spaces to the same length (JSON
// allows them), so that the frame's length prefix stays right.
std::string with_child(std::string_view part, pid_t child) {
  constexpr std::string_view kWord = "CHILDPGID";
  std::string pid = std::to_string(child);
  pid.insert(0, kWord.size() - std::min(pid.size(), kWord.size()), ' ');
  std::string out(part);
  for (std::size_t at = 0; (at = out.find(kWord, at)) != std::string::npos; at += pid.size()) {
    out.replace(at, kWord.size(), pid);
  }
  return out;
}

void write_file(const std::string& path, std::string_view text) {
  jiffy::Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  FUZZ_CHECK(fd.valid());
  jiffy::write_all(fd.get(), text, "write the state file");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Dir dir;  // removed at exit
  static const pid_t child = group_leader_child();
  const jiffy::DaemonPaths p = paths(dir.path);

  std::vector<std::string_view> parts;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  for (;;) {
    std::size_t at = in.find(kSeparator);
    parts.push_back(in.substr(0, at));
    if (at == std::string_view::npos) break;
    in.remove_prefix(at + kSeparator.size());
  }
  ::unlink(p.state.c_str());
  ::unlink(p.socket.c_str());
  std::size_t first = 0;
  if (!parts[0].empty() && parts[0][0] == '{') {
    write_file(p.state, parts[0]);
    first = 1;
  }

  jiffy::Fd listener = jiffy::unix_listen(p.socket, 4096);
  std::vector<jiffy::Fd> clients;
  for (std::size_t i = first; i < parts.size() && i < first + kMaxConnections; ++i) {
    if (parts[i].empty() && i + 1 == parts.size() && i > first) break;  // a trailing separator
    jiffy::Fd c = jiffy::unix_connect(p.socket);
    FUZZ_CHECK(c.valid());
    jiffy::set_nonblocking(c.get(), true);
    try {
      jiffy::write_some(c.get(), with_child(parts[i], child), "write to the daemon");  // what the buffer takes
    } catch (const jiffy::Error&) {
    }
    // The server reads the bytes, then the hang-up; its replies (grants)
    // still find the socket open, so a launcher's later messages count.
    ::shutdown(c.get(), SHUT_WR);
    clients.push_back(std::move(c));
  }

  jiffy::ServerConfig config;
  config.resources = jiffy::fuzz::machine();
  config.idle_timeout_s = 1e-9;  // return once every client has gone
  config.paths = p;
  config.run_detached = [](const std::vector<std::string>&) { return true; };  // no scancel
  static const bool verbose = ::getenv("JIFFY_FUZZ_VERBOSE") != nullptr;  // the daemon's log
  config.log_to_stderr = verbose;
  sigset_t old;
  ::sigprocmask(SIG_SETMASK, nullptr, &old);
  {
    jiffy::Server server(std::move(config), std::move(listener));  // blocks SIGTERM, SIGINT, SIGHUP
    server.run();
  }
  ::sigprocmask(SIG_SETMASK, &old, nullptr);
  clients.clear();
  return 0;
}
