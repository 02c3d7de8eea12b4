// The slurm backend's running half: one launch as one Slurm job step, run by
// srun, with mpiexec's behaviour kept around it (docs/slurm.md).
//
// - srun is our child, in its own process group, so that the launcher alone
//   receives the user's signals and forwards them: Ctrl-C (srun
//   --disable-status passes it to the ranks), a second Ctrl-C cancels the
//   step, SIGTERM and the rest reach the ranks through srun. On a terminal
//   srun stays in our group instead (it must read the terminal), and the
//   terminal's own signals reach it directly.
// - The step reports its id through srun's --prolog (jiffy-launch run as the
//   prolog writes "JOBID.STEPID" on an inherited pipe), so a timeout or a
//   second Ctrl-C cancels exactly that step (scancel), and the daemon can
//   show it and cancel it if the launcher dies (SIGKILL: srun dies with
//   it through its parent-death signal, and the daemon, seeing the hang-up,
//   cancels the step it was told of).
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

// jiffy-launch started by srun as a step's --prolog: when JIFFY_SLURM_STEP_FD
// names our pipe, writes "SLURM_JOB_ID.SLURM_STEP_ID\n" there. Returns true
// when this process is such a prolog (main exits 0 at once).
bool run_as_slurm_prolog();

}  // namespace jiffy
