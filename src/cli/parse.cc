// The command-line parser: argv -> Command.
//
// How it works:
//  - argv[1] of exactly `daemon`, `status`, `top` or `stop` selects a subcommand,
//    whose words must all be options. `history` and `report` are passed on
//    whole to jiffy-history, which parses them (src/views/options.h). Anything
//    else is a launch, spelled the
//    way mpiexec (MPICH hydra) or mpirun (Open MPI) users spell it.
//  - A launch line is one or more MPMD groups separated by a lone `:`. Each
//    group is options, then the program, then the program's arguments. The
//    first word that is neither an option nor an option's value is the
//    program; every word after it up to the next lone `:` is passed to the
//    program untouched, even when it starts with '-', because MPI programs
//    have options of their own (PETSc's -snes_monitor). `--` ends the options
//    early, for a program whose name starts with '-'.
//  - Options are found by name in a table (name -> handler); the handler
//    pulls its values from the Args cursor. A name may be written with one
//    dash or two (hydra users type one, Open MPI users two), and a value may
//    be attached with '=' (`--mpi=pmix`, as both launchers allow) or given as
//    the next word. Unlike hydra, names are case-sensitive: -g/-G and -v/-V
//    mean different things.
//  - Global options shape the whole job and may only appear in the first
//    group. Group options (-n, -env, ...) may appear in any group and apply
//    to it. -wdir, -x and --mca are global in the first group and apply to
//    their group alone after a `:`.
//  - --help and --version answer at once wherever they appear before the
//    program; later words are not looked at (PETSc's configure runs
//    `mpiexec -help all`).
//  - MPIEXEC_TIMEOUT is read through `env` only when no timeout option was
//    given; so are the speed-up switches, and for `daemon` JIFFY_HISTORY*
//    where no --history option was given. Nothing else is read: the parser
//    is a pure function of its input.
//
// Bad input throws Error with a one-line message without the "jiffy: "
// prefix, which main adds.

#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "cli/command.h"
#include "cli/ctest.h"
#include "launch/slurm.h"
#include "sched/scheduler.h"
#include "util/error.h"

namespace jiffy {
namespace {

constexpr std::string_view kUsageHint = "(usage: jiffy -n N program [args])";

// ---------------------------------------------------------------------------
// Words and values

// Option words are "-x" or "--xyz"; a lone "-" is an ordinary word.
bool looks_like_option(const std::string& word) { return word.size() >= 2 && word[0] == '-'; }

// An option word taken apart: "--mpi=pmix" -> spelled "--mpi", name "mpi",
// attached "pmix".
struct OptionWord {
  std::string spelled;                  // as typed, less any "=value"; for messages
  std::string name;                     // without its one or two leading dashes
  std::optional<std::string> attached;  // the text after the first '='
};

OptionWord split_option(const std::string& word) {
  const size_t dashes = word.starts_with("--") ? 2 : 1;
  const size_t eq = word.find('=');
  OptionWord w;
  w.spelled = word.substr(0, eq);
  w.name = w.spelled.substr(dashes);
  if (eq != std::string::npos) w.attached = word.substr(eq + 1);
  return w;
}

[[noreturn]] void throw_unknown_option(const std::string& spelled) {
  throw Error("unknown option '" + spelled + "' (see jiffy --help)");
}

// Parses all of `text` as an int >= min. from_chars rejects spaces, '+',
// trailing junk and overflow, which atoi would silently accept.
int parse_count(const std::string& what, const std::string& text, int min) {
  int n = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, n);
  if (text.empty() || ec != std::errc() || ptr != end || n < min) {
    throw Error(what + ": expected a " + (min > 0 ? "positive" : "non-negative") +
                " integer, got '" + text + "'");
  }
  return n;
}

// Parses all of `text` as a non-negative, finite number of seconds ("30",
// "2.5").
// A plain decimal ("1.5", no exponent), the whole of text, finite.
std::optional<double> parse_decimal(const std::string& text) {
  double v = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, v, std::chars_format::fixed);
  if (text.empty() || ec != std::errc() || ptr != end || !std::isfinite(v)) return std::nullopt;
  return v;
}

double parse_seconds(const std::string& what, const std::string& text) {
  std::optional<double> s = parse_decimal(text);
  if (!s || *s < 0) throw Error(what + ": expected a number of seconds, got '" + text + "'");
  return *s;
}

// Splits "a,b,c" into its non-empty items (a trailing comma is harmless).
std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = std::min(text.find(',', start), text.size());
    if (comma > start) items.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  return items;
}

// Splits "core:overload-allowed" at each ':'; always at least one part.
std::vector<std::string> split_colons(const std::string& text) {
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    size_t colon = text.find(':', start);
    parts.push_back(text.substr(start, colon - start));
    if (colon == std::string::npos) return parts;
    start = colon + 1;
  }
}

std::string lowercase(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

bool one_of(std::string_view s, std::span<const std::string_view> set) {
  return std::find(set.begin(), set.end(), s) != set.end();
}

// A cursor over argv that also hands the current option its values: the
// attached "=value" first, then the following words.
class Args {
 public:
  Args(const std::vector<std::string>& argv, size_t pos) : argv_(argv), pos_(pos) {}

  bool done() const { return pos_ >= argv_.size(); }
  const std::string& peek() const { return argv_[pos_]; }
  const std::string& take() { return argv_[pos_++]; }

  void begin_option(OptionWord w) { current_ = std::move(w); }
  const std::string& option() const { return current_.spelled; }

  std::string value() {
    if (current_.attached) return *std::exchange(current_.attached, std::nullopt);
    if (done()) throw Error(option() + ": missing value");
    return take();
  }

  // An attached value nobody asked for means a flag was written --flag=x.
  void end_option() const {
    if (current_.attached) throw Error(option() + ": takes no value");
  }

  int positive() { return parse_count(option(), value(), 1); }
  int non_negative() { return parse_count(option(), value(), 0); }
  double seconds() { return parse_seconds(option(), value()); }

  // A comma-separated list with at least one item.
  std::vector<std::string> list() {
    std::string text = value();
    std::vector<std::string> items = split_list(text);
    if (items.empty()) {
      throw Error(option() + ": expected a comma-separated list, got '" + text + "'");
    }
    return items;
  }

  // An environment variable name: non-empty and without '='.
  std::string env_name(const std::string& name) const {
    if (name.empty() || name.find('=') != std::string::npos) {
      throw Error(option() + ": expected an environment variable name, got '" + name + "'");
    }
    return name;
  }

 private:
  const std::vector<std::string>& argv_;
  size_t pos_;
  OptionWord current_;
};

// ---------------------------------------------------------------------------
// Option tables

enum class Scope {
  kGlobal,  // shapes the whole job: only before the first ':'
  kGroup,   // allowed in every group
};

template <typename State>
struct Option {
  std::string_view name;  // without dashes
  void (*handle)(State&);
  Scope scope = Scope::kGroup;
};

template <typename State>
const Option<State>* find_option(std::span<const Option<State>> table, std::string_view name) {
  auto it = std::find_if(table.begin(), table.end(),
                         [&](const Option<State>& o) { return o.name == name; });
  return it == table.end() ? nullptr : &*it;
}

// --help and --version win over everything else on the line before the
// program, in every subcommand.
std::optional<Command> answer_at_once(std::string_view name) {
  if (name == "h" || name == "help") return HelpCommand{};
  if (name == "V" || name == "version") return VersionCommand{};
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// Launch options

struct LaunchState {
  Args& args;
  LaunchOptions opts;
  bool first_group = true;
  bool timeout_given = false;
  bool topology_cache_given = false;  // --topology-cache or --no-topology-cache (beats the variable)
  bool ucx_shm_given = false;         // --ucx-shm or --no-ucx-shm
  bool single_node_given = false;     // --single-node-ompi or --no-single-node-ompi
  int npernode = 0;            // -N, -npernode (processes on this, the only node)
  int ppn = 0;                 // -ppn (hydra's processes per node)
  bool ntasks_given = false;   // -n in any group
  std::optional<Backend> backend = std::nullopt;  // --backend=local|slurm
  bool backend_given = false;

  AppSpec& group() { return opts.apps.back(); }
  // -x, -wdir, --mca: the job's settings in the first group, the group's own
  // after a ':'.
  std::vector<EnvSetting>& env_for_position() { return first_group ? opts.genv : group().env; }
};

void set_ntasks(LaunchState& s) {
  s.group().ntasks = s.args.positive();
  s.ntasks_given = true;
}
void set_npernode(LaunchState& s) { s.npernode = s.args.positive(); }
// -ppn: hydra's processes per node (checked; the same as -N under Slurm).
void set_ppn(LaunchState& s) { s.ppn = s.args.positive(); }
void set_backend(LaunchState& s) {
  const std::string v = s.args.value();
  if (v == "local") {
    s.backend = Backend::Local;
  } else if (v == "slurm") {
    s.backend = Backend::Slurm;
  } else if (v == "auto") {
    s.backend.reset();
  } else {
    throw Error(s.args.option() + ": expected local, slurm or auto, got '" + v + "'");
  }
  s.backend_given = true;  // auto too: the variable does not apply
}
// Placement options whose meaning is this machine's: noted for the slurm
// backend, which refuses them by name.
void note_local_only(LaunchState& s) { s.opts.local_only.push_back(s.args.option()); }
void set_cores_per_task(LaunchState& s) { s.opts.cores_per_task = s.args.positive(); }
void set_gpus_per_task(LaunchState& s) { s.opts.gpus_per_task = s.args.non_negative(); }
void set_gpus_per_job(LaunchState& s) { s.opts.gpus_per_job = s.args.non_negative(); }

// Levels wider than a core, in hydra's and Open MPI's spellings.
constexpr std::string_view kWideLevels[] = {"socket",  "numa",    "package", "board",
                                            "l1cache", "l2cache", "l3cache"};
constexpr std::string_view kNarrowMapLevels[] = {"slot", "core", "hwthread", "node"};
// Open MPI qualifiers with nothing to do on one node, where jiffy picks cores.
constexpr std::string_view kIgnoredBindQualifiers[] = {"overload-allowed", "if-supported"};
constexpr std::string_view kIgnoredMapQualifiers[] = {"span", "nolocal", "display", "displayalloc"};

// -bind-to none|core|hwthread[:qualifier]. Wider levels (socket, numa, ...)
// bind to the rank's own cores: jiffy shares the machine between jobs, so a
// whole socket would overlap other jobs' cores, and the rank's grant is
// exactly what it asked for with -c. Hydra's count ("core:2" = two cores per
// rank) is a resource request, which is -c's job; a count of 1 is harmless.
void set_bind(LaunchState& s) {
  const std::string text = s.args.value();
  const std::vector<std::string> parts = split_colons(lowercase(text));
  const std::string& level = parts[0];
  if (level == "none") {
    s.opts.bind = Bind::None;
  } else if (level == "core" || one_of(level, kWideLevels)) {
    s.opts.bind = Bind::Core;
  } else if (level == "hwthread") {
    s.opts.bind = Bind::HwThread;
  } else {
    throw Error(s.args.option() + ": unsupported binding '" + text +
                "' (expected none, core or hwthread)");
  }
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& q = parts[i];
    if (one_of(q, kIgnoredBindQualifiers)) continue;
    int count = 0;
    auto [ptr, ec] = std::from_chars(q.data(), q.data() + q.size(), count);
    if (q.empty() || ec != std::errc() || ptr != q.data() + q.size() || count < 1) {
      throw Error(s.args.option() + ": unsupported binding '" + text + "'");
    }
    if (count > 1) {
      throw Error(s.args.option() + ": counts other than 1 ('" + text +
                  "') are not supported; use -c N to give each rank N cores");
    }
  }
}

// -map-by: jiffy always places a job's ranks compactly on the cores it is
// granted, so the mapping policy is checked for typos and otherwise ignored.
// Open MPI's qualifiers that change the request are honoured: PE=N (N cores
// per rank) and [no]oversubscribe.
void set_map_by(LaunchState& s) {
  const std::string text = s.args.value();
  const std::vector<std::string> parts = split_colons(lowercase(text));
  auto bad = [&]() {
    return Error(s.args.option() + ": unsupported mapping '" + text +
                 "' (expected slot, core, hwthread, socket, numa, node or ppr:N:level)");
  };
  auto is_level = [](const std::string& l) {
    return one_of(l, kNarrowMapLevels) || one_of(l, kWideLevels);
  };
  size_t next = 1;
  if (parts[0] == "ppr") {  // ppr:N:level, N ranks per level
    if (parts.size() < 3 || !is_level(parts[2])) throw bad();
    parse_count(s.args.option() + " ppr", parts[1], 1);
    next = 3;
  } else if (!is_level(parts[0])) {
    throw bad();
  }
  // A core or slot per rank is what srun does too; anything else places
  // ranks by this machine's shape.
  if (parts[0] != "slot" && parts[0] != "core" && parts[0] != "hwthread") note_local_only(s);
  for (size_t i = next; i < parts.size(); ++i) {
    const std::string& q = parts[i];
    if (q.starts_with("pe=")) {
      s.opts.cores_per_task = parse_count(s.args.option() + " PE", q.substr(3), 1);
    } else if (q == "oversubscribe") {
      s.opts.oversubscribe_error = false;
    } else if (q == "nooversubscribe") {
      s.opts.oversubscribe_error = true;
    } else if (!one_of(q, kIgnoredMapQualifiers)) {
      throw bad();
    }
  }
}

// -genv/-env NAME VALUE; hydra also takes NAME=VALUE as a single word.
EnvSetting read_env_pair(Args& args) {
  std::string first = args.value();
  size_t eq = first.find('=');
  if (eq != std::string::npos) {
    return {args.env_name(first.substr(0, eq)), first.substr(eq + 1)};
  }
  std::string name = args.env_name(first);
  return {name, args.value()};
}

// -genvlist a,b passes only these from the caller; modelled as "nothing from
// the caller" plus a copy of each named variable.
std::vector<EnvSetting> read_env_list(Args& args) {
  std::vector<EnvSetting> settings;
  for (const std::string& name : args.list()) {
    settings.push_back({args.env_name(name), std::nullopt});
  }
  return settings;
}

void add_genv(LaunchState& s) { s.opts.genv.push_back(read_env_pair(s.args)); }
void add_genvlist(LaunchState& s) {
  std::vector<EnvSetting> list = read_env_list(s.args);
  s.opts.genv.insert(s.opts.genv.end(), list.begin(), list.end());
  s.opts.env_base = EnvBase::None;
}
void set_genvall(LaunchState& s) { s.opts.env_base = EnvBase::All; }
void set_genvnone(LaunchState& s) { s.opts.env_base = EnvBase::None; }

void add_env(LaunchState& s) { s.group().env.push_back(read_env_pair(s.args)); }
void add_envlist(LaunchState& s) {
  std::vector<EnvSetting> list = read_env_list(s.args);
  s.group().env.insert(s.group().env.end(), list.begin(), list.end());
  s.group().env_base = EnvBase::None;
}
void set_envall(LaunchState& s) { s.group().env_base = EnvBase::All; }
void set_envnone(LaunchState& s) { s.group().env_base = EnvBase::None; }

// Open MPI's -x NAME=VALUE sets; -x NAME copies the caller's value.
void add_x(LaunchState& s) {
  std::string text = s.args.value();
  size_t eq = text.find('=');
  EnvSetting e{s.args.env_name(text.substr(0, eq)), std::nullopt};
  if (eq != std::string::npos) e.value = text.substr(eq + 1);
  s.env_for_position().push_back(std::move(e));
}

// Open MPI reads MCA parameters from OMPI_MCA_<key> in each rank's
// environment, which is all --mca does on a single node.
void add_mca(LaunchState& s) {
  std::string key = s.args.value();
  // The key becomes part of a variable name: '=' would end the name early.
  if (key.empty() || key.find('=') != std::string::npos) {
    throw Error(s.args.option() + ": expected a parameter name, got '" + key + "'");
  }
  std::string value = s.args.value();
  s.env_for_position().push_back({"OMPI_MCA_" + key, std::move(value)});
}

void set_wdir(LaunchState& s) {
  std::string dir = s.args.value();
  if (dir.empty()) throw Error(s.args.option() + ": expected a directory, got ''");
  (s.first_group ? s.opts.wdir : s.group().wdir) = std::move(dir);
}

std::string non_empty_value(Args& args) {
  std::string v = args.value();
  if (v.empty()) throw Error(args.option() + ": expected a non-empty value, got ''");
  return v;
}

void set_label_rank(LaunchState& s) { s.opts.label = Label::Rank; }
void set_label_tag(LaunchState& s) { s.opts.label = Label::Tag; }
void set_prepend_pattern(LaunchState& s) {
  s.opts.prepend_pattern = non_empty_value(s.args);
  s.opts.label = Label::Pattern;
}
void set_outfile(LaunchState& s) { s.opts.outfile_pattern = non_empty_value(s.args); }
void set_errfile(LaunchState& s) { s.opts.errfile_pattern = non_empty_value(s.args); }
// mpirun's DIR[:nocopy|:nojobid]: the qualifiers are about copying files
// between nodes and the job-id level; one node has nothing to copy.
void set_output_dir(LaunchState& s) {
  std::string v = non_empty_value(s.args);
  if (auto colon = v.rfind(':'); colon != std::string::npos) {
    for (const std::string& q : split_list(v.substr(colon + 1))) {
      if (q != "nocopy" && q != "nojobid") {
        throw Error(s.args.option() + ": unknown qualifier '" + q + "' (expected nocopy or nojobid)");
      }
    }
    v.resize(colon);
    if (v.empty()) throw Error(s.args.option() + ": expected a directory before ':'");
  }
  s.opts.output_dir = std::move(v);
}
void set_merge_stderr(LaunchState& s) { s.opts.merge_stderr = true; }
void set_quiet(LaunchState& s) { s.opts.quiet = true; }

void add_hosts(LaunchState& s) {
  for (std::string& h : split_list(non_empty_value(s.args))) s.opts.hosts.push_back(std::move(h));
}
void set_hostfile(LaunchState& s) { s.opts.hostfile = non_empty_value(s.args); }

// mpirun --rank-by: the order ranks take the granted slots in. jiffy gives
// a job neighbouring cores in order, which every level below names.
void check_rank_by(LaunchState& s) {
  const std::string text = s.args.value();
  const std::vector<std::string> parts = split_colons(lowercase(text));
  if (!one_of(parts[0], kNarrowMapLevels) && !one_of(parts[0], kWideLevels)) {
    throw Error(s.args.option() + ": unsupported ranking '" + text +
                "' (expected slot, core, hwthread, socket, numa or node)");
  }
  if (parts[0] != "slot" && parts[0] != "core" && parts[0] != "hwthread") note_local_only(s);
}
// --use-hwthread-cpus: a hardware thread is a CPU to bind to.
void set_hwthread_cpus(LaunchState& s) { s.opts.bind = Bind::HwThread; }

void refuse_timestamps(LaunchState& s) {
  throw Error(s.args.option() + " is not supported; pipe the output through ts(1) (moreutils) instead");
}

void set_timeout(LaunchState& s) {
  s.opts.timeout_s = s.args.seconds();
  s.timeout_given = true;
}

// Oversubscription is the default: a job wider than the machine waits for
// all of it and runs alone.
void set_oversubscribe(LaunchState& s) { s.opts.oversubscribe_error = false; }
void set_no_oversubscribe(LaunchState& s) { s.opts.oversubscribe_error = true; }

void set_mpi(LaunchState& s) {
  const std::string v = s.args.value();
  if (v == "auto") {
    s.opts.mpi = MpiMode::Auto;
  } else if (v == "pmi1") {
    s.opts.mpi = MpiMode::Pmi1;
  } else if (v == "pmix") {
    s.opts.mpi = MpiMode::Pmix;
  } else if (v == "none") {
    s.opts.mpi = MpiMode::None;
  } else {
    throw Error(s.args.option() + ": expected auto, pmi1, pmix or none, got '" + v + "'");
  }
}

void set_verbose(LaunchState& s) { s.opts.verbose = true; }
void set_topology_cache(LaunchState& s) {
  s.opts.topology_cache = true;
  s.topology_cache_given = true;
}
void set_no_topology_cache(LaunchState& s) {
  s.opts.topology_cache = false;
  s.topology_cache_given = true;
}
void set_single_node_ompi(LaunchState& s) {
  s.opts.single_node_ompi = true;
  s.single_node_given = true;
}
void set_no_single_node_ompi(LaunchState& s) {
  s.opts.single_node_ompi = false;
  s.single_node_given = true;
}
void set_ucx_shm(LaunchState& s) {
  s.opts.ucx_shm = true;
  s.ucx_shm_given = true;
}
void set_no_ucx_shm(LaunchState& s) {
  s.opts.ucx_shm = false;
  s.ucx_shm_given = true;
}

// Options from users' MPIEXEC flags that mean nothing on one node: accepted
// so that their scripts run unchanged. -ppn's value is still checked.
void ignore_flag(LaunchState&) {}
void ignore_value(LaunchState& s) { s.args.value(); }

// Options whose promise jiffy cannot keep: refused rather than ignored.
void refuse(LaunchState& s) { throw Error(s.args.option() + " is not supported by jiffy"); }
void refuse_configfile(LaunchState& s) {
  throw Error(s.args.option() + " is not supported; separate the groups with ':' instead");
}

constexpr Option<LaunchState> kLaunchOptions[] = {
    // Placement.
    {"n", set_ntasks},
    {"np", set_ntasks},
    {"N", set_npernode, Scope::kGlobal},
    {"npernode", set_npernode, Scope::kGlobal},
    {"rank-by", check_rank_by, Scope::kGlobal},
    {"use-hwthread-cpus", set_hwthread_cpus, Scope::kGlobal},
    {"c", set_cores_per_task, Scope::kGlobal},
    {"cpus-per-task", set_cores_per_task, Scope::kGlobal},
    {"cpus-per-proc", set_cores_per_task, Scope::kGlobal},
    {"cpus-per-rank", set_cores_per_task, Scope::kGlobal},
    {"g", set_gpus_per_task, Scope::kGlobal},
    {"gpus-per-task", set_gpus_per_task, Scope::kGlobal},
    {"gpus-per-rank", set_gpus_per_task, Scope::kGlobal},
    {"G", set_gpus_per_job, Scope::kGlobal},
    {"gpus", set_gpus_per_job, Scope::kGlobal},
    {"bind-to", set_bind, Scope::kGlobal},
    {"map-by", set_map_by, Scope::kGlobal},
    {"oversubscribe", set_oversubscribe, Scope::kGlobal},
    {"no-oversubscribe", set_no_oversubscribe, Scope::kGlobal},
    {"nooversubscribe", set_no_oversubscribe, Scope::kGlobal},
    // Environment.
    {"genv", add_genv, Scope::kGlobal},
    {"genvlist", add_genvlist, Scope::kGlobal},
    {"genvall", set_genvall, Scope::kGlobal},
    {"genvnone", set_genvnone, Scope::kGlobal},
    {"env", add_env},
    {"envlist", add_envlist},
    {"envall", set_envall},
    {"envnone", set_envnone},
    {"x", add_x},
    {"mca", add_mca},
    {"wdir", set_wdir},
    {"wd", set_wdir},
    // Output.
    {"l", set_label_rank, Scope::kGlobal},
    {"prepend-rank", set_label_rank, Scope::kGlobal},
    {"tag-output", set_label_tag, Scope::kGlobal},
    {"prepend-pattern", set_prepend_pattern, Scope::kGlobal},
    {"merge-stderr-to-stdout", set_merge_stderr, Scope::kGlobal},
    {"timestamp-output", refuse_timestamps, Scope::kGlobal},
    {"q", set_quiet, Scope::kGlobal},
    {"quiet", set_quiet, Scope::kGlobal},
    {"outfile-pattern", set_outfile, Scope::kGlobal},
    {"errfile-pattern", set_errfile, Scope::kGlobal},
    {"output-filename", set_output_dir, Scope::kGlobal},
    {"v", set_verbose, Scope::kGlobal},
    {"verbose", set_verbose, Scope::kGlobal},
    {"report-bindings", set_verbose, Scope::kGlobal},
    // Failure handling.
    {"timeout", set_timeout, Scope::kGlobal},
    {"print-all-exitcodes", ignore_flag, Scope::kGlobal},
    {"disable-auto-cleanup", refuse, Scope::kGlobal},
    // MPI wire-up.
    {"mpi", set_mpi, Scope::kGlobal},
    {"topology-cache", set_topology_cache, Scope::kGlobal},
    {"no-topology-cache", set_no_topology_cache, Scope::kGlobal},
    {"single-node-ompi", set_single_node_ompi, Scope::kGlobal},
    {"no-single-node-ompi", set_no_single_node_ompi, Scope::kGlobal},
    {"ucx-shm", set_ucx_shm, Scope::kGlobal},
    {"no-ucx-shm", set_no_ucx_shm, Scope::kGlobal},
    {"backend", set_backend, Scope::kGlobal},
    // Hosts: this machine only (checked by the launcher), or Slurm's nodes.
    {"hosts", add_hosts},
    {"host", add_hosts},
    {"H", add_hosts},
    {"f", set_hostfile, Scope::kGlobal},
    {"machinefile", set_hostfile, Scope::kGlobal},
    {"hostfile", set_hostfile, Scope::kGlobal},
    // Compatibility: accepted, no effect on one node.
    {"ppn", set_ppn, Scope::kGlobal},
    {"launcher", ignore_value, Scope::kGlobal},
    {"bootstrap", ignore_value, Scope::kGlobal},
    {"iface", ignore_value, Scope::kGlobal},
    {"rmk", ignore_value, Scope::kGlobal},
    {"display-map", ignore_flag, Scope::kGlobal},
    {"allow-run-as-root", ignore_flag, Scope::kGlobal},
    {"configfile", refuse_configfile, Scope::kGlobal},
};

// Handles one option word of a launch. Returns the answer when it is --help
// or --version.
std::optional<Command> handle_launch_option(LaunchState& s, const std::string& word) {
  OptionWord w = split_option(word);
  if (auto answer = answer_at_once(w.name)) return answer;
  const Option<LaunchState>* o = find_option<LaunchState>(kLaunchOptions, w.name);
  if (o == nullptr) throw_unknown_option(w.spelled);
  if (o->scope == Scope::kGlobal && !s.first_group) {
    throw Error(w.spelled + " applies to the whole job; give it before the first ':'");
  }
  s.args.begin_option(std::move(w));
  o->handle(s);
  s.args.end_option();
  return std::nullopt;
}

// The program and its arguments: every word up to a lone ':'.
void read_program(LaunchState& s, const std::string& program) {
  std::vector<std::string>& argv = s.group().argv;
  argv.push_back(program);
  while (!s.args.done() && s.args.peek() != ":") argv.push_back(s.args.take());
}

void start_next_group(LaunchState& s) {
  if (s.group().argv.empty()) throw Error("no program before ':' " + std::string(kUsageHint));
  s.opts.apps.emplace_back();
  s.first_group = false;
}

// MPIEXEC_TIMEOUT (hydra's, also read by Open MPI) when no option gave one.
// An empty value counts as unset, as `MPIEXEC_TIMEOUT= jiffy ...` means.
void apply_timeout_env(LaunchState& s, EnvLookup env) {
  if (s.timeout_given || env == nullptr) return;
  std::optional<std::string> v = env("MPIEXEC_TIMEOUT");
  if (v && !v->empty()) s.opts.timeout_s = parse_seconds("MPIEXEC_TIMEOUT", *v);
}

// The rank speed-ups can also be switched for a whole CI run through the
// environment, without touching MPIEXEC: "1" on, "0" off, empty or unset
// the default. An option on the command line beats the variable.
void apply_speedup_env(LaunchState& s, EnvLookup env) {
  if (env == nullptr) return;
  auto setting = [&](const char* name) -> std::optional<bool> {
    std::optional<std::string> v = env(name);
    if (!v || v->empty()) return std::nullopt;
    if (*v != "0" && *v != "1") throw Error(std::string(name) + ": expected 0 or 1, got '" + *v + "'");
    return *v == "1";
  };
  std::optional<bool> cache = setting("JIFFY_TOPOLOGY_CACHE");
  if (cache && !s.topology_cache_given) s.opts.topology_cache = *cache;
  std::optional<bool> ucx = setting("JIFFY_UCX_SHM");
  if (ucx && !s.ucx_shm_given) s.opts.ucx_shm = *ucx;
  std::optional<bool> single = setting("JIFFY_SINGLE_NODE_OMPI");
  if (single && !s.single_node_given) s.opts.single_node_ompi = *single;
}

// The backend: --backend, else JIFFY_BACKEND, else Slurm inside an
// allocation of several nodes (SLURM_JOB_NUM_NODES, or SLURM_NNODES, above
// 1) but not inside one of its steps: a jiffy run by srun is a task on its
// node. One node stays local (its cpuset is the allocation's).
void resolve_backend(LaunchState& s, EnvLookup env) {
  auto get = [&](const char* name) -> std::string {
    std::optional<std::string> v = env ? env(name) : std::nullopt;
    return v ? *v : "";
  };
  if (!s.backend_given) {
    const std::string v = get("JIFFY_BACKEND");
    if (v == "local") {
      s.backend = Backend::Local;
    } else if (v == "slurm") {
      s.backend = Backend::Slurm;
    } else if (!v.empty() && v != "auto") {
      throw Error("JIFFY_BACKEND: expected local, slurm or auto, got '" + v + "'");
    }
  }
  if (!s.backend) {  // auto
    s.backend = in_slurm_allocation_of_nodes(get("SLURM_JOB_ID"), get("SLURM_JOB_NUM_NODES"),
                                             get("SLURM_NNODES"), get("SLURM_STEP_ID"))
                    ? Backend::Slurm
                    : Backend::Local;
  }
  s.opts.backend = s.backend.value_or(Backend::Local);
}

// The GPUs CTest chose for this test (cli/ctest.h), which are this
// machine's: a Slurm step gets its GPUs from Slurm.
void apply_ctest_env(LaunchState& s, EnvLookup env) {
  if (env == nullptr) return;
  CtestGpus ctest = ctest_gpus(env);
  if (ctest.ids.empty()) return;
  if (s.opts.backend == Backend::Slurm) {
    throw Error("CTest chose GPUs of this machine (CTEST_RESOURCE_GROUP_*), which a Slurm step cannot use: "
                "run the test with --backend=local, or without a resource spec file");
  }
  apply_ctest_gpus(s.opts, ctest);
}

Command parse_launch(const std::vector<std::string>& argv, EnvLookup env) {
  Args args(argv, 1);
  LaunchState s{args, {}};
  s.opts.apps.emplace_back();
  while (!args.done()) {
    const std::string& word = args.take();
    // read_program stops only at ':' or the end, so here the current group
    // has no program yet.
    if (word == ":") {
      start_next_group(s);
    } else if (word == "--") {
      if (args.done()) break;
      read_program(s, args.take());
    } else if (looks_like_option(word)) {
      if (auto answer = handle_launch_option(s, word)) return *answer;
    } else {
      read_program(s, word);
    }
  }
  if (s.group().argv.empty()) {
    throw Error(std::string(s.first_group ? "no program to run " : "no program after ':' ") +
                std::string(kUsageHint));
  }
  resolve_backend(s, env);
  s.opts.ntasks_given = s.ntasks_given;
  if (s.opts.backend == Backend::Slurm) {
    s.opts.ntasks_per_node = s.npernode > 0 ? s.npernode : s.ppn;
  } else if (s.npernode > 0) {  // processes per node, and this is the only node
    if (!s.ntasks_given && s.opts.apps.size() == 1) {
      s.group().ntasks = s.npernode;
    } else if (s.opts.total_tasks() != s.npernode) {
      throw Error("-N " + std::to_string(s.npernode) + " asks for " + std::to_string(s.npernode) +
                  " processes on this node, the only one jiffy uses, but -n asks for " +
                  std::to_string(s.opts.total_tasks()));
    }
  }
  // LaunchOptions::total_tasks() is an int: MPMD groups must not overflow it.
  long long total = 0;
  for (const AppSpec& a : s.opts.apps) total += a.ntasks;
  if (total > INT_MAX) throw Error("too many ranks in all: " + std::to_string(total));
  apply_timeout_env(s, env);
  apply_speedup_env(s, env);
  apply_ctest_env(s, env);
  return LaunchCommand{std::move(s.opts)};
}

// ---------------------------------------------------------------------------
// Subcommands

struct DaemonState {
  Args& args;
  DaemonOptions opts;
  bool history_given = false, keep_jobs_given = false, keep_days_given = false;
  bool backfill_given = false, slack_given = false;
};

void set_backfill(DaemonState& s) {
  std::string v = s.args.value();
  if (v != "on" && v != "off") throw Error(s.args.option() + ": expected on or off, got '" + v + "'");
  s.opts.backfill = v == "on";
  s.backfill_given = true;
}

// A backfill slack: a number from 0 to kMaxBackfillSlack.
double parse_slack(const std::string& what, const std::string& text) {
  std::optional<double> v = parse_decimal(text);
  if (!v || *v < 0 || *v > kMaxBackfillSlack) {
    throw Error(what + ": expected a number from 0 to " + std::to_string(static_cast<int>(kMaxBackfillSlack)) +
                ", got '" + text + "'");
  }
  return *v;
}

void set_backfill_slack(DaemonState& s) {
  s.opts.backfill_slack = parse_slack(s.args.option(), s.args.value());
  s.slack_given = true;
}

// JIFFY_BACKFILL=0 and JIFFY_BACKFILL_SLACK in a daemon's environment,
// where no option gave them.
void apply_backfill_env(DaemonState& s, EnvLookup env) {
  if (env == nullptr) return;
  std::optional<std::string> v = s.backfill_given ? std::nullopt : env("JIFFY_BACKFILL");
  if (v && !v->empty() && *v != "0" && *v != "1") {
    throw Error("JIFFY_BACKFILL: expected 0 or 1, got '" + *v + "'");
  }
  if (v && *v == "0") s.opts.backfill = false;
  std::optional<std::string> k = s.slack_given ? std::nullopt : env("JIFFY_BACKFILL_SLACK");
  if (k && !k->empty()) s.opts.backfill_slack = parse_slack("JIFFY_BACKFILL_SLACK", *k);
}

void set_history(DaemonState& s) {
  std::string v = s.args.value();
  if (v != "on" && v != "off") throw Error(s.args.option() + ": expected on or off, got '" + v + "'");
  s.opts.history = v == "on";
  s.history_given = true;
}

// The history settings a daemon's environment may give, where no option did.
void apply_history_env(DaemonState& s, EnvLookup env) {
  if (env == nullptr) return;
  if (!s.history_given) {
    std::optional<std::string> v = env("JIFFY_HISTORY");
    if (v && !v->empty() && *v != "0" && *v != "1") {
      throw Error("JIFFY_HISTORY: expected 0 or 1, got '" + *v + "'");
    }
    if (v && *v == "0") s.opts.history = false;
  }
  auto count = [&](const char* name, bool given, int& out) {
    std::optional<std::string> v = given ? std::nullopt : env(name);
    if (v && !v->empty()) out = parse_count(name, *v, 1);
  };
  count("JIFFY_HISTORY_KEEP_JOBS", s.keep_jobs_given, s.opts.history_keep_jobs);
  count("JIFFY_HISTORY_KEEP_DAYS", s.keep_days_given, s.opts.history_keep_days);
}

void set_gpu_names(DaemonState& s) {
  std::vector<std::string> names = s.args.list();
  for (size_t i = 0; i < names.size(); ++i) {
    if (std::find(names.begin(), names.begin() + i, names[i]) != names.begin() + i) {
      throw Error(s.args.option() + ": GPU '" + names[i] + "' named twice");
    }
  }
  s.opts.gpu_names = std::move(names);
}

constexpr Option<DaemonState> kDaemonOptions[] = {
    {"cores", [](DaemonState& s) { s.opts.cores = s.args.positive(); }},
    {"gpus", [](DaemonState& s) { s.opts.gpus = s.args.non_negative(); }},
    {"gpu-names", set_gpu_names},
    {"slots-per-core", [](DaemonState& s) { s.opts.slots_per_core = s.args.positive(); }},
    {"hyperthreads", [](DaemonState& s) { s.opts.hyperthreads = true; }},
    {"max-oversubscribe", [](DaemonState& s) { s.opts.max_oversubscribe = s.args.positive(); }},
    {"idle-timeout", [](DaemonState& s) { s.opts.idle_timeout_s = s.args.seconds(); }},
    {"foreground", [](DaemonState& s) { s.opts.foreground = true; }},
    {"detached-child", [](DaemonState& s) { s.opts.detached_child = true; }},
    {"history", set_history},
    {"backfill", set_backfill},
    {"backfill-slack", set_backfill_slack},
    {"history-keep-jobs",
     [](DaemonState& s) {
       s.opts.history_keep_jobs = s.args.positive();
       s.keep_jobs_given = true;
     }},
    {"history-keep-days",
     [](DaemonState& s) {
       s.opts.history_keep_days = s.args.positive();
       s.keep_days_given = true;
     }},
};

struct StatusState {
  Args& args;
  bool json = false;
};

constexpr Option<StatusState> kStatusOptions[] = {
    {"json", [](StatusState& s) { s.json = true; }},
};

struct TopState {
  Args& args;
  TopOptions opts;
};

// The daemon answers a status request cheaply, but a refresh many times a
// second shows nothing more to a human and costs the daemon wake-ups.
constexpr double kMinTopIntervalS = 0.1;

void set_top_interval(TopState& s) {
  std::string text = s.args.value();
  double v = parse_seconds(s.args.option(), text);
  if (v < kMinTopIntervalS) {
    throw Error(s.args.option() + ": expected at least 0.1 seconds, got '" + text + "'");
  }
  s.opts.interval_s = v;
}

constexpr Option<TopState> kTopOptions[] = {
    {"d", set_top_interval},
    {"delay", set_top_interval},
    {"interval", set_top_interval},
    {"n", [](TopState& s) { s.opts.iterations = s.args.positive(); }},
    {"iterations", [](TopState& s) { s.opts.iterations = s.args.positive(); }},
    {"b", [](TopState& s) { s.opts.batch = true; }},
    {"batch", [](TopState& s) { s.opts.batch = true; }},
};

struct StopState {
  Args& args;
};

constexpr std::span<const Option<StopState>> kStopOptions{};

// Reads a subcommand's words, all of which must be options from `table`.
// Returns the answer when one is --help or --version.
template <typename State>
std::optional<Command> parse_subcommand_options(State& s, std::span<const Option<State>> table,
                                                std::string_view subcommand) {
  while (!s.args.done()) {
    const std::string& word = s.args.take();
    if (!looks_like_option(word)) {
      throw Error("unexpected argument '" + word + "' to 'jiffy " + std::string(subcommand) + "'");
    }
    OptionWord w = split_option(word);
    if (auto answer = answer_at_once(w.name)) return answer;
    const Option<State>* o = find_option(table, w.name);
    if (o == nullptr) throw_unknown_option(w.spelled);
    s.args.begin_option(std::move(w));
    o->handle(s);
    s.args.end_option();
  }
  return std::nullopt;
}

Command parse_daemon(const std::vector<std::string>& argv, EnvLookup env) {
  Args args(argv, 2);
  DaemonState s{args, {}};
  if (auto answer = parse_subcommand_options<DaemonState>(s, kDaemonOptions, "daemon")) {
    return *answer;
  }
  // Two ways of declaring the GPUs: which one would win is a guess.
  if (s.opts.gpus && !s.opts.gpu_names.empty()) {
    throw Error("--gpus and --gpu-names cannot be used together");
  }
  apply_history_env(s, env);
  apply_backfill_env(s, env);
  return DaemonCommand{std::move(s.opts)};
}

Command parse_status(const std::vector<std::string>& argv) {
  Args args(argv, 2);
  StatusState s{args};
  if (auto answer = parse_subcommand_options<StatusState>(s, kStatusOptions, "status")) {
    return *answer;
  }
  return StatusCommand{s.json};
}

Command parse_top(const std::vector<std::string>& argv) {
  Args args(argv, 2);
  TopState s{args, {}};
  if (auto answer = parse_subcommand_options<TopState>(s, kTopOptions, "top")) return *answer;
  return TopCommand{s.opts};
}

Command parse_stop(const std::vector<std::string>& argv) {
  Args args(argv, 2);
  StopState s{args};
  if (auto answer = parse_subcommand_options<StopState>(s, kStopOptions, "stop")) return *answer;
  return StopCommand{};
}

Command parse_resource_spec(const std::vector<std::string>& argv) {
  Args args(argv, 2);
  StopState s{args};  // no options either
  if (auto answer = parse_subcommand_options<StopState>(s, kStopOptions, "resource-spec")) return *answer;
  return ResourceSpecCommand{};
}

}  // namespace

Command parse_command_line(const std::vector<std::string>& argv, EnvLookup env) {
  if (argv.size() >= 2) {
    // Only the exact first word selects a subcommand, so `jiffy -n 1 status`
    // still runs a program called status.
    if (argv[1] == "daemon") return parse_daemon(argv, env);
    if (argv[1] == "status") return parse_status(argv);
    if (argv[1] == "top") return parse_top(argv);
    if (argv[1] == "stop") return parse_stop(argv);
    if (argv[1] == "resource-spec") return parse_resource_spec(argv);
    if (argv[1] == "history" || argv[1] == "report") {
      return ViewCommand{std::vector<std::string>(argv.begin() + 1, argv.end())};
    }
  }
  return parse_launch(argv, env);
}

}  // namespace jiffy
