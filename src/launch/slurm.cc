#include "launch/slurm.h"

#include <algorithm>
#include <cstring>

#include "launch/hosts.h"
#include "util/error.h"

namespace jiffy {
namespace {

// Slurm's step ids for the batch script and the extern step (slurm.h:
// SLURM_BATCH_SCRIPT, SLURM_EXTERN_CONT), as they appear in SLURM_STEP_ID.
constexpr std::string_view kBatchStep = "4294967291";
constexpr std::string_view kExternStep = "4294967292";

bool positive_above_one(std::string_view v) {
  if (v.empty() || v.size() > 9) return false;
  int n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + (c - '0');
  }
  return n > 1;
}

[[noreturn]] void untranslatable(const std::string& option, const std::string& hint) {
  throw Error(option + " has no srun translation" + (hint.empty() ? "" : "; " + hint) +
              " (or run it here with --backend=local)");
}

// What a ':' group may not carry into a --multi-prog line: srun gives every
// task of a step one environment and one working directory.
void check_group(const AppSpec& app) {
  if (!app.env.empty()) untranslatable("-env (or -x) in a ':' group", "give every rank the same with -genv");
  // slurmstepd reads at most 128 words of a --multi-prog line (MAX_ARGC)
  // and drops the rest.
  if (app.argv.size() > 127) untranslatable("a ':' group of more than 127 words", "");
  if (app.wdir) untranslatable("-wdir in a ':' group", "give it before the first group");
  if (app.env_base) untranslatable("-envall/-envnone/-envlist in a ':' group", "give -genv... instead");
}

std::string plugin_for(const LaunchOptions& opt, const std::vector<MpiKind>& kinds) {
  switch (opt.mpi) {
    case MpiMode::Pmi1: return "pmi2";  // Slurm's pmi2 plugin also answers PMI-1 clients
    case MpiMode::Pmix: return "pmix";
    case MpiMode::None: return "none";
    case MpiMode::Auto: break;
  }
  bool ompi = false, mpich = false, unknown = false;
  for (MpiKind k : kinds) {
    ompi = ompi || k == MpiKind::OpenMpi;
    mpich = mpich || k == MpiKind::Mpich;
    unknown = unknown || k == MpiKind::Unknown;
  }
  if (ompi && mpich) {
    throw Error("the ':' groups link different MPIs (Open MPI and MPICH); one Slurm step has one "
                "MPI plugin");
  }
  if (mpich) return "pmi2";
  if (ompi || unknown) return "pmix";  // an interpreter: Debian's mpi4py is Open MPI's
  return "none";
}

const char* cpu_bind(Bind b) {
  switch (b) {
    case Bind::Core: return "cores";
    case Bind::HwThread: return "threads";
    case Bind::None: return "none";
  }
  return "cores";
}

std::string join(const std::vector<std::string>& v, char sep) {
  std::string out;
  for (const std::string& s : v) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

}  // namespace

bool in_slurm_allocation_of_nodes(std::string_view job_id, std::string_view job_num_nodes,
                                  std::string_view nnodes, std::string_view step_id) {
  if (job_id.empty()) return false;
  if (!step_id.empty() && step_id != kBatchStep && step_id != kExternStep && step_id != "batch" &&
      step_id != "extern") {
    return false;
  }
  return positive_above_one(!job_num_nodes.empty() ? job_num_nodes : nnodes);
}

std::string srun_pattern(std::string_view option, std::string_view pattern) {
  std::string out = pattern.empty() || pattern.starts_with('/') ? "" : "./";
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    char c = pattern[i];
    if (c == '\\') untranslatable(std::string(option) + " with '\\'", "srun reads it as an escape");
    if (c != '%') {
      out += c;
      continue;
    }
    char next = i + 1 < pattern.size() ? pattern[i + 1] : '\0';
    ++i;
    if (next == 'r') {
      out += "%t";
    } else if (next == '%') {
      out += "%%";
    } else {
      untranslatable(std::string(option) + " with %" + (next ? std::string(1, next) : ""),
                     "srun names files by %t (rank) only");
    }
  }
  return out;
}

int srun_failure_code(std::string_view line) {
  constexpr std::string_view kPrefix = "srun: error: ";
  if (!line.starts_with(kPrefix)) return -1;
  line.remove_prefix(kPrefix.size());
  std::size_t node_end = line.find(": task");
  if (node_end == std::string_view::npos || line.substr(0, node_end).find(' ') != std::string_view::npos) {
    return -1;
  }
  line.remove_prefix(node_end + 2);
  std::size_t what = line.find(": ");
  if (what == std::string_view::npos) return -1;
  std::string_view tasks = line.substr(0, what);
  if (!tasks.starts_with("task ") && !tasks.starts_with("tasks ")) return -1;
  line.remove_prefix(what + 2);
  constexpr std::string_view kExited = "Exited with exit code ";
  if (line.starts_with(kExited)) {
    line.remove_prefix(kExited.size());
    int code = 0;
    if (line.empty() || line.size() > 3) return -1;
    for (char c : line) {
      if (c < '0' || c > '9') return -1;
      code = code * 10 + (c - '0');
    }
    return code <= 255 ? code : -1;
  }
  for (int sig = 1; sig < 65; ++sig) {
    const char* name = ::strsignal(sig);
    if (name && line == name) return 128 + sig;
  }
  return -1;
}

namespace {

// Digits at the front of text, taken off it: their value, or -1 when there
// are none or more than max_digits.
int take_number(std::string_view& text, std::size_t max_digits) {
  std::size_t n = 0;
  int value = 0;
  while (n < text.size() && text[n] >= '0' && text[n] <= '9' && n < max_digits + 1) {
    value = value * 10 + (text[n] - '0');
    ++n;
  }
  if (n == 0 || n > max_digits) return -1;
  text.remove_prefix(n);
  return value;
}

bool take(std::string_view& text, std::string_view word) {
  if (!text.starts_with(word)) return false;
  text.remove_prefix(word.size());
  return true;
}

}  // namespace

int mpich_abort_code(std::string_view line) {
  std::string_view rest = line;
  // srun -l: "K: " (srun pads K to the width of the largest rank)
  while (rest.starts_with(' ')) rest.remove_prefix(1);
  if (std::string_view label = rest; take_number(label, 9) >= 0 && take(label, ": ")) rest = label;
  if (!take(rest, "Abort(")) return -1;
  const bool negative = take(rest, "-");
  const int code = take_number(rest, 9);
  if (code < 0 || !take(rest, ") on node ") || take_number(rest, 9) < 0 ||
      !take(rest, " (rank ") || take_number(rest, 9) < 0 || !take(rest, " in comm ") ||
      take_number(rest, 9) < 0 || !take(rest, "): application called MPI_Abort(")) {
    return -1;
  }
  // The rank then exits with the code, which the exit status holds mod 256.
  return ((negative ? -code : code) % 256 + 256) % 256;
}

std::string multi_prog_word(std::string_view word) {
  if (word.find_first_of("'\n%") != std::string_view::npos) {
    untranslatable("a ':' group whose arguments hold a quote, a newline or '%'",
                   "srun's --multi-prog file cannot carry them");
  }
  bool plain = !word.empty() && word.find_first_of(" \t\"#\\") == std::string_view::npos;
  return plain ? std::string(word) : "'" + std::string(word) + "'";
}

SrunCommand srun_command(const LaunchOptions& opt, const SrunInputs& in) {
  if (!opt.local_only.empty()) untranslatable(opt.local_only.front(), "Slurm places the ranks");
  if (opt.label == Label::Tag) untranslatable("--tag-output", "-l labels lines as srun does");
  if (opt.label == Label::Pattern) untranslatable("-prepend-pattern", "-l labels lines as srun does");
  if (!opt.output_dir.empty()) untranslatable("--output-filename", "use -outfile-pattern");
  const bool mpmd = opt.apps.size() > 1;
  if (mpmd) {
    for (const AppSpec& app : opt.apps) check_group(app);
  }
  SrunCommand cmd;
  cmd.mpi = plugin_for(opt, in.kinds);
  std::vector<std::string>& a = cmd.argv;
  a.push_back(in.srun);
  if (opt.ntasks_given || opt.ntasks_per_node == 0 || mpmd) {
    a.push_back("--ntasks=" + std::to_string(opt.total_tasks()));
  }
  if (opt.ntasks_per_node > 0) a.push_back("--ntasks-per-node=" + std::to_string(opt.ntasks_per_node));
  a.push_back("--cpus-per-task=" + std::to_string(opt.cores_per_task));
  if (opt.gpus_per_task > 0) a.push_back("--gpus-per-task=" + std::to_string(opt.gpus_per_task));
  if (opt.gpus_per_job > 0) a.push_back("--gpus=" + std::to_string(opt.gpus_per_job));
  a.push_back(std::string("--cpu-bind=") + cpu_bind(opt.bind));
  // A step takes only what it asks for, so concurrent launches share nothing.
  a.push_back("--exact");
  // As mpiexec: one rank failing ends the others.
  a.push_back("--kill-on-bad-exit=1");
  a.push_back("--mpi=" + cmd.mpi);
  // mpiexec's stdin goes to rank 0 only.
  a.push_back("--input=0");
  // A Ctrl-C reaches the ranks (the launcher forwards it to srun) instead of
  // making srun print the tasks' states.
  a.push_back("--disable-status");
  if (!in.step_name.empty()) a.push_back("--job-name=" + in.step_name);
  if (opt.label == Label::Rank) a.push_back("--label");
  if (opt.quiet) a.push_back("--quiet");
  if (opt.wdir) a.push_back("--chdir=" + *opt.wdir);
  if (!opt.outfile_pattern.empty()) {
    a.push_back("--output=" + srun_pattern("-outfile-pattern", opt.outfile_pattern));
  }
  if (!opt.errfile_pattern.empty()) {
    a.push_back("--error=" + srun_pattern("-errfile-pattern", opt.errfile_pattern));
  } else if (opt.merge_stderr && opt.outfile_pattern.empty()) {
    cmd.stderr_to_stdout = true;  // with --output alone, srun writes stderr there too
  }
  std::vector<std::string> hosts;
  for (const std::string& h : opt.hosts) hosts.push_back(host_of_entry(h));
  if (!hosts.empty()) a.push_back("--nodelist=" + join(hosts, ','));
  if (!opt.hostfile.empty()) a.push_back("--nodefile=" + opt.hostfile);
  // The environment: srun's own, which it exports to every task. -genvnone
  // exports only what the options name.
  cmd.env = opt.genv;
  if (!mpmd) cmd.env.insert(cmd.env.end(), opt.apps[0].env.begin(), opt.apps[0].env.end());
  EnvBase base = !mpmd && opt.apps[0].env_base ? *opt.apps[0].env_base : opt.env_base;
  if (base == EnvBase::None) {
    std::vector<std::string> names;
    for (const EnvSetting& e : cmd.env) {
      if (std::find(names.begin(), names.end(), e.name) == names.end()) names.push_back(e.name);
    }
    a.push_back("--export=" + (names.empty() ? std::string("NONE") : join(names, ',')));
  } else {
    a.push_back("--export=ALL");
  }
  if (mpmd) {
    a.push_back("--multi-prog");
    a.push_back(in.multi_prog_path);
    int first = 0;
    for (std::size_t g = 0; g < opt.apps.size(); ++g) {
      const AppSpec& app = opt.apps[g];
      const int last = first + app.ntasks - 1;
      std::string line = first == last ? std::to_string(first)
                                       : std::to_string(first) + "-" + std::to_string(last);
      line += ' ' + multi_prog_word(in.programs.at(g));
      for (std::size_t i = 1; i < app.argv.size(); ++i) line += ' ' + multi_prog_word(app.argv[i]);
      cmd.multi_prog += line + '\n';
      first = last + 1;
    }
  } else {
    a.push_back(in.programs.at(0));
    a.insert(a.end(), opt.apps[0].argv.begin() + 1, opt.apps[0].argv.end());
  }
  return cmd;
}

}  // namespace jiffy
