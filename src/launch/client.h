// DaemonClient: the launcher's connection to the daemon of its resource set,
// starting that daemon when none answers.
//
// Starting is serialised by an flock on <key>.start: the first launcher to
// find no daemon takes the lock, checks again, spawns jiffyd detached
// (setsid, double fork, so it is nobody's child) and waits on a pipe for its
// "ok"; launchers queued on the lock then find the socket alive. The daemon's
// own lifetime lock makes a second daemon give up even if this dance is
// bypassed, so 32 launchers started at once yield exactly one daemon.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "proto/message.h"
#include "util/error.h"
#include "util/fd.h"
#include "util/runtime_dir.h"

namespace jiffy {

class DaemonClient {
 public:
  // Connects to the daemon for this process's resource set, starting one if
  // needed and allowed. Throws Error when none can be reached.
  static DaemonClient connect(bool start_if_missing);
  // The same for a resource set described earlier (a launcher that has
  // since pinned itself to its job's cores must still reach its daemon).
  static DaemonClient connect(const DaemonPaths& paths, bool start_if_missing);
  // Like connect(false) but returns nullopt when no daemon runs. A
  // launcher starting a daemon at that moment (it holds the start lock) is
  // waited for: a successor that is coming is not "no daemon".
  static std::optional<DaemonClient> connect_existing();
  static std::optional<DaemonClient> connect_existing(const DaemonPaths& paths);
  // One question, one answer, riding through a daemon restart: a daemon
  // that dies as it is asked (reset, closed, broken pipe) is asked no more,
  // and its successor (started if start_if_missing) is asked instead, for
  // up to kRestartWindowS. Returns nullopt when no daemon runs (and none
  // may be started); throws Error (errno ETIMEDOUT) when the daemon does
  // not answer within timeout_ms, or Error on any other failure.
  static std::optional<proto::Json> ask(const proto::Json& msg, int timeout_ms, bool start_if_missing);
  // A connection opened by the front (src/front) before it handed over.
  static DaemonClient adopt(Fd fd, DaemonPaths paths);

  void send(const proto::Json& msg);
  // Waits up to timeout_ms (-1 = forever) for the next message. Returns
  // nullopt on timeout; throws Error (errno ECONNRESET) when the daemon hangs up.
  std::optional<proto::Json> receive(int timeout_ms);
  // For the launcher's poll loop: read what is there and return the next
  // message if complete. Throws Error on hang-up.
  std::optional<proto::Json> read_available();
  int fd() const { return fd_.get(); }
  const DaemonPaths& paths() const { return paths_; }
  void close() { fd_.reset(); }

 private:
  DaemonClient(Fd fd, DaemonPaths paths);
  Fd fd_;
  DaemonPaths paths_;
  proto::FrameDecoder decoder_{proto::kMaxStatusFrame};
};

// How long a client waits for the daemon's answer: $JIFFY_DAEMON_TIMEOUT
// seconds, else 10. The daemon answers every request at once, so silence
// that long means it is hung (or stopped).
double daemon_answer_timeout_s();

// How long a client keeps trying through a daemon restart: a SIGKILLed
// daemon's socket still accepts until its last thread is gone, and its
// successor first waits for that, then starts (hwloc discovery): seconds on
// a loaded machine.
constexpr double kRestartWindowS = 30;

// Whether a failure on a daemon connection means the daemon is going or its
// successor is not there yet: the connection reset or closed by the peer
// (ECONNRESET), a send on a closed one (EPIPE). Such a request is asked
// again, of the next daemon; nothing about it is for the user to see.
bool daemon_restarting(const Error& e);

// Sleeps between tries through a restart: 5 ms, doubling to 100 ms.
class RestartBackoff {
 public:
  void pause();

 private:
  int ms_ = 5;
};

// Tells a successor daemon of cores held across its predecessor's death:
// msg (a `reattach`, docs/protocol.md, "Surviving a daemon crash") is sent on a new
// connection, the daemon started if none answers; three tries. Returns the
// connection, on which the daemon refuses with an error or says nothing;
// throws the last try's Error.
DaemonClient reattach_to_successor(const DaemonPaths& paths, const proto::Json& msg);

// A grant's (core, slot) pairs as a re-attach carries them.
proto::Json slot_pairs(const std::vector<std::pair<int, int>>& slots);

// The path of the jiffyd executable: $JIFFY_DAEMON, else next to this binary.
std::string daemon_executable();

// Starts `jiffyd daemon --detached-child extra_args...` in its own session
// and waits for its verdict: "ok", "running" (another daemon holds the set)
// or "error: <why>". Throws Error when it cannot be started at all.
std::string start_daemon(const DaemonPaths& paths, const std::vector<std::string>& extra_args);

// What start_daemon does, for any long-lived process of the set (`what`
// names it in messages): exe run with argv (argv[0] included), detached
// (its own session, adopted by init, stdin /dev/null, stdout and stderr
// appended to log, no other descriptor of ours, the set's CPUs), with a
// pipe on descriptor 3 on which it writes its verdict.
std::string start_detached(const std::string& exe, const std::vector<std::string>& argv, const DaemonPaths& paths,
                           const std::string& log, const std::string& what);

// Holds path's flock exclusively (a start lock), polling for up to
// timeout_s: a wedged holder never hangs us. Throws Error.
Fd lock_exclusive(const DaemonPaths& paths, const std::string& path, double timeout_s);

}  // namespace jiffy
