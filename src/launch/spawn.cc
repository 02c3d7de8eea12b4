#include "launch/spawn.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "util/error.h"

namespace jiffy {

namespace {

constexpr std::size_t kChildStack = 64 * 1024;

struct ChildArgs {
  const RankSpawn* spec;
  pid_t parent;
  char* const* argv;
  int err;  // written by the child, read by the parent after clone returns
};

// Runs in the child on its own stack, sharing our memory until exec: only
// async-signal-safe calls, no allocation.
int child_main(void* p) {
  auto* a = static_cast<ChildArgs*>(p);
  const RankSpawn& spec = *a->spec;
  auto fail = [&](int err) {
    a->err = err;
    ::_exit(127);
  };
  ::setpgid(0, spec.pgid);
  // A rank must not outlive its launcher, even one killed by SIGKILL.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != a->parent) ::_exit(1);  // the launcher died before prctl took effect
  // Default dispositions for what a caller may have ignored (a script's
  // background job ignores SIGINT and SIGQUIT), as mpiexec gives its ranks.
  for (int s : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) ::signal(s, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (!spec.cpus.empty()) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int c : spec.cpus) CPU_SET(c, &set);
    if (::sched_setaffinity(0, sizeof set, &set) != 0) fail(errno);
  }
  if (spec.stdin_fd != 0 && ::dup2(spec.stdin_fd, 0) < 0) fail(errno);
  if (spec.stdout_fd != 1 && ::dup2(spec.stdout_fd, 1) < 0) fail(errno);
  if (spec.stderr_fd != 2 && ::dup2(spec.stderr_fd, 2) < 0) fail(errno);
  if (spec.inherit_fd >= 0 && ::fcntl(spec.inherit_fd, F_SETFD, 0) != 0) fail(errno);
  if (spec.wdir && ::chdir(spec.wdir->c_str()) != 0) fail(errno);
  ::execve(spec.path.c_str(), a->argv, spec.envp.data());
  fail(errno);
  return 127;
}

// Makes a relative path absolute against the launcher's cwd, since the rank
// execs after changing into its working directory.
std::string absolute(const std::string& path) {
  if (!path.empty() && path[0] == '/') return path;
  char cwd[4096];
  if (!::getcwd(cwd, sizeof cwd)) throw_errno("getcwd");
  return std::string(cwd) + "/" + path;
}

bool is_executable_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

}  // namespace

Spawned spawn_rank(const RankSpawn& spec) {
  std::vector<char*> argv;
  for (const std::string& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  // Untouched until the child runs, so it costs only the pages the child
  // touches. One launcher thread spawns at a time (CLONE_VFORK blocks it).
  alignas(64) static char stack[kChildStack];
  ChildArgs args{&spec, ::getpid(), argv.data(), 0};
  // CLONE_VFORK: we resume when the child has exec'd or exited.
  pid_t pid = ::clone(child_main, stack + kChildStack, CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
  if (pid < 0) throw_errno("clone");
  return Spawned{pid, args.err};
}

std::string resolve_program(const std::string& name, const std::string& path_var,
                            const std::optional<std::string>& wdir) {
  auto missing = [&](int err) -> std::string {
    throw Error(name + ": " + (err == ENOENT ? "command not found" : std::strerror(err)), err);
  };
  if (name.empty()) missing(ENOENT);
  if (name.find('/') != std::string::npos) {
    std::string path = (name[0] != '/' && wdir) ? *wdir + "/" + name : name;
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      throw Error(name + ": " + std::strerror(errno), errno);
    }
    if (!S_ISREG(st.st_mode) || ::access(path.c_str(), X_OK) != 0) {
      throw Error(name + ": " + (S_ISDIR(st.st_mode) ? "is a directory" : "permission denied"), EACCES);
    }
    return absolute(path);
  }
  std::size_t start = 0;
  bool found_unexecutable = false;
  while (start <= path_var.size()) {
    std::size_t end = path_var.find(':', start);
    if (end == std::string::npos) end = path_var.size();
    std::string dir = path_var.substr(start, end - start);
    if (dir.empty()) dir = ".";
    std::string candidate = dir + "/" + name;
    if (is_executable_file(candidate)) return absolute(candidate);
    if (::access(candidate.c_str(), F_OK) == 0) found_unexecutable = true;
    start = end + 1;
  }
  return missing(found_unexecutable ? EACCES : ENOENT);
}

}  // namespace jiffy
