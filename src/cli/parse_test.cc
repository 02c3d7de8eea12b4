#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "cli/command.h"
#include "util/error.h"

namespace jiffy {
namespace {

// EnvLookup is a plain function pointer, so the fake environment lives in a
// file-level map that each test sets through ScopedEnv.
std::map<std::string, std::string> g_fake_env;
int g_env_lookups = 0;

std::optional<std::string> fake_env(const char* name) {
  ++g_env_lookups;
  auto it = g_fake_env.find(name);
  if (it == g_fake_env.end()) return std::nullopt;
  return it->second;
}

class ScopedEnv {
 public:
  ScopedEnv(const std::string& name, const std::string& value) {
    g_fake_env = {{name, value}};
    g_env_lookups = 0;
  }
  ~ScopedEnv() { g_fake_env.clear(); }
};

Command parse(std::vector<std::string> words) {
  words.insert(words.begin(), "jiffy");
  return parse_command_line(words, fake_env);
}

LaunchOptions launch(const std::vector<std::string>& words) {
  Command c = parse(words);
  const LaunchCommand* l = std::get_if<LaunchCommand>(&c);
  if (l == nullptr) {
    ADD_FAILURE() << "not a launch";
    return {};
  }
  return l->options;
}

DaemonOptions daemon_opts(const std::vector<std::string>& words) {
  Command c = parse(words);
  const DaemonCommand* d = std::get_if<DaemonCommand>(&c);
  if (d == nullptr) {
    ADD_FAILURE() << "not a daemon command";
    return {};
  }
  return d->options;
}

// The message parse() throws, or "<no error>".
std::string error_of(const std::vector<std::string>& words) {
  try {
    parse(words);
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

using Words = std::vector<std::string>;

// --- Basic launches --------------------------------------------------------

TEST(Parse, FindMpiPattern) {
  LaunchOptions o = launch({"-n", "2", "./prog", "a", "b"});
  ASSERT_EQ(o.apps.size(), 1u);
  EXPECT_EQ(o.apps[0].ntasks, 2);
  EXPECT_EQ(o.apps[0].argv, (Words{"./prog", "a", "b"}));
  EXPECT_EQ(o.total_tasks(), 2);
}

TEST(Parse, PetscPattern) {
  LaunchOptions o = launch({"-n", "4", "./ex19", "-snes_monitor"});
  EXPECT_EQ(o.apps[0].ntasks, 4);
  EXPECT_EQ(o.apps[0].argv, (Words{"./ex19", "-snes_monitor"}));
}

TEST(Parse, Defaults) {
  LaunchOptions o = launch({"prog"});
  ASSERT_EQ(o.apps.size(), 1u);
  EXPECT_EQ(o.apps[0].ntasks, 1);  // not "all cores" as in hydra
  EXPECT_EQ(o.apps[0].argv, (Words{"prog"}));
  EXPECT_TRUE(o.apps[0].env.empty());
  EXPECT_FALSE(o.apps[0].wdir);
  EXPECT_FALSE(o.apps[0].env_base);
  EXPECT_EQ(o.cores_per_task, 1);
  EXPECT_EQ(o.gpus_per_task, 0);
  EXPECT_EQ(o.gpus_per_job, 0);
  EXPECT_EQ(o.bind, Bind::Core);
  EXPECT_EQ(o.env_base, EnvBase::All);
  EXPECT_TRUE(o.genv.empty());
  EXPECT_FALSE(o.wdir);
  EXPECT_EQ(o.label, Label::None);
  EXPECT_EQ(o.outfile_pattern, "");
  EXPECT_EQ(o.errfile_pattern, "");
  EXPECT_EQ(o.output_dir, "");
  EXPECT_EQ(o.timeout_s, 0);
  EXPECT_FALSE(o.oversubscribe_error);
  EXPECT_EQ(o.mpi, MpiMode::Auto);
  EXPECT_FALSE(o.verbose);
}

TEST(Parse, ProgramArgumentsThatLookLikeOptionsPassThrough) {
  Words args = {"-n", "3", "-genv", "A", "B", "--timeout", "5", "-h", "--version", "--", "-x"};
  Words words = {"-n", "2", "prog"};
  words.insert(words.end(), args.begin(), args.end());
  LaunchOptions o = launch(words);
  EXPECT_EQ(o.apps[0].ntasks, 2);
  Words expected = {"prog"};
  expected.insert(expected.end(), args.begin(), args.end());
  EXPECT_EQ(o.apps[0].argv, expected);
  EXPECT_TRUE(o.genv.empty());
  EXPECT_EQ(o.timeout_s, 0);
}

TEST(Parse, DoubleDashEndsOptions) {
  LaunchOptions o = launch({"-n", "2", "--", "-weird-name", "arg"});
  EXPECT_EQ(o.apps[0].argv, (Words{"-weird-name", "arg"}));
}

TEST(Parse, LoneDashIsAProgramWord) { EXPECT_EQ(launch({"-"}).apps[0].argv, (Words{"-"})); }

TEST(Parse, SubcommandNamesLaterAreProgramNames) {
  LaunchOptions o = launch({"-n", "1", "status", "stop"});
  EXPECT_EQ(o.apps[0].argv, (Words{"status", "stop"}));
}

TEST(Parse, HistoryAndReportArePassedOnWhole) {
  Command c = parse({"history", "--since", "1h", "--bogus"});
  ASSERT_TRUE(std::holds_alternative<ViewCommand>(c));
  EXPECT_EQ(std::get<ViewCommand>(c).args, (Words{"history", "--since", "1h", "--bogus"}));
  c = parse({"report", "-o", "r.html"});
  EXPECT_EQ(std::get<ViewCommand>(c).args, (Words{"report", "-o", "r.html"}));
  EXPECT_EQ(launch({"-n", "1", "history"}).apps[0].argv, (Words{"history"}));
}

// --- Counts ----------------------------------------------------------------

TEST(Parse, TaskCountSpellings) {
  for (const char* opt : {"-n", "-np", "--n", "--np"}) {
    EXPECT_EQ(launch({opt, "7", "prog"}).apps[0].ntasks, 7) << opt;
  }
}

TEST(Parse, CoresPerTaskSpellings) {
  for (const char* opt : {"-c", "--cpus-per-task", "-cpus-per-task", "--cpus-per-proc",
                          "-cpus-per-proc", "-cpus-per-rank", "--cpus-per-rank"}) {
    EXPECT_EQ(launch({opt, "3", "prog"}).cores_per_task, 3) << opt;
  }
}

TEST(Parse, GpusPerTaskSpellings) {
  for (const char* opt : {"-g", "--gpus-per-task", "-gpus-per-task", "--gpus-per-rank"}) {
    EXPECT_EQ(launch({opt, "2", "prog"}).gpus_per_task, 2) << opt;
  }
}

TEST(Parse, GpusPerJobSpellings) {
  for (const char* opt : {"-G", "--gpus", "-gpus"}) {
    EXPECT_EQ(launch({opt, "4", "prog"}).gpus_per_job, 4) << opt;
  }
}

TEST(Parse, GpuCountsMayBeZero) {
  LaunchOptions o = launch({"-g", "0", "-G", "0", "prog"});
  EXPECT_EQ(o.gpus_per_task, 0);
  EXPECT_EQ(o.gpus_per_job, 0);
}

TEST(Parse, EqualsFormForValues) {
  LaunchOptions o = launch({"--np=3", "--cpus-per-task=2", "--gpus=1", "--timeout=2.5",
                            "--bind-to=hwthread", "--mpi=pmix", "-wdir=/tmp", "prog"});
  EXPECT_EQ(o.apps[0].ntasks, 3);
  EXPECT_EQ(o.cores_per_task, 2);
  EXPECT_EQ(o.gpus_per_job, 1);
  EXPECT_DOUBLE_EQ(o.timeout_s, 2.5);
  EXPECT_EQ(o.bind, Bind::HwThread);
  EXPECT_EQ(o.mpi, MpiMode::Pmix);
  EXPECT_EQ(o.wdir, "/tmp");
}

TEST(Parse, BadCountsAreRejected) {
  EXPECT_EQ(error_of({"-n", "abc", "prog"}), "-n: expected a positive integer, got 'abc'");
  EXPECT_EQ(error_of({"-n", "0", "prog"}), "-n: expected a positive integer, got '0'");
  EXPECT_EQ(error_of({"-np", "-2", "prog"}), "-np: expected a positive integer, got '-2'");
  EXPECT_EQ(error_of({"-n", "4x", "prog"}), "-n: expected a positive integer, got '4x'");
  EXPECT_EQ(error_of({"-n", " 4", "prog"}), "-n: expected a positive integer, got ' 4'");
  EXPECT_EQ(error_of({"-n", "", "prog"}), "-n: expected a positive integer, got ''");
  EXPECT_EQ(error_of({"-n", "99999999999999999999", "prog"}),
            "-n: expected a positive integer, got '99999999999999999999'");
  EXPECT_EQ(error_of({"--np=x", "prog"}), "--np: expected a positive integer, got 'x'");
  EXPECT_EQ(error_of({"-c", "0", "prog"}), "-c: expected a positive integer, got '0'");
  EXPECT_EQ(error_of({"-g", "-1", "prog"}), "-g: expected a non-negative integer, got '-1'");
  EXPECT_EQ(error_of({"-G", "two", "prog"}), "-G: expected a non-negative integer, got 'two'");
  EXPECT_EQ(error_of({"-ppn", "0", "prog"}), "-ppn: expected a positive integer, got '0'");
}

TEST(Parse, MissingValue) {
  EXPECT_EQ(error_of({"-n"}), "-n: missing value");
  EXPECT_EQ(error_of({"--timeout"}), "--timeout: missing value");
  EXPECT_EQ(error_of({"-genv", "A"}), "-genv: missing value");
  EXPECT_EQ(error_of({"--mca", "btl"}), "--mca: missing value");
}

TEST(Parse, UnknownOption) {
  EXPECT_EQ(error_of({"-foo", "prog"}), "unknown option '-foo' (see jiffy --help)");
  EXPECT_EQ(error_of({"--foo=1", "prog"}), "unknown option '--foo' (see jiffy --help)");
  EXPECT_EQ(error_of({"---n", "2", "prog"}), "unknown option '---n' (see jiffy --help)");
}

TEST(Parse, TotalRanksFitAnInt) {  // found by fuzz/command_line_fuzzer.cc
  EXPECT_EQ(error_of({"-n", "2000000000", "a", ":", "-n", "2000000000", "b"}),
            "too many ranks in all: 4000000000");
}

TEST(Parse, NoProgram) {
  EXPECT_EQ(error_of({}), "no program to run (usage: jiffy -n N program [args])");
  EXPECT_EQ(error_of({"-n", "2"}), "no program to run (usage: jiffy -n N program [args])");
  EXPECT_EQ(error_of({"-n", "2", "--"}), "no program to run (usage: jiffy -n N program [args])");
}

TEST(Parse, EmptyArgv) { EXPECT_THROW(parse_command_line({}, fake_env), Error); }

TEST(Parse, FlagWithValueIsRejected) {
  EXPECT_EQ(error_of({"--verbose=1", "prog"}), "--verbose: takes no value");
}

// --- MPMD ------------------------------------------------------------------

TEST(Parse, MpmdGroupsWithOwnCountsAndEnv) {
  LaunchOptions o = launch({"-genv", "G",   "1", "-n",   "2", "-env", "A",     "x",  "./a", "-v",
                            ":",     "-np", "3", "-env", "B", "y",    "-wdir", "/w", "./b", "arg"});
  ASSERT_EQ(o.apps.size(), 2u);
  EXPECT_EQ(o.apps[0].ntasks, 2);
  EXPECT_EQ(o.apps[0].argv, (Words{"./a", "-v"}));
  EXPECT_EQ(o.apps[0].env, (std::vector<EnvSetting>{{"A", "x"}}));
  EXPECT_FALSE(o.apps[0].wdir);
  EXPECT_EQ(o.apps[1].ntasks, 3);
  EXPECT_EQ(o.apps[1].argv, (Words{"./b", "arg"}));
  EXPECT_EQ(o.apps[1].env, (std::vector<EnvSetting>{{"B", "y"}}));
  EXPECT_EQ(o.apps[1].wdir, "/w");
  EXPECT_EQ(o.genv, (std::vector<EnvSetting>{{"G", "1"}}));
  EXPECT_FALSE(o.verbose);  // "-v" belonged to ./a
  EXPECT_EQ(o.total_tasks(), 5);
}

TEST(Parse, MpmdThreeGroupsDefaultCounts) {
  LaunchOptions o = launch({"a", ":", "b", ":", "-n", "2", "c"});
  ASSERT_EQ(o.apps.size(), 3u);
  EXPECT_EQ(o.apps[0].ntasks, 1);
  EXPECT_EQ(o.apps[1].ntasks, 1);
  EXPECT_EQ(o.apps[2].ntasks, 2);
  EXPECT_EQ(o.apps[2].argv, (Words{"c"}));
}

TEST(Parse, MpmdEmptyGroups) {
  EXPECT_EQ(error_of({":", "b"}), "no program before ':' (usage: jiffy -n N program [args])");
  EXPECT_EQ(error_of({"a", ":", ":", "b"}),
            "no program before ':' (usage: jiffy -n N program [args])");
  EXPECT_EQ(error_of({"a", ":"}), "no program after ':' (usage: jiffy -n N program [args])");
  EXPECT_EQ(error_of({"a", ":", "-n", "2"}),
            "no program after ':' (usage: jiffy -n N program [args])");
}

TEST(Parse, GlobalOptionsOnlyInFirstGroup) {
  EXPECT_EQ(error_of({"a", ":", "-genv", "A", "1", "b"}),
            "-genv applies to the whole job; give it before the first ':'");
  EXPECT_EQ(error_of({"a", ":", "-c", "2", "b"}),
            "-c applies to the whole job; give it before the first ':'");
  EXPECT_EQ(error_of({"a", ":", "--timeout", "2", "b"}),
            "--timeout applies to the whole job; give it before the first ':'");
}

TEST(Parse, WdirXAndMcaAreGlobalFirstAndPerGroupLater) {
  LaunchOptions o = launch({"-wdir", "/g", "-x", "A=1", "--mca", "btl", "self", "a", ":", "-wd",
                            "/l", "-x", "B", "-mca", "k", "v", "b"});
  EXPECT_EQ(o.wdir, "/g");
  EXPECT_EQ(o.genv, (std::vector<EnvSetting>{{"A", "1"}, {"OMPI_MCA_btl", "self"}}));
  EXPECT_TRUE(o.apps[0].env.empty());
  EXPECT_FALSE(o.apps[0].wdir);
  EXPECT_EQ(o.apps[1].wdir, "/l");
  EXPECT_EQ(o.apps[1].env, (std::vector<EnvSetting>{{"B", std::nullopt}, {"OMPI_MCA_k", "v"}}));
}

// --- Binding and mapping ---------------------------------------------------

TEST(Parse, BindToValues) {
  struct Case {
    const char* value;
    Bind bind;
  };
  for (Case c :
       {Case{"none", Bind::None}, Case{"core", Bind::Core}, Case{"hwthread", Bind::HwThread},
        Case{"core:1", Bind::Core}, Case{"hwthread:1", Bind::HwThread}, Case{"socket", Bind::Core},
        Case{"numa", Bind::Core}, Case{"package", Bind::Core}, Case{"l3cache", Bind::Core},
        Case{"CORE", Bind::Core}, Case{"core:overload-allowed", Bind::Core},
        Case{"hwthread:if-supported", Bind::HwThread}}) {
    for (const char* opt : {"-bind-to", "--bind-to"}) {
      EXPECT_EQ(launch({opt, c.value, "prog"}).bind, c.bind) << opt << " " << c.value;
    }
  }
}

TEST(Parse, BindToBadValues) {
  EXPECT_EQ(error_of({"-bind-to", "pu", "prog"}),
            "-bind-to: unsupported binding 'pu' (expected none, core or hwthread)");
  EXPECT_EQ(error_of({"-bind-to", "user:0,1", "prog"}),
            "-bind-to: unsupported binding 'user:0,1' (expected none, core or hwthread)");
  EXPECT_EQ(error_of({"-bind-to", "core:2", "prog"}),
            "-bind-to: counts other than 1 ('core:2') are not supported; use -c N to give each "
            "rank N cores");
  EXPECT_EQ(error_of({"-bind-to", "core:0", "prog"}), "-bind-to: unsupported binding 'core:0'");
  EXPECT_EQ(error_of({"-bind-to", "core:", "prog"}), "-bind-to: unsupported binding 'core:'");
}

TEST(Parse, MapByAcceptedAndIgnored) {
  for (const char* value : {"core", "slot", "node", "socket", "numa", "hwthread", "package",
                            "l2cache", "ppr:2:socket", "core:span", "SLOT"}) {
    for (const char* opt : {"-map-by", "--map-by"}) {
      LaunchOptions o = launch({opt, value, "prog"});
      EXPECT_EQ(o.cores_per_task, 1) << opt << " " << value;
      EXPECT_EQ(o.bind, Bind::Core) << opt << " " << value;
    }
  }
}

TEST(Parse, MapByQualifiersThatChangeTheRequest) {
  EXPECT_EQ(launch({"--map-by", "socket:PE=4", "prog"}).cores_per_task, 4);
  EXPECT_TRUE(launch({"--map-by", "core:nooversubscribe", "prog"}).oversubscribe_error);
  EXPECT_FALSE(
      launch({"--no-oversubscribe", "--map-by", "slot:oversubscribe", "prog"}).oversubscribe_error);
}

TEST(Parse, MapByBadValues) {
  const std::string expected =
      "' (expected slot, core, hwthread, socket, numa, node or ppr:N:level)";
  EXPECT_EQ(error_of({"-map-by", "diagonal", "prog"}),
            "-map-by: unsupported mapping 'diagonal" + expected);
  EXPECT_EQ(error_of({"-map-by", "core:bogus", "prog"}),
            "-map-by: unsupported mapping 'core:bogus" + expected);
  EXPECT_EQ(error_of({"-map-by", "ppr:2", "prog"}),
            "-map-by: unsupported mapping 'ppr:2" + expected);
  EXPECT_EQ(error_of({"-map-by", "ppr:x:core", "prog"}),
            "-map-by ppr: expected a positive integer, got 'x'");
  EXPECT_EQ(error_of({"-map-by", "slot:PE=0", "prog"}),
            "-map-by PE: expected a positive integer, got '0'");
}

TEST(Parse, Oversubscribe) {
  for (const char* opt : {"--oversubscribe", "-oversubscribe"}) {
    EXPECT_FALSE(launch({opt, "prog"}).oversubscribe_error) << opt;
  }
  for (const char* opt : {"--no-oversubscribe", "--nooversubscribe", "-nooversubscribe"}) {
    EXPECT_TRUE(launch({opt, "prog"}).oversubscribe_error) << opt;
  }
}

// --- Environment -----------------------------------------------------------

TEST(Parse, GenvInOrder) {
  LaunchOptions o = launch({"-genv", "A", "1", "-genv", "B=2", "--genv", "C", "x=y", "prog"});
  EXPECT_EQ(o.genv, (std::vector<EnvSetting>{{"A", "1"}, {"B", "2"}, {"C", "x=y"}}));
  EXPECT_EQ(o.env_base, EnvBase::All);
}

TEST(Parse, GenvEmptyValue) {
  EXPECT_EQ(launch({"-genv", "A", "", "prog"}).genv, (std::vector<EnvSetting>{{"A", ""}}));
  EXPECT_EQ(launch({"-genv", "A=", "prog"}).genv, (std::vector<EnvSetting>{{"A", ""}}));
}

TEST(Parse, GenvBadName) {
  EXPECT_EQ(error_of({"-genv", "=1", "prog"}),
            "-genv: expected an environment variable name, got ''");
  EXPECT_EQ(error_of({"-x", "", "prog"}), "-x: expected an environment variable name, got ''");
}

TEST(Parse, GenvlistPassesOnlyThese) {
  LaunchOptions o = launch({"-genvlist", "PATH,HOME", "prog"});
  EXPECT_EQ(o.env_base, EnvBase::None);
  EXPECT_EQ(o.genv, (std::vector<EnvSetting>{{"PATH", std::nullopt}, {"HOME", std::nullopt}}));
}

TEST(Parse, GenvlistBadList) {
  EXPECT_EQ(error_of({"-genvlist", ",", "prog"}),
            "-genvlist: expected a comma-separated list, got ','");
}

TEST(Parse, GenvallAndGenvnone) {
  EXPECT_EQ(launch({"-genvnone", "prog"}).env_base, EnvBase::None);
  EXPECT_EQ(launch({"-genvnone", "-genvall", "prog"}).env_base, EnvBase::All);
  EXPECT_EQ(launch({"--genvall", "prog"}).env_base, EnvBase::All);
}

TEST(Parse, PerGroupEnvOptions) {
  LaunchOptions o = launch(
      {"-envlist", "A,B", "a", ":", "-envnone", "b", ":", "-envnone", "-envall", "c", ":", "d"});
  ASSERT_EQ(o.apps.size(), 4u);
  EXPECT_EQ(o.apps[0].env_base, EnvBase::None);
  EXPECT_EQ(o.apps[0].env, (std::vector<EnvSetting>{{"A", std::nullopt}, {"B", std::nullopt}}));
  EXPECT_EQ(o.apps[1].env_base, EnvBase::None);
  EXPECT_EQ(o.apps[2].env_base, EnvBase::All);
  EXPECT_FALSE(o.apps[3].env_base);
  EXPECT_EQ(o.env_base, EnvBase::All);
  EXPECT_TRUE(o.genv.empty());
}

TEST(Parse, OpenMpiX) {
  LaunchOptions o = launch({"-x", "A=1", "-x", "PATH", "--x", "B=", "-x", "C=a=b", "prog"});
  EXPECT_EQ(o.genv,
            (std::vector<EnvSetting>{{"A", "1"}, {"PATH", std::nullopt}, {"B", ""}, {"C", "a=b"}}));
}

TEST(Parse, Mca) {
  for (const char* opt : {"--mca", "-mca"}) {
    EXPECT_EQ(launch({opt, "btl", "self,vader", "prog"}).genv,
              (std::vector<EnvSetting>{{"OMPI_MCA_btl", "self,vader"}}))
        << opt;
  }
  // Found by fuzz/command_line_fuzzer.cc: a key with '=' made a second
  // OMPI_MCA_btl entry in the ranks' environment.
  EXPECT_EQ(error_of({"--mca", "btl=self", "x", "prog"}), "--mca: expected a parameter name, got 'btl=self'");
}

TEST(Parse, WdirSpellings) {
  for (const char* opt : {"-wdir", "--wdir", "-wd", "--wd"}) {
    EXPECT_EQ(launch({opt, "/some/dir", "prog"}).wdir, "/some/dir") << opt;
  }
  EXPECT_EQ(error_of({"-wdir", "", "prog"}), "-wdir: expected a directory, got ''");
}

// --- Output ----------------------------------------------------------------

TEST(Parse, LabelSpellings) {
  for (const char* opt : {"-l", "-prepend-rank", "--prepend-rank"}) {
    EXPECT_EQ(launch({opt, "prog"}).label, Label::Rank) << opt;
  }
  for (const char* opt : {"--tag-output", "-tag-output"}) {
    EXPECT_EQ(launch({opt, "prog"}).label, Label::Tag) << opt;
  }
}

TEST(Parse, OutputFiles) {
  LaunchOptions o = launch({"-outfile-pattern", "out.%r", "-errfile-pattern", "err.%r",
                            "--output-filename", "logs", "prog"});
  EXPECT_EQ(o.outfile_pattern, "out.%r");
  EXPECT_EQ(o.errfile_pattern, "err.%r");
  EXPECT_EQ(o.output_dir, "logs");
  EXPECT_EQ(error_of({"-outfile-pattern", "", "prog"}),
            "-outfile-pattern: expected a non-empty value, got ''");
}

TEST(Parse, VerboseSpellings) {
  for (const char* opt : {"-v", "--verbose", "-verbose", "--report-bindings"}) {
    EXPECT_TRUE(launch({opt, "prog"}).verbose) << opt;
  }
}

// --- Timeout ---------------------------------------------------------------

TEST(Parse, TimeoutSpellings) {
  for (const char* opt : {"-timeout", "--timeout"}) {
    EXPECT_DOUBLE_EQ(launch({opt, "30", "prog"}).timeout_s, 30) << opt;
    EXPECT_DOUBLE_EQ(launch({opt, "0.5", "prog"}).timeout_s, 0.5) << opt;
  }
  EXPECT_DOUBLE_EQ(launch({"-timeout", "0", "prog"}).timeout_s, 0);
}

TEST(Parse, TimeoutBadValues) {
  for (const char* bad : {"abc", "-1", "", "1e3", "inf", "nan", "5s", " 5"}) {
    EXPECT_EQ(error_of({"-timeout", bad, "prog"}),
              std::string("-timeout: expected a number of seconds, got '") + bad + "'");
  }
}

TEST(Parse, RankSpeedUpsAreOnByDefault) {
  LaunchOptions o = launch({"-n", "2", "prog"});
  EXPECT_TRUE(o.topology_cache);
  EXPECT_TRUE(o.ucx_shm);
  EXPECT_TRUE(o.single_node_ompi);
}

TEST(Parse, RankSpeedUpsTurnedOffByOptionOrVariable) {
  EXPECT_FALSE(launch({"--no-topology-cache", "prog"}).topology_cache);
  EXPECT_FALSE(launch({"--no-ucx-shm", "prog"}).ucx_shm);
  EXPECT_FALSE(launch({"--no-single-node-ompi", "prog"}).single_node_ompi);
  {
    ScopedEnv single("JIFFY_SINGLE_NODE_OMPI", "0");
    EXPECT_FALSE(launch({"prog"}).single_node_ompi);
    EXPECT_TRUE(launch({"--single-node-ompi", "prog"}).single_node_ompi);
  }
  {
    ScopedEnv cache("JIFFY_TOPOLOGY_CACHE", "0");
    EXPECT_FALSE(launch({"prog"}).topology_cache);
    EXPECT_TRUE(launch({"prog"}).ucx_shm);
  }
  ScopedEnv ucx("JIFFY_UCX_SHM", "0");
  EXPECT_FALSE(launch({"prog"}).ucx_shm);
}

TEST(Parse, RankSpeedUpOptionBeatsVariable) {
  {
    ScopedEnv cache("JIFFY_TOPOLOGY_CACHE", "0");
    EXPECT_TRUE(launch({"--topology-cache", "prog"}).topology_cache);
  }
  ScopedEnv ucx("JIFFY_UCX_SHM", "1");
  EXPECT_FALSE(launch({"--no-ucx-shm", "prog"}).ucx_shm);
}

TEST(Parse, RankSpeedUpVariableMustBeZeroOrOne) {
  ScopedEnv ucx("JIFFY_UCX_SHM", "yes");
  EXPECT_EQ(error_of({"prog"}), "JIFFY_UCX_SHM: expected 0 or 1, got 'yes'");
}

TEST(Parse, TimeoutFromEnvironment) {
  ScopedEnv env("MPIEXEC_TIMEOUT", "60");
  EXPECT_DOUBLE_EQ(launch({"-n", "2", "prog"}).timeout_s, 60);
}

TEST(Parse, TimeoutOptionOverridesEnvironment) {
  ScopedEnv env("MPIEXEC_TIMEOUT", "60");
  EXPECT_DOUBLE_EQ(launch({"-timeout", "5", "prog"}).timeout_s, 5);
}

TEST(Parse, TimeoutOptionOverridesBadEnvironment) {
  ScopedEnv env("MPIEXEC_TIMEOUT", "soon");
  EXPECT_DOUBLE_EQ(launch({"--timeout", "5", "prog"}).timeout_s, 5);
}

TEST(Parse, TimeoutBadEnvironmentNamesTheVariable) {
  ScopedEnv env("MPIEXEC_TIMEOUT", "soon");
  EXPECT_EQ(error_of({"prog"}), "MPIEXEC_TIMEOUT: expected a number of seconds, got 'soon'");
}

TEST(Parse, TimeoutEmptyEnvironmentIsUnset) {
  ScopedEnv env("MPIEXEC_TIMEOUT", "");
  EXPECT_DOUBLE_EQ(launch({"prog"}).timeout_s, 0);
}

TEST(Parse, EnvironmentNotReadForOtherCommands) {
  ScopedEnv env("MPIEXEC_TIMEOUT", "soon");
  EXPECT_TRUE(std::holds_alternative<HelpCommand>(parse({"--help"})));
  EXPECT_TRUE(std::holds_alternative<StopCommand>(parse({"stop"})));
  EXPECT_EQ(g_env_lookups, 0);
}

TEST(Parse, NullEnvLookupIsAllowed) {
  Command c = parse_command_line({"jiffy", "prog"}, nullptr);
  ASSERT_TRUE(std::holds_alternative<LaunchCommand>(c));
  EXPECT_EQ(std::get<LaunchCommand>(c).options.timeout_s, 0);
}

// --- MPI mode --------------------------------------------------------------

TEST(Parse, MpiMode) {
  struct Case {
    const char* value;
    MpiMode mode;
  };
  for (Case c : {Case{"auto", MpiMode::Auto}, Case{"pmi1", MpiMode::Pmi1},
                 Case{"pmix", MpiMode::Pmix}, Case{"none", MpiMode::None}}) {
    EXPECT_EQ(launch({"--mpi", c.value, "prog"}).mpi, c.mode) << c.value;
    EXPECT_EQ(launch({std::string("--mpi=") + c.value, "prog"}).mpi, c.mode) << c.value;
  }
  EXPECT_EQ(error_of({"--mpi=pmi2", "prog"}),
            "--mpi: expected auto, pmi1, pmix or none, got 'pmi2'");
}

// --- Compatibility ---------------------------------------------------------

TEST(Parse, HarmlessOptionsAreAccepted) {
  LaunchOptions o = launch({"-ppn",
                            "4",
                            "-hosts",
                            "localhost",
                            "-host",
                            "a,b",
                            "--host",
                            "localhost:4",
                            "-H",
                            "localhost",
                            "-f",
                            "hosts.txt",
                            "-machinefile",
                            "m",
                            "--hostfile",
                            "h",
                            "-launcher",
                            "fork",
                            "-rmk",
                            "user",
                            "--display-map",
                            "-print-all-exitcodes",
                            "--allow-run-as-root",
                            "-n",
                            "2",
                            "prog"});
  EXPECT_EQ(o.apps[0].ntasks, 2);
  EXPECT_EQ(o.apps[0].argv, (Words{"prog"}));
  EXPECT_TRUE(o.genv.empty());
}

TEST(Parse, HostIsAllowedInLaterGroups) {
  EXPECT_EQ(launch({"a", ":", "--host", "localhost", "b"}).apps.size(), 2u);
}

TEST(Parse, UnsupportedOptionsAreRefused) {
  EXPECT_EQ(error_of({"-disable-auto-cleanup", "prog"}),
            "-disable-auto-cleanup is not supported by jiffy");
  EXPECT_EQ(error_of({"-configfile", "f"}),
            "-configfile is not supported; separate the groups with ':' instead");
}

TEST(Parse, LastSettingWins) {
  LaunchOptions o = launch({"-n", "2", "-n", "3", "-bind-to", "none", "--bind-to", "core", "-l",
                            "--tag-output", "prog"});
  EXPECT_EQ(o.apps[0].ntasks, 3);
  EXPECT_EQ(o.bind, Bind::Core);
  EXPECT_EQ(o.label, Label::Tag);
}

// --- Help and version -----------------------------------------------------

TEST(Parse, HelpSpellings) {
  for (const char* opt : {"--help", "-h", "-help"}) {
    EXPECT_TRUE(std::holds_alternative<HelpCommand>(parse({opt}))) << opt;
    EXPECT_TRUE(std::holds_alternative<HelpCommand>(parse({"-n", "2", opt, "prog"}))) << opt;
  }
}

TEST(Parse, HelpAllAsPetscConfigureAsks) {
  EXPECT_TRUE(std::holds_alternative<HelpCommand>(parse({"-help", "all"})));
}

TEST(Parse, HelpWinsOverLaterErrors) {
  EXPECT_TRUE(std::holds_alternative<HelpCommand>(parse({"--help", "-n", "zero", "-bogus"})));
}

TEST(Parse, VersionSpellings) {
  for (const char* opt : {"--version", "-V", "-version"}) {
    EXPECT_TRUE(std::holds_alternative<VersionCommand>(parse({opt}))) << opt;
    EXPECT_TRUE(std::holds_alternative<VersionCommand>(parse({"-n", "2", opt}))) << opt;
  }
}

TEST(Parse, HelpAfterProgramBelongsToProgram) {
  LaunchOptions o = launch({"prog", "--help"});
  EXPECT_EQ(o.apps[0].argv, (Words{"prog", "--help"}));
}

TEST(Parse, HelpInSubcommands) {
  EXPECT_TRUE(std::holds_alternative<HelpCommand>(parse({"daemon", "--help"})));
  EXPECT_TRUE(std::holds_alternative<HelpCommand>(parse({"status", "-h"})));
  EXPECT_TRUE(std::holds_alternative<VersionCommand>(parse({"stop", "--version"})));
}

TEST(Parse, HelpTextListsWhatIsParsed) {
  const std::string text = help_text();
  for (const char* s : {"Usage: jiffy",
                        "daemon",
                        "status",
                        "top [-d S]",
                        "--iterations",
                        "--batch",
                        "stop",
                        "-np",
                        "--cpus-per-task",
                        "--gpus-per-task",
                        "-bind-to",
                        "-map-by",
                        "--oversubscribe",
                        "--no-oversubscribe",
                        "-genv",
                        "-genvlist",
                        "-genvnone",
                        "-genvall",
                        "-env",
                        "-envlist",
                        "-x NAME",
                        "--mca",
                        "-wdir",
                        "-prepend-rank",
                        "--tag-output",
                        "-outfile-pattern",
                        "-errfile-pattern",
                        "--output-filename",
                        "-timeout",
                        "--mpi",
                        "-ppn",
                        "--hostfile",
                        "--allow-run-as-root",
                        "--idle-timeout",
                        "--max-oversubscribe",
                        "--gpu-names",
                        "--hyperthreads",
                        "--slots-per-core",
                        "--foreground",
                        "APPLICATION TIMED OUT",
                        "128+S",
                        "255",
                        "127",
                        "MPIEXEC_TIMEOUT",
                        "JIFFY_RUNTIME_DIR",
                        "Placement",
                        "Environment",
                        "Output",
                        "Failure handling",
                        "Compatibility",
                        "Exit status"}) {
    EXPECT_NE(text.find(s), std::string::npos) << s;
  }
}

TEST(Parse, HelpTextFitsEightyColumns) {
  const std::string text = help_text();
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    EXPECT_LE(end - start, 80u) << text.substr(start, end - start);
    start = end + 1;
  }
}

// --- Subcommands -----------------------------------------------------------

TEST(Parse, DaemonDefaults) {
  DaemonOptions d = daemon_opts({"daemon"});
  EXPECT_FALSE(d.cores);
  EXPECT_FALSE(d.gpus);
  EXPECT_TRUE(d.gpu_names.empty());
  EXPECT_EQ(d.slots_per_core, 1);
  EXPECT_FALSE(d.hyperthreads);
  EXPECT_EQ(d.max_oversubscribe, 8);
  EXPECT_DOUBLE_EQ(d.idle_timeout_s, 60);
  EXPECT_FALSE(d.foreground);
  EXPECT_FALSE(d.detached_child);
  EXPECT_TRUE(d.history);
  EXPECT_EQ(d.history_keep_jobs, 1000000);
  EXPECT_EQ(d.history_keep_days, 90);
  EXPECT_TRUE(d.backfill);
  EXPECT_DOUBLE_EQ(d.backfill_slack, 1);
}

TEST(Parse, DaemonBackfillOptions) {
  DaemonOptions d = daemon_opts({"daemon", "--backfill=off", "--backfill-slack", "2.5"});
  EXPECT_FALSE(d.backfill);
  EXPECT_DOUBLE_EQ(d.backfill_slack, 2.5);
  EXPECT_DOUBLE_EQ(daemon_opts({"daemon", "--backfill-slack=0"}).backfill_slack, 0);
  EXPECT_EQ(error_of({"daemon", "--backfill-slack=-1"}),
            "--backfill-slack: expected a number from 0 to 10, got '-1'");
  EXPECT_EQ(error_of({"daemon", "--backfill-slack=11"}),
            "--backfill-slack: expected a number from 0 to 10, got '11'");
  EXPECT_EQ(error_of({"daemon", "--backfill-slack=lots"}),
            "--backfill-slack: expected a number from 0 to 10, got 'lots'");
  {
    ScopedEnv e("JIFFY_BACKFILL_SLACK", "0.5");
    EXPECT_DOUBLE_EQ(daemon_opts({"daemon"}).backfill_slack, 0.5);
    EXPECT_DOUBLE_EQ(daemon_opts({"daemon", "--backfill-slack=3"}).backfill_slack, 3);
  }
  {
    ScopedEnv e("JIFFY_BACKFILL_SLACK", "nan");
    EXPECT_EQ(error_of({"daemon"}), "JIFFY_BACKFILL_SLACK: expected a number from 0 to 10, got 'nan'");
  }
  {
    ScopedEnv e("JIFFY_BACKFILL", "0");
    EXPECT_FALSE(daemon_opts({"daemon"}).backfill);
    EXPECT_TRUE(daemon_opts({"daemon", "--backfill=on"}).backfill);
  }
}

TEST(Parse, DaemonHistoryOptions) {
  DaemonOptions d = daemon_opts({"daemon", "--history=off", "--history-keep-jobs", "10",
                                 "--history-keep-days=3"});
  EXPECT_FALSE(d.history);
  EXPECT_EQ(d.history_keep_jobs, 10);
  EXPECT_EQ(d.history_keep_days, 3);
  EXPECT_TRUE(daemon_opts({"daemon", "--history", "on"}).history);
  EXPECT_EQ(error_of({"daemon", "--history=maybe"}), "--history: expected on or off, got 'maybe'");
  EXPECT_EQ(error_of({"daemon", "--history-keep-jobs", "0"}),
            "--history-keep-jobs: expected a positive integer, got '0'");
}

TEST(Parse, DaemonHistoryFromEnvironmentUnlessGiven) {
  {
    ScopedEnv e("JIFFY_HISTORY", "0");
    EXPECT_FALSE(daemon_opts({"daemon"}).history);
    EXPECT_TRUE(daemon_opts({"daemon", "--history=on"}).history);
  }
  {
    ScopedEnv e("JIFFY_HISTORY_KEEP_JOBS", "5");
    EXPECT_EQ(daemon_opts({"daemon"}).history_keep_jobs, 5);
    EXPECT_EQ(daemon_opts({"daemon", "--history-keep-jobs", "7"}).history_keep_jobs, 7);
  }
  {
    ScopedEnv e("JIFFY_HISTORY_KEEP_DAYS", "x");
    EXPECT_EQ(error_of({"daemon"}), "JIFFY_HISTORY_KEEP_DAYS: expected a positive integer, got 'x'");
  }
  {
    ScopedEnv e("JIFFY_HISTORY", "yes");
    EXPECT_EQ(error_of({"daemon"}), "JIFFY_HISTORY: expected 0 or 1, got 'yes'");
  }
}

TEST(Parse, DaemonOptions) {
  DaemonOptions d = daemon_opts({"daemon", "--cores", "8", "--gpus=2", "--slots-per-core", "2",
                                 "--hyperthreads", "--max-oversubscribe", "4", "--idle-timeout",
                                 "0", "--foreground", "--detached-child"});
  EXPECT_EQ(d.cores, 8);
  EXPECT_EQ(d.gpus, 2);
  EXPECT_EQ(d.slots_per_core, 2);
  EXPECT_TRUE(d.hyperthreads);
  EXPECT_EQ(d.max_oversubscribe, 4);
  EXPECT_DOUBLE_EQ(d.idle_timeout_s, 0);
  EXPECT_TRUE(d.foreground);
  EXPECT_TRUE(d.detached_child);
}

TEST(Parse, DaemonGpuNames) {
  EXPECT_EQ(daemon_opts({"daemon", "--gpu-names", "a,b,c"}).gpu_names, (Words{"a", "b", "c"}));
  EXPECT_EQ(daemon_opts({"daemon", "--gpus", "0"}).gpus, 0);
  EXPECT_EQ(error_of({"daemon", "--gpu-names", "a,a"}), "--gpu-names: GPU 'a' named twice");
  EXPECT_EQ(error_of({"daemon", "--gpus", "2", "--gpu-names", "a,b"}),
            "--gpus and --gpu-names cannot be used together");
}

TEST(Parse, DaemonErrors) {
  EXPECT_EQ(error_of({"daemon", "--cores", "0"}), "--cores: expected a positive integer, got '0'");
  EXPECT_EQ(error_of({"daemon", "--gpus", "-1"}),
            "--gpus: expected a non-negative integer, got '-1'");
  EXPECT_EQ(error_of({"daemon", "--slots-per-core"}), "--slots-per-core: missing value");
  EXPECT_EQ(error_of({"daemon", "--idle-timeout", "-5"}),
            "--idle-timeout: expected a number of seconds, got '-5'");
  EXPECT_EQ(error_of({"daemon", "--bogus"}), "unknown option '--bogus' (see jiffy --help)");
  EXPECT_EQ(error_of({"daemon", "extra"}), "unexpected argument 'extra' to 'jiffy daemon'");
  EXPECT_EQ(error_of({"daemon", "-n", "2"}), "unknown option '-n' (see jiffy --help)");
}

TEST(Parse, Status) {
  Command plain = parse({"status"});
  ASSERT_TRUE(std::holds_alternative<StatusCommand>(plain));
  EXPECT_FALSE(std::get<StatusCommand>(plain).json);
  Command json = parse({"status", "--json"});
  ASSERT_TRUE(std::holds_alternative<StatusCommand>(json));
  EXPECT_TRUE(std::get<StatusCommand>(json).json);
  EXPECT_EQ(error_of({"status", "--json=yes"}), "--json: takes no value");
  EXPECT_EQ(error_of({"status", "all"}), "unexpected argument 'all' to 'jiffy status'");
}

TopOptions top_opts(const std::vector<std::string>& words) {
  Command c = parse(words);
  const TopCommand* t = std::get_if<TopCommand>(&c);
  if (t == nullptr) {
    ADD_FAILURE() << "not a top command";
    return {};
  }
  return t->options;
}

TEST(Parse, TopDefaultsRefreshTwiceASecondUntilQuit) {
  TopOptions o = top_opts({"top"});
  EXPECT_DOUBLE_EQ(o.interval_s, 0.5);
  EXPECT_EQ(o.iterations, 0);
  EXPECT_FALSE(o.batch);
}

TEST(Parse, TopOptionsInEverySpelling) {
  EXPECT_DOUBLE_EQ(top_opts({"top", "-d", "2"}).interval_s, 2);
  EXPECT_DOUBLE_EQ(top_opts({"top", "--delay=0.25"}).interval_s, 0.25);
  EXPECT_DOUBLE_EQ(top_opts({"top", "--interval", "1.5"}).interval_s, 1.5);
  EXPECT_EQ(top_opts({"top", "-n", "3"}).iterations, 3);
  EXPECT_EQ(top_opts({"top", "--iterations=7"}).iterations, 7);
  EXPECT_TRUE(top_opts({"top", "-b"}).batch);
  TopOptions all = top_opts({"top", "--batch", "-n", "1", "-d", "0.1"});
  EXPECT_TRUE(all.batch);
  EXPECT_EQ(all.iterations, 1);
  EXPECT_DOUBLE_EQ(all.interval_s, 0.1);
}

TEST(Parse, TopBadValuesAreOneLineErrors) {
  EXPECT_EQ(error_of({"top", "-d", "0.05"}), "-d: expected at least 0.1 seconds, got '0.05'");
  EXPECT_EQ(error_of({"top", "-d", "0"}), "-d: expected at least 0.1 seconds, got '0'");
  EXPECT_EQ(error_of({"top", "--interval", "fast"}),
            "--interval: expected a number of seconds, got 'fast'");
  EXPECT_EQ(error_of({"top", "-d"}), "-d: missing value");
  EXPECT_EQ(error_of({"top", "-n", "0"}), "-n: expected a positive integer, got '0'");
  EXPECT_EQ(error_of({"top", "--iterations", "x"}),
            "--iterations: expected a positive integer, got 'x'");
  EXPECT_EQ(error_of({"top", "--batch=yes"}), "--batch: takes no value");
  EXPECT_EQ(error_of({"top", "--json"}), "unknown option '--json' (see jiffy --help)");
  EXPECT_EQ(error_of({"top", "now"}), "unexpected argument 'now' to 'jiffy top'");
  EXPECT_TRUE(std::holds_alternative<HelpCommand>(parse({"top", "--help"})));
}

TEST(Parse, TopAfterOptionsIsAProgram) {
  LaunchOptions o = launch({"-n", "1", "top"});
  EXPECT_EQ(o.apps[0].argv, (Words{"top"}));
}

TEST(Parse, Stop) {
  EXPECT_TRUE(std::holds_alternative<StopCommand>(parse({"stop"})));
  EXPECT_EQ(error_of({"stop", "--json"}), "unknown option '--json' (see jiffy --help)");
  EXPECT_EQ(error_of({"stop", "now"}), "unexpected argument 'now' to 'jiffy stop'");
}

// --- Backend: --backend, JIFFY_BACKEND, Slurm allocations ---------------------

// Several fake variables at once (ScopedEnv sets one).
class ScopedEnvs {
 public:
  explicit ScopedEnvs(std::map<std::string, std::string> vars) {
    g_fake_env = std::move(vars);
    g_env_lookups = 0;
  }
  ~ScopedEnvs() { g_fake_env.clear(); }
};

// An allocation of two nodes, as a batch script sees it.
std::map<std::string, std::string> two_node_allocation() {
  return {{"SLURM_JOB_ID", "5"}, {"SLURM_JOB_NUM_NODES", "2"}};
}

TEST(ParseBackend, DefaultIsLocal) {
  EXPECT_EQ(launch({"prog"}).backend, Backend::Local);
  EXPECT_EQ(std::get<LaunchCommand>(parse_command_line({"jiffy", "prog"}, nullptr)).options.backend,
            Backend::Local);
}

TEST(ParseBackend, OptionSpellings) {
  EXPECT_EQ(launch({"--backend=slurm", "prog"}).backend, Backend::Slurm);
  EXPECT_EQ(launch({"--backend", "slurm", "prog"}).backend, Backend::Slurm);
  EXPECT_EQ(launch({"-backend", "slurm", "prog"}).backend, Backend::Slurm);
  EXPECT_EQ(launch({"--backend=local", "prog"}).backend, Backend::Local);
  EXPECT_EQ(launch({"--backend=auto", "prog"}).backend, Backend::Local);  // no allocation here
}

TEST(ParseBackend, BadValue) {
  EXPECT_EQ(error_of({"--backend=cloud", "prog"}),
            "--backend: expected local, slurm or auto, got 'cloud'");
  EXPECT_EQ(error_of({"-backend", "Slurm", "prog"}),
            "-backend: expected local, slurm or auto, got 'Slurm'");
  EXPECT_EQ(error_of({"--backend"}), "--backend: missing value");
}

TEST(ParseBackend, IsGlobal) {
  EXPECT_EQ(error_of({"a", ":", "--backend=slurm", "b"}),
            "--backend applies to the whole job; give it before the first ':'");
}

TEST(ParseBackend, LastOptionWins) {
  EXPECT_EQ(launch({"--backend=slurm", "--backend=local", "prog"}).backend, Backend::Local);
  EXPECT_EQ(launch({"--backend=local", "--backend=slurm", "prog"}).backend, Backend::Slurm);
}

TEST(ParseBackend, FromTheEnvironment) {
  {
    ScopedEnv e("JIFFY_BACKEND", "slurm");
    EXPECT_EQ(launch({"prog"}).backend, Backend::Slurm);
  }
  {
    ScopedEnv e("JIFFY_BACKEND", "local");
    EXPECT_EQ(launch({"prog"}).backend, Backend::Local);
  }
  {
    ScopedEnv e("JIFFY_BACKEND", "auto");
    EXPECT_EQ(launch({"prog"}).backend, Backend::Local);
  }
  {
    ScopedEnv e("JIFFY_BACKEND", "");
    EXPECT_EQ(launch({"prog"}).backend, Backend::Local);
  }
  ScopedEnv e("JIFFY_BACKEND", "bad");
  EXPECT_EQ(error_of({"prog"}), "JIFFY_BACKEND: expected local, slurm or auto, got 'bad'");
}

TEST(ParseBackend, OptionBeatsEnvironment) {
  {
    ScopedEnv e("JIFFY_BACKEND", "slurm");
    EXPECT_EQ(launch({"--backend=local", "prog"}).backend, Backend::Local);
  }
  {
    ScopedEnv e("JIFFY_BACKEND", "local");
    EXPECT_EQ(launch({"--backend=slurm", "prog"}).backend, Backend::Slurm);
  }
  {
    ScopedEnv e("JIFFY_BACKEND", "bad");  // not even looked at
    EXPECT_EQ(launch({"--backend=slurm", "prog"}).backend, Backend::Slurm);
  }
  ScopedEnvs e({{"JIFFY_BACKEND", "local"}, {"SLURM_JOB_ID", "5"}, {"SLURM_JOB_NUM_NODES", "2"}});
  EXPECT_EQ(launch({"--backend=slurm", "prog"}).backend, Backend::Slurm);
}

TEST(ParseBackend, AutoInsideAnAllocationOfNodes) {
  {
    ScopedEnvs e(two_node_allocation());
    EXPECT_EQ(launch({"prog"}).backend, Backend::Slurm);
    EXPECT_EQ(launch({"--backend=auto", "prog"}).backend, Backend::Slurm);
    EXPECT_EQ(launch({"--backend=local", "prog"}).backend, Backend::Local);
  }
  {
    ScopedEnvs e({{"SLURM_JOB_ID", "5"}, {"SLURM_NNODES", "2"}});
    EXPECT_EQ(launch({"prog"}).backend, Backend::Slurm);
  }
  {
    ScopedEnvs e({{"SLURM_JOB_ID", "5"}, {"SLURM_JOB_NUM_NODES", "2"}, {"JIFFY_BACKEND", "auto"}});
    EXPECT_EQ(launch({"prog"}).backend, Backend::Slurm);
  }
  {
    ScopedEnvs e({{"SLURM_JOB_ID", "5"}, {"SLURM_JOB_NUM_NODES", "2"}, {"JIFFY_BACKEND", "local"}});
    EXPECT_EQ(launch({"prog"}).backend, Backend::Local);
  }
  {
    ScopedEnvs e({{"SLURM_JOB_ID", "5"}, {"SLURM_JOB_NUM_NODES", "2"}, {"SLURM_STEP_ID", "batch"}});
    EXPECT_EQ(launch({"prog"}).backend, Backend::Slurm);
  }
}

TEST(ParseBackend, AutoOnOneNodeOrInsideAStepIsLocal) {
  {
    ScopedEnvs e({{"SLURM_JOB_ID", "5"}, {"SLURM_JOB_NUM_NODES", "1"}});
    EXPECT_EQ(launch({"prog"}).backend, Backend::Local);
  }
  {
    ScopedEnvs e({{"SLURM_JOB_ID", "5"}, {"SLURM_JOB_NUM_NODES", "2"}, {"SLURM_STEP_ID", "0"}});
    EXPECT_EQ(launch({"prog"}).backend, Backend::Local);
  }
  {
    ScopedEnv e("SLURM_JOB_NUM_NODES", "2");  // no job id
    EXPECT_EQ(launch({"prog"}).backend, Backend::Local);
  }
}

TEST(ParseBackend, NodesAndTasksUnderSlurm) {
  LaunchOptions o = launch({"--backend=slurm", "-N", "2", "-n", "4", "prog"});
  EXPECT_EQ(o.apps[0].ntasks, 4);
  EXPECT_EQ(o.total_tasks(), 4);
  EXPECT_EQ(o.ntasks_per_node, 2);
  EXPECT_TRUE(o.ntasks_given);
  o = launch({"--backend=slurm", "-npernode", "3", "-n", "4", "prog"});
  EXPECT_EQ(o.ntasks_per_node, 3);
  EXPECT_EQ(o.apps[0].ntasks, 4);
}

TEST(ParseBackend, NodesAndTasksInAnAllocation) {
  ScopedEnvs e(two_node_allocation());
  LaunchOptions o = launch({"-N", "2", "-n", "4", "prog"});
  EXPECT_EQ(o.backend, Backend::Slurm);
  EXPECT_EQ(o.apps[0].ntasks, 4);
  EXPECT_EQ(o.ntasks_per_node, 2);
  EXPECT_TRUE(o.ntasks_given);
}

TEST(ParseBackend, PpnUnderSlurm) {
  LaunchOptions o = launch({"--backend=slurm", "-ppn", "2", "-n", "4", "prog"});
  EXPECT_EQ(o.apps[0].ntasks, 4);
  EXPECT_EQ(o.ntasks_per_node, 2);
  EXPECT_TRUE(o.ntasks_given);
  // -N beats -ppn.
  EXPECT_EQ(launch({"--backend=slurm", "-ppn", "2", "-N", "3", "prog"}).ntasks_per_node, 3);
}

TEST(ParseBackend, NodesWithoutTasksUnderSlurm) {
  LaunchOptions o = launch({"--backend=slurm", "-N", "2", "prog"});
  EXPECT_EQ(o.ntasks_per_node, 2);
  EXPECT_FALSE(o.ntasks_given);
  EXPECT_EQ(o.apps[0].ntasks, 1);  // srun runs -N per node; the count is not folded
}

TEST(ParseBackend, NodesLocallyAreThisNodesProcesses) {
  LaunchOptions o = launch({"-N", "2", "prog"});
  EXPECT_EQ(o.backend, Backend::Local);
  EXPECT_EQ(o.apps[0].ntasks, 2);
  EXPECT_EQ(o.ntasks_per_node, 0);
  EXPECT_FALSE(o.ntasks_given);
  o = launch({"-N", "4", "-n", "4", "prog"});
  EXPECT_EQ(o.apps[0].ntasks, 4);
  EXPECT_TRUE(o.ntasks_given);
  EXPECT_EQ(o.ntasks_per_node, 0);
  // -ppn has no effect on this node.
  o = launch({"-ppn", "2", "-n", "4", "prog"});
  EXPECT_EQ(o.apps[0].ntasks, 4);
  EXPECT_EQ(o.ntasks_per_node, 0);
}

TEST(ParseBackend, NodesLocallyMustMatchTasks) {
  EXPECT_EQ(error_of({"-N", "2", "-n", "4", "prog"}),
            "-N 2 asks for 2 processes on this node, the only one jiffy uses, but -n asks for 4");
  EXPECT_EQ(error_of({"--backend=local", "-N", "2", "-n", "4", "prog"}),
            "-N 2 asks for 2 processes on this node, the only one jiffy uses, but -n asks for 4");
  ScopedEnvs e({{"SLURM_JOB_ID", "5"}, {"SLURM_JOB_NUM_NODES", "1"}});
  EXPECT_EQ(error_of({"-N", "2", "-n", "4", "prog"}),
            "-N 2 asks for 2 processes on this node, the only one jiffy uses, but -n asks for 4");
}

TEST(ParseBackend, LocalOnlyPlacementIsRecorded) {
  EXPECT_EQ(launch({"-map-by", "socket", "prog"}).local_only, (Words{"-map-by"}));
  EXPECT_EQ(launch({"--map-by", "ppr:2:node", "prog"}).local_only, (Words{"--map-by"}));
  EXPECT_EQ(launch({"-rank-by", "node", "prog"}).local_only, (Words{"-rank-by"}));
  EXPECT_EQ(launch({"--rank-by=socket", "-map-by", "numa", "prog"}).local_only,
            (Words{"--rank-by", "-map-by"}));
  // Recorded the same under either backend: the slurm backend refuses them.
  EXPECT_EQ(launch({"--backend=slurm", "-map-by", "socket", "prog"}).local_only,
            (Words{"-map-by"}));
}

TEST(ParseBackend, CorePlacementIsWhatSrunDoesToo) {
  for (const char* v : {"core", "slot", "hwthread", "CORE", "core:PE=2", "slot:oversubscribe"}) {
    EXPECT_TRUE(launch({"-map-by", v, "prog"}).local_only.empty()) << v;
  }
  for (const char* v : {"core", "slot", "hwthread"}) {
    EXPECT_TRUE(launch({"-rank-by", v, "prog"}).local_only.empty()) << v;
  }
  EXPECT_TRUE(launch({"prog"}).local_only.empty());
}

}  // namespace
}  // namespace jiffy

namespace jiffy {
namespace {

std::map<std::string, std::string> ctest_two_gpus() {
  return {{"CTEST_RESOURCE_GROUP_COUNT", "2"},
          {"CTEST_RESOURCE_GROUP_0", "gpus"},
          {"CTEST_RESOURCE_GROUP_0_GPUS", "id:1,slots:1"},
          {"CTEST_RESOURCE_GROUP_1", "gpus"},
          {"CTEST_RESOURCE_GROUP_1_GPUS", "id:0,slots:1"}};
}

TEST(ParseCtest, ChosenGpusReachTheOptions) {
  g_fake_env = ctest_two_gpus();
  LaunchOptions opt = launch({"-n", "2", "prog"});
  g_fake_env.clear();
  EXPECT_EQ(opt.gpu_names, (std::vector<std::string>{"1", "0"}));
  EXPECT_EQ(opt.gpus_per_task, 1);
}

TEST(ParseCtest, RefusedUnderSlurm) {
  g_fake_env = ctest_two_gpus();
  std::string err = error_of({"--backend=slurm", "-n", "2", "prog"});
  g_fake_env.clear();
  EXPECT_NE(err.find("CTEST_RESOURCE_GROUP_*"), std::string::npos) << err;
  EXPECT_NE(err.find("--backend=local"), std::string::npos) << err;
}

TEST(ParseCtest, ResourceSpecIsASubcommand) {
  EXPECT_TRUE(std::holds_alternative<ResourceSpecCommand>(parse({"resource-spec"})));
  EXPECT_NE(error_of({"resource-spec", "--json"}), "");
  // Only as the first word: a program called resource-spec still runs.
  EXPECT_TRUE(std::holds_alternative<LaunchCommand>(parse({"-n", "1", "resource-spec"})));
}

}  // namespace
}  // namespace jiffy
