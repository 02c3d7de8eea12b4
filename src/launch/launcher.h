// The launch command from start to exit code: check the programs, ask the
// daemon for resources, wait for the grant (a status line on a terminal,
// Ctrl-C cancels), run the job, report it finished.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "launch/handoff.h"
#include "launch/options.h"
#include "util/fd.h"

namespace jiffy {

// Returns the process exit code. Throws Error for failures before the job
// starts (daemon unreachable and so on). argv is the original command line,
// for re-executing as jiffy-pmix when the job needs PMIx. handoff: what the
// front passed on (launch/handoff.h), or null. submit_ns: when the launcher
// started (CLOCK_REALTIME ns, launch/history_journal.h). Appends the
// launch's one history record, whichever way it ends.
// Blocks the signals a launcher's loop handles (SIGCHLD, SIGINT, SIGTERM,
// SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2; SIGPIPE ignored) and returns a
// signalfd for them.
Fd block_signals();

// What `jiffy status` shows for a launch: its command line, cut short.
std::string command_summary(const LaunchOptions& opt);

int run_launch(const LaunchOptions& opt, const std::vector<std::string>& argv,
               const Handoff* handoff, std::int64_t submit_ns);

}  // namespace jiffy
