// The slurm backend's running half: one launch as one Slurm job step, run by
// srun, with mpiexec's behaviour kept around it (docs/slurm.md).
//
// - srun is our child, in its own process group, so that the launcher alone
//   receives the user's signals and forwards them: Ctrl-C (srun
//   --disable-status passes it to the ranks), a second Ctrl-C cancels the
//   step, SIGTERM and the rest reach the ranks through srun. On a terminal
//   srun stays in our group instead (it must read the terminal), and the
//   terminal's own signals reach it directly.
// - The step has a unique name (srun -J jiffy-<tag>), by which squeue finds
//   its id and nodes, off the launch's path (a --prolog would tell the id
//   at once, but costs srun 8-20 ms of every launch). So a timeout or a
//   second Ctrl-C cancels exactly that step (scancel), and the daemon shows
//   it and cancels it if the launcher dies (SIGKILL: srun dies with it
//   through its parent-death signal, and the daemon, seeing the hang-up,
//   cancels the step by id, or by name when it was never told the id).
// - The exit code is srun's (the ranks' worst), 128+signal when a signal
//   ended the launcher's wait, 255 after a timeout.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "launch/options.h"

namespace jiffy {

class LaunchHistory;

// Runs the step; returns jiffy's exit code. programs: per ':' group, as
// resolved here. Throws Error before the step starts (no srun, an option
// without translation).
int run_slurm_step(const LaunchOptions& opt, const std::vector<std::string>& programs,
                   LaunchHistory& history);

}  // namespace jiffy
