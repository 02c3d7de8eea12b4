#include "launch/pmix_shared.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>

#include "launch/client.h"
#include "pmi/pmix_wire.h"
#include "proto/message.h"
#include "util/error.h"
#include "util/sys.h"

namespace jiffy {

namespace {

constexpr double kStartTimeoutS = 15;

// Connects to the server's socket; invalid when nobody listens. The peer
// must be of our uid: the directory is private, but the server is trusted
// with our jobs, so it is checked (and it checks us).
Fd connect_checked(const DaemonPaths& paths) {
  Fd fd = unix_connect(paths.pmix_socket);
  if (fd && peer_uid(fd.get()) != ::geteuid()) {
    throw Error("the PMIx server socket " + paths.shown(paths.pmix_socket) + " is not served by us; refusing it");
  }
  return fd;
}

std::string sibling(const std::string& name) {
  std::string exe = daemon_executable();
  return exe.substr(0, exe.rfind('/') + 1) + name;
}

}  // namespace

Fd connect_shared_pmix(const DaemonPaths& paths, bool start_if_missing) {
  if (Fd fd = connect_checked(paths)) return fd;
  if (!start_if_missing) return Fd();
  const double deadline = now_s() + kStartTimeoutS;
  while (now_s() < deadline) {
    Fd start_lock = lock_exclusive(paths, paths.pmix_start, kStartTimeoutS);
    if (Fd fd = connect_checked(paths)) return fd;
    // argv[0] says whose it is in ps (as jiffyd's does).
    std::string verdict = start_detached(sibling("jiffy-pmix"), {"jiffy-pmix:" + paths.identity, "--jiffy-pmix-serve"},
                                         paths, paths.pmix_log, "the shared PMIx server");
    if (verdict.rfind("error: ", 0) == 0) throw Error("cannot start the shared PMIx server: " + verdict.substr(7));
    // "ok", or "running": one that is draining or just starting; again.
    if (Fd fd = connect_checked(paths)) return fd;
    start_lock.reset();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  throw Error("cannot reach the shared PMIx server at " + paths.shown(paths.pmix_socket));
}

bool stop_shared_pmix(const DaemonPaths& paths) {
  Fd fd = connect_checked(paths);
  if (!fd) return false;
  write_all(fd.get(), proto::encode({{"type", pmix_wire::type::kStop}}), "stop the PMIx server");
  // Its "ok" (or its end) says it has taken the stop.
  pollfd p{fd.get(), POLLIN, 0};
  while (::poll(&p, 1, 10000) < 0 && errno == EINTR) {
  }
  return true;
}

std::optional<proto::Json> shared_pmix_status(const DaemonPaths& paths) {
  try {
    Fd fd = connect_checked(paths);
    if (!fd) return std::nullopt;
    write_all(fd.get(), proto::encode({{"type", pmix_wire::type::kStatus}}), "ask the PMIx server");
    proto::FrameDecoder decoder;
    const double deadline = now_s() + 1;
    for (;;) {
      if (std::optional<proto::Json> m = decoder.next()) {
        if ((*m)["type"] != proto::type::kOk) return std::nullopt;
        m->erase("type");
        return m;
      }
      pollfd p{fd.get(), POLLIN, 0};
      const int left = static_cast<int>((deadline - now_s()) * 1000);
      if (left <= 0 || ::poll(&p, 1, left) <= 0) return std::nullopt;
      char buf[4096];
      ssize_t n = ::read(fd.get(), buf, sizeof buf);
      if (n <= 0) return std::nullopt;
      decoder.feed(std::string_view(buf, static_cast<std::size_t>(n)));
    }
  } catch (const Error&) {
    return std::nullopt;  // none of ours, or gone: nothing to show
  }
}

}  // namespace jiffy
