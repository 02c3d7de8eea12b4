// The parsed command line: which subcommand, with what options.
//
// `jiffy [mpiexec options] prog args [: ...]` launches; the first argument
// `daemon`, `status`, `top`, `stop` selects a subcommand; `history` and
// `report` are run by jiffy-history (ViewCommand); --help and --version
// answer at once.
#pragma once

#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "launch/options.h"

namespace jiffy {

struct DaemonOptions {
  std::optional<int> cores;       // --cores N: fake N cores instead of discovering
  std::optional<int> gpus;        // --gpus N: declare N GPUs named 0..N-1
  std::vector<std::string> gpu_names;  // --gpu-names a,b: declare GPUs by name
  int slots_per_core = 1;         // --slots-per-core N
  bool hyperthreads = false;      // --hyperthreads: one slot per hardware thread
  int max_oversubscribe = 8;      // --max-oversubscribe N
  double idle_timeout_s = 60;     // --idle-timeout S; 0 = never exit when idle
  bool foreground = false;        // --foreground: stay attached, log to stderr
  bool detached_child = false;    // internal: started by a launcher (ready pipe on fd 3)
  // The history database (docs/history.md). --history=off, or JIFFY_HISTORY=0
  // in the environment when no --history is given: no database, the journal
  // is only emptied.
  bool history = true;
  int history_keep_jobs = 1000000;  // --history-keep-jobs N (or JIFFY_HISTORY_KEEP_JOBS)
  int history_keep_days = 90;       // --history-keep-days D (or JIFFY_HISTORY_KEEP_DAYS)
  // Backfill into the head's reservation (SchedPolicy::backfill):
  // --backfill=off, or JIFFY_BACKFILL=0 when no --backfill is given.
  bool backfill = true;
  // How much later than its shadow time backfill may make the head start
  // (SchedPolicy::backfill_slack): --backfill-slack K, or
  // JIFFY_BACKFILL_SLACK when no --backfill-slack is given.
  double backfill_slack = 1;
};

// `jiffy top`: a live view of the daemon's status (views/top.h).
struct TopOptions {
  double interval_s = 0.5;  // -d, --delay, --interval S: between refreshes (at least 0.1)
  int iterations = 0;       // -n, --iterations N: draw N frames, then exit; 0 = until quit
  bool batch = false;       // -b, --batch: plain frames on stdout, no terminal control
                            // (also when stdout is not a terminal)
};

struct LaunchCommand { LaunchOptions options; };
struct DaemonCommand { DaemonOptions options; };
struct StatusCommand { bool json = false; };
struct TopCommand { TopOptions options; };
struct StopCommand {};
// `jiffy resource-spec`: this machine's GPUs as a CTest resource
// specification file (cli/ctest.h).
struct ResourceSpecCommand {};
// `jiffy history ...` / `jiffy report ...`: argv from the subcommand on,
// for jiffy-history (src/views/), the one executable that links SQLite.
struct ViewCommand { std::vector<std::string> args; };
struct HelpCommand {};
struct VersionCommand {};

using Command = std::variant<LaunchCommand, DaemonCommand, StatusCommand, TopCommand,
                             StopCommand, ResourceSpecCommand, ViewCommand, HelpCommand,
                             VersionCommand>;

// Looks up an environment variable of the caller; nullopt when unset.
using EnvLookup = std::optional<std::string> (*)(const char* name);

// Parses argv (argv[0] is the program name). Reads MPIEXEC_TIMEOUT through
// env. Throws Error with a one-line message on bad input: unknown option,
// missing or malformed value, zero or negative count, no program.
Command parse_command_line(const std::vector<std::string>& argv, EnvLookup env);

// The text `jiffy --help` prints.
const char* help_text();

}  // namespace jiffy
