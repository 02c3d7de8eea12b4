// The private per-user runtime directory and the names of one resource set's
// daemon files inside it.
//
// Where: $JIFFY_RUNTIME_DIR if set (a separate jiffy instance: its daemons
// do not arbitrate against the default ones; for tests and special setups),
// else /tmp/jiffy-<uid>, whatever else the environment says. The default
// deliberately ignores $XDG_RUNTIME_DIR: a desktop session has it, and cron,
// su, ssh or a CI shell often do not, and two directories would mean two
// daemons granting the same cores.
//
// An existing directory is trusted only if it is a real directory (not a
// symlink), owned by this uid and closed to group and others. If
// /tmp/jiffy-<uid> belongs to someone else (another user planted it: /tmp is
// sticky, so we could not remove it), the default moves to
// /tmp/jiffy-<uid>-<suffix>, with a random suffix kept in the user's home
// (~/.cache/jiffy/runtime-suffix): a name nobody else can know beforehand.
// One of ours that is unsafe (mode 0755, say) is refused with a clear error:
// its owner can fix it.
//
// The directory is used through a descriptor held for the life of the
// process (O_PATH), and the paths handed out go through it
// (/proc/self/fd/N/...): once checked, a directory cannot be swapped under
// us, even below a parent other users may write.
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
  std::string dir;     // the runtime directory, as users see it
  std::string key;     // resource-set key (16 hex digits)
  // The daemon's rendezvous name: what makes one daemon per user, resource
  // set and instance (daemon/main.cc), independent of any file or directory.
  std::string identity;
  // The files, reached through the held directory descriptor:
  std::string socket;  // <key>.sock
  std::string lock;    // <key>.lock: held by the live daemon for its lifetime
  std::string start;   // <key>.start: serialises launchers starting a daemon
  std::string log;     // <key>.log: a detached daemon's stderr
  std::string state;   // <key>.state: the daemon's ledger (daemon/state_file.h)
  std::string lane;    // <key>.lane: slots lent to launchers (proto/lane.h)
  std::string history; // <key>.history: the launch journal (proto/history.h)
  // The set's shared PMIx server (launch/pmix_shared.h): its socket, its
  // lifetime lock, the lock that serialises starting it, its stderr.
  std::string pmix_socket;  // <key>.pmix.sock
  std::string pmix_lock;    // <key>.pmix.lock
  std::string pmix_start;   // <key>.pmix.start
  std::string pmix_log;     // <key>.pmix.log
  // <dir>/<key>.topo.xml: hwloc XML of the set, written by the daemon. A
  // plain path: ranks read it (HWLOC_XMLFILE), and a rank's descriptors are
  // not ours.
  std::string topology;
  std::vector<int> cpus;  // the allowed CPUs the key was made from (a daemon started later gets them)

  // path with the descriptor prefix replaced by dir, for messages.
  std::string shown(const std::string& path) const;
};

// Resolves and, if needed, creates the runtime directory, and (re)opens the
// process's descriptor of it. Returns the directory as users see it.
// Throws Error when it cannot be created or is unsafe.
std::string runtime_dir();

// Describes the current process's resource set (allowed CPUs, GPU
// visibility); equal descriptions mean the same daemon.
std::string resource_set_description();

// The paths for this process's resource set. Creates the runtime directory.
DaemonPaths daemon_paths();
// The same for the set of these allowed CPUs (and this process's GPU variables).
DaemonPaths daemon_paths(const std::vector<int>& cpus);

}  // namespace jiffy
