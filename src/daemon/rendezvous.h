// Rendezvous: what makes exactly one daemon per user, resource set and
// instance, whatever the environment and whatever happens to the files.
//
// Three checks, each closing a hole the others leave:
//  1. an flock on <key>.lock in the private runtime directory: the one every
//     daemon of a directory meets; nobody else can touch it, but its owner
//     can remove the directory;
//  2. a listening socket bound to the abstract name DaemonPaths::identity
//     (uid, key, instance; no path): it survives the directory's removal,
//     but another user may bind the name first (not secret), so a holder
//     counts only if SO_PEERCRED says it is ours;
//  3. /proc: a live process of our uid running as a daemon for the same
//     identity (its argv[0] says so, daemon_argv0()). Processes are neither
//     files anyone can remove nor names another user can take, so this
//     holds when 1 and 2 are both defeated (a squatted name and a removed
//     directory). It is not atomic, which 1 and 2 are: a daemon defers to
//     any other it sees, and at worst both defer and the launchers, which
//     retry, start one anew.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "util/fd.h"
#include "util/runtime_dir.h"

namespace jiffy {

struct LifetimeLock {
  Fd file;  // the flock on <key>.lock
  Fd name;  // the abstract name, listening (Server accepts and closes probes); invalid when squatted
};

// argv[0] of a daemon for paths: its identity in /proc/<pid>/cmdline.
std::string daemon_argv0(const DaemonPaths& paths);

// Takes the lifetime lock for paths; nullopt when a daemon of ours holds it
// (or one of ours runs for the same identity: see 3 above). warn receives
// one-line warnings. Throws Error when the lock cannot be tried at all.
std::optional<LifetimeLock> take_lifetime_lock(const DaemonPaths& paths,
                                               void (*warn)(const std::string&));

// After the runtime directory was removed under a live daemon: takes the
// flock of the re-made <key>.lock into file (same descriptor number).
// false when it cannot.
bool retake_lock_file(const DaemonPaths& paths, Fd& file);

// Live processes of our uid other than us that run as a daemon for paths.
std::vector<pid_t> other_daemons(const DaemonPaths& paths);

}  // namespace jiffy
