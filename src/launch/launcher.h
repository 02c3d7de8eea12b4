// The launch command from start to exit code: check the programs, ask the
// daemon for resources, wait for the grant (a status line on a terminal,
// Ctrl-C cancels), run the job, report it finished.
#pragma once

#include <string>
#include <vector>

#include "launch/handoff.h"
#include "launch/options.h"

namespace jiffy {

// Returns the process exit code. Throws Error for failures before the job
// starts (daemon unreachable and so on). argv is the original command line,
// for re-executing as jiffy-pmix when the job needs PMIx. handoff: what the
// front passed on (launch/handoff.h), or null.
int run_launch(const LaunchOptions& opt, const std::vector<std::string>& argv,
               const Handoff* handoff = nullptr);

}  // namespace jiffy
