#include "util/runtime_dir.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "util/error.h"
#include "util/sys.h"

namespace jiffy {

namespace {

// The process's descriptor of its runtime directory: one number for the
// whole life of the process, so that paths made through it stay valid when
// the directory is re-made (the daemon heals a removed directory).
int g_dir_fd = -1;

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string mode_text(mode_t mode) {
  char m[8];
  std::snprintf(m, sizeof m, "%04o", mode & 07777);
  return m;
}

[[noreturn]] void refuse(const std::string& dir, const std::string& why) {
  throw Error("runtime directory " + dir + " is unsafe (" + why +
              "); remove it or set JIFFY_RUNTIME_DIR");
}

// Creates dir if missing and opens it (O_PATH: nothing can be read or
// written through it, only looked up). The checks are on what was opened,
// not on the name: a swap after them changes nothing for us.
Fd open_private_dir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) throw_errno("mkdir " + dir);
  Fd fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  struct stat st;
  if (!fd) {
    if (::lstat(dir.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) refuse(dir, "a symbolic link");
    if (errno == ENOTDIR || (::lstat(dir.c_str(), &st) == 0 && !S_ISDIR(st.st_mode))) {
      refuse(dir, "not a directory");
    }
    throw_errno("runtime directory " + dir);
  }
  if (::fstat(fd.get(), &st) != 0) throw_errno("fstat " + dir);
  if (!S_ISDIR(st.st_mode)) refuse(dir, "not a directory");
  if (st.st_uid != ::geteuid()) refuse(dir, "owned by uid " + std::to_string(st.st_uid));
  if ((st.st_mode & 077) != 0) refuse(dir, "mode " + mode_text(st.st_mode) + ", expected 0700");
  return fd;
}

// Whether something at path belongs to another user (as lstat sees it: a
// symbolic link counts as its owner's). Nothing there is not foreign.
bool foreign(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && st.st_uid != ::geteuid();
}

// Our home as the password file says (not $HOME, which su, sudo and cron
// set differently); $HOME only for users the file does not list.
std::string home_dir() {
  std::ifstream passwd("/etc/passwd");
  std::string line, uid = std::to_string(::geteuid());
  while (std::getline(passwd, line)) {
    // name:password:uid:gid:gecos:home:shell
    std::size_t f[6], at = 0;
    int n = 0;
    for (; n < 6 && (at = line.find(':', at)) != std::string::npos; ++n) f[n] = at++;
    if (n < 6 || line.compare(f[1] + 1, f[2] - f[1] - 1, uid) != 0 || f[2] - f[1] - 1 != uid.size()) {
      continue;
    }
    return line.substr(f[4] + 1, f[5] - f[4] - 1);
  }
  return env_or_empty("HOME");
}

bool is_suffix(const std::string& s) {
  return s.size() == 16 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// The random suffix of our alternative directory, made once and kept in
// ~/.cache/jiffy/runtime-suffix (published with link(), so that concurrent
// first launchers agree on one).
std::string alternative_suffix(const std::string& taken) {
  std::string home = home_dir();
  auto cannot = [&](const std::string& why) {
    throw Error(taken + " belongs to another user, and " + why +
                "; ask an administrator to remove it, or set JIFFY_RUNTIME_DIR to a private directory");
  };
  if (home.empty() || home[0] != '/') cannot("no home directory to keep an alternative name in");
  std::string dir = home + "/.cache";
  ::mkdir(dir.c_str(), 0700);
  dir += "/jiffy";
  ::mkdir(dir.c_str(), 0700);
  std::string path = dir + "/runtime-suffix";
  auto read_suffix = [&]() {
    std::ifstream in(path);
    std::string s;
    in >> s;
    return s;
  };
  if (std::string s = read_suffix(); is_suffix(s)) return s;
  unsigned char bytes[8];
  if (::getrandom(bytes, sizeof bytes, 0) != static_cast<ssize_t>(sizeof bytes)) throw_errno("getrandom");
  char hex[17];
  for (int i = 0; i < 8; ++i) std::snprintf(hex + 2 * i, 3, "%02x", bytes[i]);
  std::string tmp = path + "." + std::to_string(::getpid());
  Fd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!out) cannot("cannot write " + tmp + ": " + std::strerror(errno));
  std::string text = std::string(hex) + "\n";
  bool written = ::write(out.get(), text.data(), text.size()) == static_cast<ssize_t>(text.size());
  out.reset();
  int linked = written ? ::link(tmp.c_str(), path.c_str()) : -1;
  int err = errno;
  ::unlink(tmp.c_str());
  if (linked != 0 && err != EEXIST) cannot("cannot write " + path + ": " + std::strerror(err));
  std::string s = read_suffix();
  if (!is_suffix(s)) cannot(path + " is damaged");
  return s;
}

// Makes fd the process's directory descriptor (same number as before).
void hold(Fd fd) {
  if (g_dir_fd < 0) {
    g_dir_fd = fd.release();
  } else if (::dup3(fd.get(), g_dir_fd, O_CLOEXEC) < 0) {
    throw_errno("dup3");
  }
}

std::string held_path() {
  char real[PATH_MAX];
  std::string link = "/proc/self/fd/" + std::to_string(g_dir_fd);
  ssize_t n = ::readlink(link.c_str(), real, sizeof real - 1);
  if (n <= 0) throw_errno("readlink " + link);
  return std::string(real, static_cast<std::size_t>(n));
}

std::string hash_hex(const std::string& s) {
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a: tiny, stable, good enough for a name
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h));
  return out;
}

}  // namespace

std::string runtime_dir() {
  if (std::string d = env_or_empty("JIFFY_RUNTIME_DIR"); !d.empty()) {
    hold(open_private_dir(d));
    return held_path();  // canonical: however it is spelled, one directory means one daemon
  }
  std::string dir = "/tmp/jiffy-" + std::to_string(::geteuid());
  // Planted by someone else: we could not remove it (sticky /tmp).
  if (foreign(dir)) dir += "-" + alternative_suffix(dir);
  hold(open_private_dir(dir));
  return dir;
}

namespace {

std::string describe(const std::vector<int>& cpus) {
  std::string d = "cpus=" + format_cpu_list(cpus);
  for (const char* var : {"CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "JIFFY_GPUS"}) {
    const char* v = std::getenv(var);
    d += std::string(" ") + var + "=" + (v ? v : "<unset>");
  }
  return d;
}

}  // namespace

std::string resource_set_description() { return describe(allowed_cpus()); }

DaemonPaths daemon_paths() { return daemon_paths(allowed_cpus()); }

DaemonPaths daemon_paths(const std::vector<int>& cpus) {
  DaemonPaths p;
  p.dir = runtime_dir();
  p.cpus = cpus;
  p.key = hash_hex(describe(p.cpus));
  p.identity = "jiffy/" + std::to_string(::geteuid()) + "/" + p.key;
  if (!env_or_empty("JIFFY_RUNTIME_DIR").empty()) p.identity += "/" + hash_hex(p.dir);
  std::string base = "/proc/self/fd/" + std::to_string(g_dir_fd) + "/" + p.key;
  p.socket = base + ".sock";
  p.lock = base + ".lock";
  p.start = base + ".start";
  p.log = base + ".log";
  p.state = base + ".state";
  p.lane = base + ".lane";
  p.history = base + ".history";
  p.pmix_socket = base + ".pmix.sock";
  p.pmix_lock = base + ".pmix.lock";
  p.pmix_start = base + ".pmix.start";
  p.pmix_log = base + ".pmix.log";
  p.topology = p.dir + "/" + p.key + ".topo.xml";
  return p;
}

std::string DaemonPaths::shown(const std::string& path) const {
  std::string prefix = "/proc/self/fd/";
  if (path.compare(0, prefix.size(), prefix) != 0) return path;
  std::size_t slash = path.find('/', prefix.size());
  return slash == std::string::npos ? path : dir + path.substr(slash);
}

}  // namespace jiffy
