// The slurm backend's pure half: when a launch goes to Slurm, and the srun
// command line it becomes (docs/slurm.md).
//
// jiffy does not schedule across nodes: inside an allocation of several
// nodes, Slurm already arbitrates the allocation's cores and GPUs among job
// steps, so a launch becomes one step (`srun --exact`), and jiffy keeps what
// users rely on around it: the mpiexec command line, exit codes, the
// timeout, signals, status and history (launch/slurm_step.h runs it).
//
// Every option either has a translation or is refused with an error naming
// it: nothing is dropped silently. Single-node speed-ups (the topology
// cache, shared-memory transports) have no meaning there and are not
// applied.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "launch/mpi_detect.h"
#include "launch/options.h"

namespace jiffy {

// The automatic choice: inside an allocation (SLURM_JOB_ID) of more than one
// node (SLURM_JOB_NUM_NODES, else SLURM_NNODES) and not inside one of its
// task steps (SLURM_STEP_ID unset, or the batch script's or extern step).
bool in_slurm_allocation_of_nodes(std::string_view job_id, std::string_view job_num_nodes,
                                  std::string_view nnodes, std::string_view step_id);

// What the srun line needs beyond the options.
struct SrunInputs {
  std::string srun = "srun";          // the resolved srun
  std::vector<std::string> programs;  // per ':' group: argv[0] resolved here
  std::vector<MpiKind> kinds;         // per group: what the program links
  std::string step_name;              // -J: finds the step (squeue --name)
  std::string multi_prog_path;        // where the launcher writes SrunCommand::multi_prog
};

struct SrunCommand {
  std::vector<std::string> argv;  // srun, its options, the program and its arguments
  std::string multi_prog;         // --multi-prog file's text (MPMD); empty otherwise
  std::vector<EnvSetting> env;    // srun's own environment: set (or copied) before exec
  bool stderr_to_stdout = false;  // --merge-stderr-to-stdout without files: srun's fd 2 = 1
  std::string mpi;                // the plugin: pmix, pmi2 or none
};

// The step for opt. Throws Error naming the first option that has no srun
// translation (e.g. "--tag-output has no srun translation ...").
SrunCommand srun_command(const LaunchOptions& opt, const SrunInputs& in);

// A hydra output pattern (%r rank, %% percent) as srun's (%t task, %%),
// made to name a file: a relative one starts with "./" (srun reads "all...",
// "none", "-..." and a bare number as modes, not files). Throws Error for
// what srun cannot say (%g: the ':' group; '\\', its escape).
std::string srun_pattern(std::string_view option, std::string_view pattern);

// srun's report of a failed task, "srun: error: NODE: task(s) LIST: WHAT"
// where WHAT is "Exited with exit code N" or a signal's description
// (strsignal: "Segmentation fault", "Killed"): the task's code as mpiexec
// gives it (N, or 128+signal), or -1 when line is no such report. srun
// exits with the highest code of all tasks (the ranks it terminated after
// the first failure say 143), so the first report is what mpiexec's "exit
// code of the first failing rank" means.
int srun_failure_code(std::string_view line);

// MPICH's word of an MPI_Abort, which a rank prints on its stderr before it
// asks the PMI server to abort: "Abort(N) on node R (rank R in comm C):
// application called MPI_Abort(COMM, N) - process R", after srun's "K: "
// when -l labels the lines. Returns N as an exit status holds it (mod
// 256), or -1 when line is no such
// word. Slurm's pmi2 plugin answers the abort by killing the step with
// SIGKILL, so this line is all that is left of the code mpiexec exits with.
int mpich_abort_code(std::string_view line);

// One word of a --multi-prog line, quoted ('...') when it must be (spaces,
// '"', '#', '\\', which slurmstepd would read as an escape). Throws Error
// for what its reader cannot carry: a single quote, a newline, '%' (which it
// expands: %t, %o).
std::string multi_prog_word(std::string_view word);

}  // namespace jiffy
