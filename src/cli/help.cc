// The text of `jiffy --help`. Kept next to parse.cc: every option listed here
// is one that parse_command_line accepts, with the same meaning.
//
// PETSc's configure greps `mpiexec -help all` for "--oversubscribe", which is
// listed (accepted, no effect) so that the probe keeps working.

#include "cli/command.h"

namespace jiffy {

const char* help_text() {
  return R"(Usage: jiffy [options] program [args] [: [group options] program [args] ...]
       jiffy daemon [daemon options]
       jiffy status [--json]
       jiffy top [-d S] [-n N] [-b]
       jiffy stop
       jiffy resource-spec
       jiffy history [options]
       jiffy report [options] [-o FILE]...
       jiffy --help | --version

Runs an MPI program on this machine like mpiexec, with cores and GPUs granted
by a per-user resource manager (started on first use), so that concurrent
jobs do not compete for the same cores. MPICH (hydra) and Open MPI (mpirun)
spellings both work.

Options come before the program. Every word after the program, up to a lone
':', is passed to it untouched, even if it looks like an option. ':' starts
another MPMD group, with its own group options and program. Option names take
one dash or two (-np, --np); values follow as the next word or after '='
(--timeout=60). Use -- before a program whose name starts with '-'.

Subcommands (only as the first word):
  daemon                 run the resource manager (normally started for you)
  status [--json]        show the resources and the jobs holding them
  top [-d S] [-n N] [-b] watch them live: cores, GPUs, running and queued
                         jobs, the last finished ones (q or Ctrl-C quits)
  stop                   stop the resource manager
  resource-spec          this machine's GPUs as a CTest resource spec file
                         (ctest --resource-spec-file); a test CTest gives
                         GPUs (CTEST_RESOURCE_GROUP_*) runs on exactly those
  history                what ran: a table of past jobs, newest last (the
                         last 100 by default; --since T, --until T, --failed,
                         --label GLOB, --command GLOB, --cwd DIR, --slowest N,
                         --limit N, --json). T is a duration ago (90s, 10m,
                         2h, 3d) or a local time (2026-12-04T10:00)
  report                 a report of a window (--since/--until, or
                         --last-run, the default: the last burst of
                         launches): a summary, or -o run.html (timeline
                         page), -o run.json (Chrome trace), -o run.svg
  (jiffy history --help and jiffy report --help say more)

Placement (only before the first ':', except -n):
  -n, -np N              ranks in this group (default 1; hydra's default is
                         one per core, jiffy's is one)
  -c, --cpus-per-task N  cores per rank (also --cpus-per-proc, --cpus-per-rank;
                         default 1). Note: -c is not Open MPI's alias of -n
  -g, --gpus-per-task N  GPUs per rank (also --gpus-per-rank; default 0)
  -G, --gpus N           GPUs shared by the whole job (default 0)
  -bind-to B             none, core (default) or hwthread; hydra's core:1 and
                         hwthread:1 are accepted (use -c for more than one).
                         socket, numa, package, board, l1cache..l3cache bind
                         to the rank's own cores: jiffy never hands a job a
                         whole socket
  -map-by M              checked and ignored (ranks are placed compactly):
                         slot, core, hwthread, node, socket, numa, package,
                         board, l1cache..l3cache, ppr:N:level; the qualifier
                         :PE=N sets -c N, :oversubscribe and :nooversubscribe
                         act as the options below
  --oversubscribe        accepted; the default: a job wider than the machine
                         waits for all of it and runs alone, ranks sharing
                         cores (each rank still gets the -c cores it asked
                         for, all of them on a smaller machine)
  -N, -npernode N        processes per node: N processes on this machine
  --rank-by L            checked and ignored: ranks take their cores in
                         order, which every level names on one node
  --use-hwthread-cpus    bind each rank to a hardware thread (-bind-to
                         hwthread)
  --no-oversubscribe     refuse a job wider than the machine instead
                         (also --nooversubscribe)

Environment (the caller's whole environment is passed by default):
  -genv NAME VALUE       set NAME for every rank (also -genv NAME=VALUE)
  -x NAME=VALUE, -x NAME set NAME, or copy the caller's NAME (Open MPI)
  --mca KEY VALUE        set OMPI_MCA_KEY=VALUE (Open MPI MCA parameter)
  -genvlist A,B          pass only A and B from the caller's environment
  -genvnone              pass nothing from the caller's environment
  -genvall               pass the caller's whole environment
  -env NAME VALUE        like -genv, -genvlist, -genvnone and -genvall, but
  -envlist A,B           for this group only
  -envnone, -envall
  -wdir DIR              working directory (also -wd, --wdir)
  -x, --mca and -wdir apply to the whole job before the first ':' and to
  their group alone after it.

Output:
  -l, -prepend-rank      prefix each output line with "[rank] "
  --tag-output           prefix each line with "[1,rank]<stdout>:" (as mpirun)
  -prepend-pattern P     prefix each line with P (%r rank, %g group,
                         %h host name, %p proxy = 0, %% a percent sign)
  -outfile-pattern P     send each rank's stdout to file P (the same
                         patterns); ranks and streams naming one file share
                         it: emptied once per job, every line kept
  -errfile-pattern P     the same for stderr
  --output-filename DIR  write DIR/1/rank.R/stdout and DIR/1/rank.R/stderr
                         (mpirun's :nocopy and :nojobid are accepted)
  --merge-stderr-to-stdout
                         ranks' stderr goes where their stdout goes
  -q, --quiet            no warnings of jiffy's own but those about a
                         wrong result (a split MPI world)
  --timestamp-output     refused: pipe the output through ts(1)
  -v, --verbose          report the cores and GPUs granted (also
                         --report-bindings)

Failure handling:
  -timeout S             kill the job after S seconds (also --timeout;
                         decimals allowed; 0 = no limit)
  -print-all-exitcodes   accepted, no effect
  -disable-auto-cleanup  refused

MPI wire-up:
  --mpi auto|pmi1|pmix|none
                         which process-management interface ranks get
                         (default auto: PMI-1 always, PMIx for programs
                         linking Open MPI and for interpreters)
  --no-topology-cache    MPI ranks probe the machine themselves instead of
                         loading the daemon's hwloc XML (the default:
                         --topology-cache; also JIFFY_TOPOLOGY_CACHE=0)
  --no-ucx-shm           MPICH ranks get no UCX_TLS=self,sm (the default,
                         --ucx-shm, for jobs without GPUs: UCX opens
                         shared memory only; also JIFFY_UCX_SHM=0)
  --no-single-node-ompi  Open MPI ranks may use UCX (the default,
                         --single-node-ompi, for jobs without GPUs: pml
                         ob1, btl self,vader,tcp: shared memory, TCP on
                         loopback between spawned worlds; also
                         JIFFY_SINGLE_NODE_OMPI=0)

Hosts: jiffy runs jobs on this machine only. -hosts/-host/--host/-H LIST
  and -f/-machinefile/--hostfile FILE are accepted when every host they
  name is this machine (localhost, a loopback address or its host name,
  with or without ":slots"), and refused otherwise: use the site's
  scheduler (srun, flux run) for several machines, or the slurm backend
  (there they become --nodelist and --nodefile).

Clusters (docs/slurm.md):
  --backend B            local, slurm or auto (the default; also
                         JIFFY_BACKEND): auto is slurm inside a Slurm
                         allocation of several nodes (not inside one of its
                         steps), local otherwise. slurm runs the job as one
                         Slurm step (srun --exact); options without an srun
                         translation are refused by name; -v prints the
                         srun line

Compatibility (accepted, no effect on a single node; under Slurm -ppn N is
  --ntasks-per-node):
  -ppn N, -launcher X, -rmk X, -bootstrap X, -iface X, --display-map,
  --allow-run-as-root
  (-configfile is refused: write the groups on the command line.)

Daemon options:
  --cores N              pretend the machine has N cores (testing)
  --gpus N               declare N GPUs, named 0..N-1
  --gpu-names A,B,...    declare GPUs by name (not with --gpus)
  --slots-per-core N     ranks one core may hold at once (default 1)
  --hyperthreads         one slot per hardware thread
  --max-oversubscribe N  refuse jobs wider than N times the machine (default 8)
  --idle-timeout S       exit after S idle seconds (default 60; 0 = never)
  --history=on|off       keep the history database (default on; off also
                         with JIFFY_HISTORY=0 in the daemon's environment)
  --history-keep-jobs N  keep the newest N jobs (default 1000000;
                         or JIFFY_HISTORY_KEEP_JOBS)
  --history-keep-days D  keep jobs that ended in the last D days (default 90;
                         or JIFFY_HISTORY_KEEP_DAYS)
  --backfill=on|off      while a wide job waits for cores, start queued jobs
                         that earlier runs (the history) predict to end
                         before it could start (default on; off also with
                         JIFFY_BACKFILL=0; no history, no such backfill)
  --backfill-slack K     let such jobs end up to K times the wide job's
                         predicted wait after it could have started
                         (0 to 10, default 1; or JIFFY_BACKFILL_SLACK)
  --foreground           stay attached and log to stderr (default:
                         start detached, return once it serves)

Top options (q or Ctrl-C quits; any other key refreshes at once):
  -d, --delay S          seconds between refreshes (also --interval;
                         default 0.5, at least 0.1)
  -n, --iterations N     draw N frames, then exit (default: until q)
  -b, --batch            print plain frames one after another, each ending
                         with an empty line, instead of redrawing the
                         terminal (whose screen comes back on exit); also
                         what happens when stdout is not a terminal
                         (width $COLUMNS, else 80; as long as it takes)
  With many cores, each is a cell of a grid: "17A" is core 17 held by the
  job listed as A below it, "17." a free core.

Exit status:
  0                      every rank exited 0
  N                      the exit code of the first rank to fail
  128+S                  the first failing rank was killed by signal S
  255                    timeout; "APPLICATION TIMED OUT" is printed
  127                    the program was not found
  jiffy's own errors print "jiffy: <message>" and exit non-zero.

Environment variables:
  MPIEXEC_TIMEOUT        seconds, used when no -timeout is given
  JIFFY_RUNTIME_DIR      a separate jiffy instance in this directory (tests):
                         its daemon does not arbitrate against the default
                         one, which lives in /tmp/jiffy-<uid> whatever
                         the environment
  JIFFY_LANE=0           always ask the daemon for cores, instead of taking
                         cores it lends while nothing waits (the default)
  JIFFY_FAST=0           run every launch in jiffy-launch (no fast path)
  JIFFY_DAEMON_TIMEOUT   seconds to wait for the daemon's first answer (10);
                         a queued launch then waits for its cores unbounded
  JIFFY_BACKEND          local, slurm or auto, when no --backend is given
  CTEST_RESOURCE_GROUP_COUNT, CTEST_RESOURCE_GROUP_<N>, ..._<N>_GPUS
                         set by ctest with a resource spec file: the job
                         runs on the GPUs CTest chose (one group per rank
                         with equal counts: per rank; else shared)
)";
}

}  // namespace jiffy
