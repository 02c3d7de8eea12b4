#include "daemon/rendezvous.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "util/error.h"
#include "util/sys.h"

namespace jiffy {

namespace {

sockaddr_un name_address(const DaemonPaths& paths, socklen_t* len) {
  const std::string& name = paths.identity;  // well under sun_path's 107 bytes
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, name.data(), name.size());  // sun_path[0] = 0: abstract
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  return addr;
}

// Who listens on the abstract name: a uid, or -1 when nobody we can tell
// (not listening, or a backlog that stays full: another user may fill it,
// and our daemon accepts its probes at once, so a full one is not ours to
// trust). A full backlog is waited on a little (a blocking connect with a
// send timeout), in case it is ours and merely busy.
long holder_uid(const sockaddr_un& addr, socklen_t len) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    Fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!probe) return -1;
    timeval tv{0, 100 * 1000};
    ::setsockopt(probe.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), len) == 0) {
      try {
        return static_cast<long>(peer_uid(probe.get()));
      } catch (const Error&) {
        return -1;
      }
    }
    if (errno != EAGAIN && errno != EINTR && errno != EINPROGRESS) return -1;
  }
  return -1;
}

bool read_small(const std::string& path, char* buf, std::size_t size, std::size_t* got) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return false;
  ssize_t n = ::read(fd.get(), buf, size);
  if (n < 0) return false;
  *got = static_cast<std::size_t>(n);
  return true;
}

}  // namespace

std::string daemon_argv0(const DaemonPaths& paths) { return "jiffyd:" + paths.identity; }

std::vector<pid_t> other_daemons(const DaemonPaths& paths) {
  std::vector<pid_t> found;
  const std::string want = daemon_argv0(paths);
  DIR* proc = ::opendir("/proc");
  if (!proc) return found;
  const uid_t me = ::geteuid();
  const pid_t self = ::getpid();
  while (dirent* e = ::readdir(proc)) {
    char* end;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0 || pid == self) continue;
    std::string dir = std::string("/proc/") + e->d_name;
    struct stat st;
    if (::stat(dir.c_str(), &st) != 0 || st.st_uid != me) continue;  // only ours can be trusted
    char buf[256];
    std::size_t n = 0;
    if (!read_small(dir + "/cmdline", buf, sizeof buf, &n) || n < want.size() + 1 ||
        std::memcmp(buf, want.c_str(), want.size() + 1) != 0) {
      continue;
    }
    char stat_text[512];
    if (!read_small(dir + "/stat", stat_text, sizeof stat_text - 1, &n)) continue;
    stat_text[n] = '\0';
    const char* close = std::strrchr(stat_text, ')');
    if (!close || close[1] != ' ' || close[2] == 'Z' || close[2] == 'X') continue;  // a zombie serves nobody
    found.push_back(static_cast<pid_t>(pid));
  }
  ::closedir(proc);
  return found;
}

std::optional<LifetimeLock> take_lifetime_lock(const DaemonPaths& paths,
                                               void (*warn)(const std::string&)) {
  LifetimeLock lock;
  lock.file = Fd(::open(paths.lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock.file) throw_errno("open " + paths.shown(paths.lock));
  if (::flock(lock.file.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return std::nullopt;
    throw_errno("flock " + paths.shown(paths.lock));
  }
  socklen_t len;
  sockaddr_un addr = name_address(paths, &len);
  lock.name = Fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!lock.name) throw_errno("socket");
  if (::bind(lock.name.get(), reinterpret_cast<sockaddr*>(&addr), len) == 0) {
    if (::listen(lock.name.get(), 64) != 0) throw_errno("listen on the daemon lock");
  } else {
    if (errno != EADDRINUSE) throw_errno("bind the daemon lock");
    long uid = holder_uid(addr, len);
    if (uid == static_cast<long>(::geteuid())) return std::nullopt;
    warn("the daemon lock name @" + paths.identity + " is held by " +
         (uid < 0 ? std::string("a process we cannot identify") : "uid " + std::to_string(uid)) +
         "; relying on " + paths.shown(paths.lock) + " and the process table");
    lock.name.reset();
  }
  if (std::vector<pid_t> others = other_daemons(paths); !others.empty()) {
    warn("another daemon of ours (pid " + std::to_string(others[0]) +
         ") serves this resource set; leaving it the work");
    return std::nullopt;
  }
  int fd = lock.file.get();
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) == 0) (void)!::pwrite(fd, pid.data(), pid.size(), 0);
  return lock;
}

bool retake_lock_file(const DaemonPaths& paths, Fd& file) {
  Fd fresh(::open(paths.lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fresh || ::flock(fresh.get(), LOCK_EX | LOCK_NB) != 0) return false;
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fresh.get(), 0) == 0) (void)!::pwrite(fresh.get(), pid.data(), pid.size(), 0);
  if (!file) {
    file = std::move(fresh);
  } else if (::dup3(fresh.get(), file.get(), O_CLOEXEC) < 0) {
    return false;
  }
  return true;
}

}  // namespace jiffy
