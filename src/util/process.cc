#include "util/process.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>

#include "util/fd.h"
#include "util/sys.h"

namespace jiffy {

namespace {

bool is_zombie(char state) { return state == 'Z' || state == 'X'; }

// Calls f(pid) for every process in /proc.
void for_each_pid(const std::function<void(pid_t)>& f) {
  DIR* d = ::opendir("/proc");
  if (!d) return;
  while (dirent* e = ::readdir(d)) {
    char* end;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end == '\0' && pid > 0) f(static_cast<pid_t>(pid));
  }
  ::closedir(d);
}

bool environ_has(pid_t pid, const std::string& entry) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/environ", static_cast<int>(pid));
  Fd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd) return false;
  std::string env;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd.get(), buf, sizeof buf)) > 0 && env.size() < (1u << 22)) {
    env.append(buf, static_cast<std::size_t>(n));
  }
  for (std::size_t at = 0; at < env.size();) {
    std::size_t nul = env.find('\0', at);
    if (nul == std::string::npos) nul = env.size();
    if (env.compare(at, nul - at, entry) == 0) return true;
    at = nul + 1;
  }
  return false;
}

}  // namespace

std::string new_job_tag() {
  unsigned char bytes[16] = {};
  if (::getrandom(bytes, sizeof bytes, 0) != static_cast<ssize_t>(sizeof bytes)) {
    // Unique enough without entropy: our pid and the time.
    std::snprintf(reinterpret_cast<char*>(bytes), sizeof bytes, "%08x%07x", ::getpid(),
                  static_cast<unsigned>(now_s() * 1e6));
  }
  static const char hex[] = "0123456789abcdef";
  std::string tag;
  for (unsigned char b : bytes) {
    tag += hex[b >> 4];
    tag += hex[b & 15];
  }
  return tag;
}

bool is_job_tag(std::string_view tag) {
  return tag.size() >= 16 && tag.size() <= 64 &&
         tag.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

std::optional<ProcStat> read_proc_stat(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  Fd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd) return std::nullopt;
  char buf[1024];
  ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  if (n <= 0) return std::nullopt;
  buf[n] = '\0';
  // The command name may hold spaces and parentheses: fields follow the last
  // ')'. Field 3 is the state, 4-6 ppid, pgrp, session, 9 the flags, 22 the
  // start time.
  // (Parsed by hand: the daemon reads this for every launch, and sscanf
  // was a tenth of its time.)
  const char* p = std::strrchr(buf, ')');
  if (!p) return std::nullopt;
  long long field[20];
  int k = 0;
  for (++p; k < 20; ++k) {
    while (*p == ' ') ++p;
    if (!*p) return std::nullopt;
    if (k == 0) {
      field[0] = *p++;
      continue;
    }
    char* end;
    field[k] = std::strtoll(p, &end, 10);
    if (end == p) return std::nullopt;
    p = end;
  }
  ProcStat st;
  st.state = static_cast<char>(field[0]);
  st.ppid = static_cast<pid_t>(field[1]);
  st.pgrp = static_cast<pid_t>(field[2]);
  st.session = static_cast<pid_t>(field[3]);
  st.flags = static_cast<unsigned long>(field[6]);
  st.start = static_cast<unsigned long long>(field[19]);
  return st;
}

unsigned long long process_start_time(pid_t pid) {
  auto st = read_proc_stat(pid);
  return st ? st->start : 0;
}

bool process_alive(pid_t pid, unsigned long long start) {
  auto st = read_proc_stat(pid);
  return st && st->start == start && !is_zombie(st->state);
}

std::optional<JobGroup> job_group_of_child(pid_t pgid, pid_t parent) {
  if (pgid <= 1 || parent <= 1) return std::nullopt;
  auto st = read_proc_stat(pgid);
  if (!st || st->ppid != parent || st->pgrp != pgid) return std::nullopt;
  return JobGroup{pgid, st->session, st->start, {}};
}

std::optional<JobGroup> job_group_with_tag(pid_t pgid, const std::string& tag) {
  if (pgid <= 1 || tag.size() < 16) return std::nullopt;
  auto st = read_proc_stat(pgid);
  if (!st || st->pgrp != pgid || is_zombie(st->state) || !environ_has(pgid, "JIFFY_JOB_TAG=" + tag)) {
    return std::nullopt;
  }
  return JobGroup{pgid, st->session, st->start, tag};
}

bool job_group_alive(const JobGroup& g) {
  if (g.pgid <= 1) {
    // Known by its tag only (the launcher died before naming its group).
    if (!is_job_tag(g.tag)) return false;
    const std::string entry = "JIFFY_JOB_TAG=" + g.tag;
    bool alive = false;
    for_each_pid([&](pid_t pid) {
      if (alive || pid == ::getpid()) return;
      auto st = read_proc_stat(pid);
      alive = st && !is_zombie(st->state) && environ_has(pid, entry);
    });
    return alive;
  }
  if (::kill(-g.pgid, 0) != 0 && errno != EPERM) return false;  // the common case: gone
  bool alive = false;
  for_each_pid([&](pid_t pid) {
    if (alive) return;
    auto st = read_proc_stat(pid);
    alive = st && st->pgrp == g.pgid && st->session == g.sid && !is_zombie(st->state);
  });
  return alive;
}

void kill_job_group(const JobGroup& g) {
  // Only a leader still the one checked proves the group is the job's (a
  // start time of 0 was never checked). Without it (the leader exited, or
  // a record names a group it never saw), the members carrying the tag go
  // below; the rest cannot be told from a stranger's group of that number.
  if (g.pgid > 1 && g.leader_start != 0) {
    auto leader = read_proc_stat(g.pgid);
    if (leader && leader->start == g.leader_start && leader->pgrp == g.pgid &&
        leader->session == g.sid) {
      ::kill(-g.pgid, SIGKILL);
    }
  }
  if (is_job_tag(g.tag)) {
    const std::string entry = "JIFFY_JOB_TAG=" + g.tag;
    for_each_pid([&](pid_t pid) {
      if (pid != ::getpid() && environ_has(pid, entry)) ::kill(pid, SIGKILL);
    });
  }
}

bool spawn_detached(const std::vector<std::string>& argv) {
  if (argv.empty()) return false;
  // Everything the children use is made here: after fork, only syscalls.
  std::string path;
  if (argv[0].find('/') != std::string::npos) {
    path = argv[0];
  } else {
    const char* dirs = std::getenv("PATH");
    std::string list = dirs ? dirs : "/usr/bin:/bin";
    std::size_t start = 0;
    while (path.empty() && start <= list.size()) {
      std::size_t end = list.find(':', start);
      if (end == std::string::npos) end = list.size();
      std::string candidate = (end > start ? list.substr(start, end - start) : ".") + "/" + argv[0];
      if (::access(candidate.c_str(), X_OK) == 0) path = candidate;
      start = end + 1;
    }
  }
  if (path.empty()) return false;
  std::vector<std::string> args = argv;
  std::vector<char*> cargv;
  for (std::string& a : args) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  char** envp = ::environ;
  sigset_t none;
  sigemptyset(&none);
  pid_t child = ::fork();
  if (child < 0) return false;
  if (child == 0) {
    if (::fork() == 0) {
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      int null = ::open("/dev/null", O_RDWR);
      if (null >= 0) ::dup2(null, 0);
      ::execve(path.c_str(), cargv.data(), envp);
    }
    ::_exit(0);
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  return true;
}

}  // namespace jiffy
