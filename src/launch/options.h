// LaunchOptions: everything one `jiffy -n N prog args` invocation asks for,
// after the command line (either MPI dialect) has been parsed.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "sched/layout.h"

namespace jiffy {

// An environment change: set name to value, or (value empty optional) copy
// name's value from the caller's environment (`-x NAME`, `-genvlist`).
struct EnvSetting {
  std::string name;
  std::optional<std::string> value;
  friend bool operator==(const EnvSetting&, const EnvSetting&) = default;
};

enum class EnvBase {
  All,   // the caller's whole environment (default, -genvall)
  None,  // nothing from the caller (-genvnone)
};

// One ':'-separated group of an MPMD command line.
struct AppSpec {
  int ntasks = 1;
  std::vector<std::string> argv;  // argv[0] as typed; resolved later against PATH
  std::vector<EnvSetting> env;    // -env / per-group -x, applied after the global ones
  std::optional<std::string> wdir;  // per-group -wdir, overrides the global one
  // Per-group -envall / -envnone / -envlist (which implies None); overrides
  // LaunchOptions::env_base for this group's ranks. Unset: use the global one.
  std::optional<EnvBase> env_base;
};

enum class Label {
  None,
  Rank,     // -l / -prepend-rank: "[r] line"
  Tag,      // --tag-output: "[1,r]<stdout>:line", byte for byte as mpirun
  Pattern,  // -prepend-pattern P: P expanded per rank (%r, %g, %h, %p, %%)
};

enum class MpiMode { Auto, Pmi1, Pmix, None };

// Where the ranks run: on this machine under jiffy's daemon, or handed to
// Slurm as a job step (launch/slurm.h, docs/slurm.md).
enum class Backend { Local, Slurm };

struct LaunchOptions {
  std::vector<AppSpec> apps;  // at least one
  int cores_per_task = 1;     // -c, --cpus-per-task, --cpus-per-proc
  int gpus_per_task = 0;      // -g, --gpus-per-task
  int gpus_per_job = 0;       // -G, --gpus
  Bind bind = Bind::Core;     // -bind-to, --bind-to
  EnvBase env_base = EnvBase::All;
  std::vector<EnvSetting> genv;  // -genv K V, -x K[=V], -genvlist a,b (in order given)
  std::optional<std::string> wdir;  // -wdir, --wdir, -wd
  Label label = Label::None;
  std::string prepend_pattern;  // -prepend-pattern (Label::Pattern)
  bool merge_stderr = false;    // --merge-stderr-to-stdout: ranks' stderr goes where their stdout goes
  bool quiet = false;           // -q, --quiet: no warnings of jiffy's own
  std::string outfile_pattern;  // -outfile-pattern (%r rank, %g group, %% percent)
  std::string errfile_pattern;  // -errfile-pattern
  std::string output_dir;       // --output-filename DIR: DIR/1/rank.R/{stdout,stderr}
  double timeout_s = 0;         // -timeout, --timeout, MPIEXEC_TIMEOUT; 0 = none
  bool oversubscribe_error = false;  // --no-oversubscribe: wider than the set is an error
  MpiMode mpi = MpiMode::Auto;  // --mpi=pmi1|pmix|none|auto
  // MPI ranks load the daemon's hwloc XML (the default; --no-topology-cache,
  // JIFFY_TOPOLOGY_CACHE=0 turn it off).
  bool topology_cache = true;
  // Open MPI ranks of a job without GPUs use shared memory only (the
  // default; --no-single-node-ompi, JIFFY_SINGLE_NODE_OMPI=0 turn it off).
  bool single_node_ompi = true;
  // MPICH ranks of a job without GPUs get UCX_TLS=self,sm (the default;
  // --no-ucx-shm, JIFFY_UCX_SHM=0 turn it off).
  bool ucx_shm = true;
  bool verbose = false;         // -v, --verbose: say what was granted
  // -hosts/-host/-H and -f/-hostfile/-machinefile: jiffy runs on this
  // machine only, so every host named must be this one (the launcher checks:
  // parsing reads no files).
  std::vector<std::string> hosts;
  std::string hostfile;
  // --backend, JIFFY_BACKEND, else Slurm inside an allocation of several
  // nodes (cli/parse.cc, resolve_backend).
  Backend backend = Backend::Local;
  // Slurm only: -N/-npernode/-ppn (processes per node) and whether -n was
  // given (without it, srun runs that many on every node). On one node -N is
  // folded into -n by the parser.
  int ntasks_per_node = 0;
  bool ntasks_given = false;
  // Options given that mean something on this machine only and have no srun
  // translation (-map-by, -rank-by), as spelled: the slurm backend refuses
  // them by name rather than drop them.
  std::vector<std::string> local_only;
  // The exact GPUs to run on, by the daemon's names, when CTest chose them
  // (cli/ctest.h); the grant lists them in this order. Empty: the daemon picks.
  std::vector<std::string> gpu_names;

  int total_tasks() const {
    int n = 0;
    for (const AppSpec& a : apps) n += a.ntasks;
    return n;
  }
};

}  // namespace jiffy
