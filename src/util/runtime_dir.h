// The private per-user runtime directory and the names of one resource set's
// daemon files inside it.
//
// Where: $JIFFY_RUNTIME_DIR if set, else $XDG_RUNTIME_DIR/jiffy, else
// /tmp/jiffy-<uid>. The directory is created mode 0700 if missing; an
// existing one is trusted only if it is a real directory (not a symlink),
// owned by this uid and closed to group and others. Anything else is refused,
// since another user could otherwise plant a socket there and receive our
// jobs.
//
// One daemon serves one resource set. The set is identified by what a
// launcher can see cheaply (its allowed CPUs and the GPU visibility variables),
// hashed into a key that names the daemon's socket and lock files. A launcher
// inside a restricted cpuset therefore reaches a daemon for that set only.
#pragma once

#include <string>
#include <vector>

namespace jiffy {

struct DaemonPaths {
  std::string dir;     // the runtime directory
  std::string key;     // resource-set key (16 hex digits)
  std::string socket;  // <dir>/<key>.sock
  std::string lock;    // <dir>/<key>.lock: held by the live daemon for its lifetime
  std::string start;   // <dir>/<key>.start: serialises launchers starting a daemon
  std::string log;     // <dir>/<key>.log: a detached daemon's stderr
  std::string topology;  // <dir>/<key>.topo.xml: hwloc XML of the set, written by the daemon
  std::string state;     // <dir>/<key>.state: the daemon's ledger (daemon/state_file.h)
  std::string lane;      // <dir>/<key>.lane: slots lent to launchers (proto/lane.h)
  std::vector<int> cpus;  // the allowed CPUs the key was made from (a daemon started later gets them)
};

// Resolves and, if needed, creates the runtime directory. Throws Error when
// it cannot be created or is unsafe.
std::string runtime_dir();

// Describes the current process's resource set (allowed CPUs, GPU
// visibility); equal descriptions mean the same daemon.
std::string resource_set_description();

// The paths for this process's resource set. Creates the runtime directory.
DaemonPaths daemon_paths();
// The same for the set of these allowed CPUs (and this process's GPU variables).
DaemonPaths daemon_paths(const std::vector<int>& cpus);

}  // namespace jiffy
