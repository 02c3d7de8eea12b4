// Small syscall wrappers shared by the launcher and the daemon. Each retries
// EINTR and converts errno into jiffy::Error exactly here.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "util/fd.h"

namespace jiffy {

// Writes all of data to a blocking fd. Throws Error(what: strerror).
void write_all(int fd, std::string_view data, const char* what);
// Writes what a non-blocking fd takes now; returns the bytes written (0 on
// EAGAIN). Throws Error on any other failure (EPIPE included: callers ignore
// SIGPIPE).
std::size_t write_some(int fd, std::string_view data, const char* what);
// Reads up to n bytes; returns "" at EOF, nullopt-like empty with *again=true on EAGAIN.
std::string read_some(int fd, std::size_t n, bool* again, const char* what);

// The whole file, or "" when it cannot be read (callers fall back: an
// optional cache such as the topology XML).
std::string read_file_or_empty(const std::string& path);

void set_nonblocking(int fd, bool on);
void set_cloexec(int fd, bool on);

// Monotonic clock in seconds.
double now_s();
// CLOCK_BOOTTIME in seconds: comparable with process start times.
double boot_s();
// CLOCK_REALTIME in nanoseconds since the epoch: the history's clock.
std::int64_t realtime_ns();

// The value of environment variable name, removed from the environment (no
// child inherits it); nullopt when it is not set.
std::optional<std::string> take_env(const char* name);

// The CPUs this process may run on (sched_getaffinity), ascending.
std::vector<int> allowed_cpus();
// "0-3,8,10-11"
std::string format_cpu_list(const std::vector<int>& cpus);

// Unix stream socket helpers.
Fd unix_listen(const std::string& path, int backlog);
// Connects; returns an invalid Fd when nobody listens (ENOENT, ECONNREFUSED);
// throws Error on other failures.
Fd unix_connect(const std::string& path);
// Removes a directory tree (no symlinks followed); errors are ignored.
void remove_tree(const std::string& dir);

// The credentials of the peer of a connected Unix socket (SO_PEERCRED).
struct PeerCred {
  pid_t pid = 0;
  uid_t uid = 0;
};
PeerCred peer_cred(int fd);
inline uid_t peer_uid(int fd) { return peer_cred(fd).uid; }



}  // namespace jiffy
