#include "util/runtime_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <climits>
#include <cstdlib>

#include "util/error.h"
#include "util/sys.h"

namespace jiffy {

namespace {

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

void verify_private_dir(const std::string& dir) {
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) throw_errno("runtime directory " + dir);
  auto refuse = [&](const std::string& why) {
    throw Error("runtime directory " + dir + " is unsafe (" + why +
                "); remove it or set JIFFY_RUNTIME_DIR");
  };
  if (S_ISLNK(st.st_mode)) refuse("a symbolic link");
  if (!S_ISDIR(st.st_mode)) refuse("not a directory");
  if (st.st_uid != ::geteuid()) refuse("owned by uid " + std::to_string(st.st_uid));
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
    refuse(std::string("mode ") + mode + ", expected 0700");
  }
}

// Returns the canonical path: however the directory is spelled ("d/",
// "/tmp/./d", a symlinked parent), one directory means one daemon.
std::string ensure_private_dir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) throw_errno("mkdir " + dir);
  verify_private_dir(dir);
  char real[PATH_MAX];
  if (!::realpath(dir.c_str(), real)) throw_errno("realpath " + dir);
  return real;
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
  if (std::string d = env_or_empty("JIFFY_RUNTIME_DIR"); !d.empty()) return ensure_private_dir(d);
  if (std::string x = env_or_empty("XDG_RUNTIME_DIR"); !x.empty()) {
    struct stat st;
    if (::stat(x.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == ::geteuid()) {
      return ensure_private_dir(x + "/jiffy");
    }
  }
  return ensure_private_dir("/tmp/jiffy-" + std::to_string(::geteuid()));
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
  std::string base = p.dir + "/" + p.key;
  p.socket = base + ".sock";
  p.lock = base + ".lock";
  p.start = base + ".start";
  p.log = base + ".log";
  p.topology = base + ".topo.xml";
  p.state = base + ".state";
  p.lane = base + ".lane";
  return p;
}

}  // namespace jiffy
