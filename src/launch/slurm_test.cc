#include "launch/slurm.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/error.h"

namespace jiffy {
namespace {

using Words = std::vector<std::string>;

// --- When a launch goes to Slurm ---------------------------------------------

TEST(SlurmAllocation, NoJobIdIsNoAllocation) {
  EXPECT_FALSE(in_slurm_allocation_of_nodes("", "4", "4", ""));
  EXPECT_FALSE(in_slurm_allocation_of_nodes("", "", "", ""));
}

TEST(SlurmAllocation, OneNodeStaysLocal) {
  EXPECT_FALSE(in_slurm_allocation_of_nodes("123", "1", "", ""));
  EXPECT_FALSE(in_slurm_allocation_of_nodes("123", "", "1", ""));
  EXPECT_FALSE(in_slurm_allocation_of_nodes("123", "1", "1", ""));
  EXPECT_FALSE(in_slurm_allocation_of_nodes("123", "0", "", ""));
}

TEST(SlurmAllocation, NodeCountFromEitherVariable) {
  EXPECT_TRUE(in_slurm_allocation_of_nodes("123", "2", "", ""));
  EXPECT_TRUE(in_slurm_allocation_of_nodes("123", "", "2", ""));  // SLURM_NNODES only
  EXPECT_TRUE(in_slurm_allocation_of_nodes("123", "64", "64", ""));
  EXPECT_TRUE(in_slurm_allocation_of_nodes("123", "999999999", "", ""));
  // SLURM_JOB_NUM_NODES wins when both are set.
  EXPECT_FALSE(in_slurm_allocation_of_nodes("123", "1", "2", ""));
  EXPECT_TRUE(in_slurm_allocation_of_nodes("123", "2", "1", ""));
}

TEST(SlurmAllocation, NoNodeCountIsNoAllocationOfNodes) {
  EXPECT_FALSE(in_slurm_allocation_of_nodes("123", "", "", ""));
}

TEST(SlurmAllocation, InsideATaskStepStaysLocal) {
  EXPECT_FALSE(in_slurm_allocation_of_nodes("123", "2", "", "0"));
  EXPECT_FALSE(in_slurm_allocation_of_nodes("123", "2", "2", "3"));
  EXPECT_FALSE(in_slurm_allocation_of_nodes("123", "", "2", "0"));
}

TEST(SlurmAllocation, BatchAndExternStepsCount) {
  EXPECT_TRUE(in_slurm_allocation_of_nodes("123", "2", "", "4294967291"));
  EXPECT_TRUE(in_slurm_allocation_of_nodes("123", "2", "", "batch"));
  EXPECT_TRUE(in_slurm_allocation_of_nodes("123", "2", "", "4294967292"));
  EXPECT_TRUE(in_slurm_allocation_of_nodes("123", "2", "", "extern"));
  // ... but one node is still one node.
  EXPECT_FALSE(in_slurm_allocation_of_nodes("123", "1", "", "batch"));
}

TEST(SlurmAllocation, GarbageNodeCountsAreNotAnAllocation) {
  for (const char* n : {"two", "2x", "-2", "+2", " 2", "2 ", "2.0", "1234567890", "99999999999"}) {
    EXPECT_FALSE(in_slurm_allocation_of_nodes("123", n, "", "")) << n;
    EXPECT_FALSE(in_slurm_allocation_of_nodes("123", "", n, "")) << n;
  }
  // A garbage SLURM_JOB_NUM_NODES is not replaced by SLURM_NNODES.
  EXPECT_FALSE(in_slurm_allocation_of_nodes("123", "x", "2", ""));
}

// --- The srun line -------------------------------------------------------------

// One group: `-n ntasks prog args...`.
LaunchOptions one_program(int ntasks, Words argv) {
  LaunchOptions o;
  o.apps.emplace_back();
  o.apps[0].ntasks = ntasks;
  o.apps[0].argv = std::move(argv);
  o.ntasks_given = true;
  o.backend = Backend::Slurm;
  return o;
}

SrunInputs inputs_for(Words programs, std::vector<MpiKind> kinds) {
  SrunInputs in;
  in.srun = "/usr/bin/srun";
  in.programs = std::move(programs);
  in.kinds = std::move(kinds);
  in.step_name = "jiffy-7";
  in.multi_prog_path = "/tmp/jiffy-mp.conf";
  return in;
}

SrunInputs one_input(MpiKind kind = MpiKind::Mpich) { return inputs_for({"/p/prog"}, {kind}); }

// The message srun_command throws, or "<no error>".
std::string srun_error(const LaunchOptions& o, const SrunInputs& in) {
  try {
    srun_command(o, in);
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

bool has_word(const Words& argv, const std::string& w) {
  return std::find(argv.begin(), argv.end(), w) != argv.end();
}

// The argv word starting with prefix, or "<none>".
std::string word_with(const Words& argv, const std::string& prefix) {
  for (const std::string& w : argv) {
    if (w.starts_with(prefix)) return w;
  }
  return "<none>";
}

TEST(SlurmSrun, DefaultOneProgramLine) {
  SrunCommand c = srun_command(one_program(4, {"prog", "a", "-b"}), one_input());
  EXPECT_EQ(c.argv, (Words{"/usr/bin/srun", "--ntasks=4", "--cpus-per-task=1", "--cpu-bind=cores",
                           "--exact", "--kill-on-bad-exit=1", "--mpi=pmi2", "--input=0",
                           "--disable-status", "--job-name=jiffy-7",
                           "--export=ALL", "/p/prog", "a", "-b"}));
  EXPECT_EQ(c.mpi, "pmi2");
  EXPECT_TRUE(c.multi_prog.empty());
  EXPECT_TRUE(c.env.empty());
  EXPECT_FALSE(c.stderr_to_stdout);
}

TEST(SlurmSrun, NoStepName) {
  SrunInputs in = one_input(MpiKind::None);
  in.step_name.clear();
  in.srun = "srun";
  SrunCommand c = srun_command(one_program(1, {"prog"}), in);
  EXPECT_EQ(c.argv, (Words{"srun", "--ntasks=1", "--cpus-per-task=1", "--cpu-bind=cores", "--exact",
                           "--kill-on-bad-exit=1", "--mpi=none", "--input=0", "--disable-status",
                           "--export=ALL", "/p/prog"}));
}

TEST(SlurmSrun, PluginFromWhatTheProgramsLink) {
  auto plugin = [](std::vector<MpiKind> kinds) {
    Words programs(kinds.size(), "/p/prog");
    LaunchOptions o = one_program(1, {"prog"});
    for (std::size_t i = 1; i < kinds.size(); ++i) {
      o.apps.emplace_back();
      o.apps.back().argv = {"prog"};
    }
    SrunCommand c = srun_command(o, inputs_for(programs, kinds));
    EXPECT_EQ(word_with(c.argv, "--mpi="), "--mpi=" + c.mpi);
    return c.mpi;
  };
  EXPECT_EQ(plugin({MpiKind::Mpich}), "pmi2");
  EXPECT_EQ(plugin({MpiKind::OpenMpi}), "pmix");
  EXPECT_EQ(plugin({MpiKind::Unknown}), "pmix");
  EXPECT_EQ(plugin({MpiKind::None}), "none");
  EXPECT_EQ(plugin({MpiKind::None, MpiKind::Mpich}), "pmi2");
  EXPECT_EQ(plugin({MpiKind::None, MpiKind::OpenMpi}), "pmix");
  EXPECT_EQ(plugin({MpiKind::Unknown, MpiKind::Mpich}), "pmi2");
}

TEST(SlurmSrun, OpenMpiAndMpichInOneStepIsAnError) {
  LaunchOptions o = one_program(1, {"a"});
  o.apps.emplace_back();
  o.apps.back().argv = {"b"};
  std::string e = srun_error(o, inputs_for({"/p/a", "/p/b"}, {MpiKind::OpenMpi, MpiKind::Mpich}));
  EXPECT_TRUE(contains(e, "Open MPI and MPICH")) << e;
  EXPECT_TRUE(contains(e, "one MPI plugin")) << e;
}

TEST(SlurmSrun, ForcedPlugin) {
  LaunchOptions o = one_program(1, {"prog"});
  o.mpi = MpiMode::Pmi1;  // Slurm's pmi2 plugin answers PMI-1 clients
  EXPECT_EQ(srun_command(o, one_input(MpiKind::OpenMpi)).mpi, "pmi2");
  o.mpi = MpiMode::Pmix;
  EXPECT_EQ(srun_command(o, one_input(MpiKind::Mpich)).mpi, "pmix");
  o.mpi = MpiMode::None;
  SrunCommand c = srun_command(o, one_input(MpiKind::OpenMpi));
  EXPECT_EQ(c.mpi, "none");
  EXPECT_TRUE(has_word(c.argv, "--mpi=none"));
  // A forced plugin does not care that the groups link different MPIs.
  o.mpi = MpiMode::Pmix;
  o.apps.emplace_back();
  o.apps.back().argv = {"b"};
  EXPECT_EQ(srun_command(o, inputs_for({"/p/a", "/p/b"}, {MpiKind::OpenMpi, MpiKind::Mpich})).mpi,
            "pmix");
}

TEST(SlurmSrun, CoresAndGpus) {
  LaunchOptions o = one_program(2, {"prog"});
  o.cores_per_task = 4;
  o.gpus_per_task = 1;
  o.gpus_per_job = 2;
  SrunCommand c = srun_command(o, one_input());
  EXPECT_EQ(Words(c.argv.begin(), c.argv.begin() + 6),
            (Words{"/usr/bin/srun", "--ntasks=2", "--cpus-per-task=4", "--gpus-per-task=1",
                   "--gpus=2", "--cpu-bind=cores"}));
}

TEST(SlurmSrun, NoGpuOptionsWithoutGpus) {
  SrunCommand c = srun_command(one_program(2, {"prog"}), one_input());
  EXPECT_EQ(word_with(c.argv, "--gpus"), "<none>");
}

TEST(SlurmSrun, Binding) {
  LaunchOptions o = one_program(1, {"prog"});
  o.bind = Bind::HwThread;
  EXPECT_EQ(word_with(srun_command(o, one_input()).argv, "--cpu-bind="), "--cpu-bind=threads");
  o.bind = Bind::None;
  EXPECT_EQ(word_with(srun_command(o, one_input()).argv, "--cpu-bind="), "--cpu-bind=none");
  o.bind = Bind::Core;
  EXPECT_EQ(word_with(srun_command(o, one_input()).argv, "--cpu-bind="), "--cpu-bind=cores");
}

TEST(SlurmSrun, RankLabelIsSrunsLabel) {
  LaunchOptions o = one_program(1, {"prog"});
  o.label = Label::Rank;
  EXPECT_TRUE(has_word(srun_command(o, one_input()).argv, "--label"));
  EXPECT_FALSE(has_word(srun_command(one_program(1, {"prog"}), one_input()).argv, "--label"));
}

TEST(SlurmSrun, Quiet) {
  LaunchOptions o = one_program(1, {"prog"});
  o.quiet = true;
  EXPECT_TRUE(has_word(srun_command(o, one_input()).argv, "--quiet"));
  EXPECT_FALSE(has_word(srun_command(one_program(1, {"prog"}), one_input()).argv, "--quiet"));
}

TEST(SlurmSrun, OptionsWithoutTranslationAreRefusedByName) {
  auto refused = [](const LaunchOptions& o, const std::string& name) {
    std::string e = srun_error(o, one_input());
    EXPECT_TRUE(e.starts_with(name + " has no srun translation")) << e;
    EXPECT_TRUE(contains(e, "--backend=local")) << e;
  };
  LaunchOptions o = one_program(1, {"prog"});
  o.label = Label::Tag;
  refused(o, "--tag-output");
  o.label = Label::Pattern;
  o.prepend_pattern = "[%r] ";
  refused(o, "-prepend-pattern");
  o = one_program(1, {"prog"});
  o.output_dir = "out";
  refused(o, "--output-filename");
  o = one_program(1, {"prog"});
  o.local_only = {"-map-by"};
  refused(o, "-map-by");
  o.local_only = {"--rank-by", "-map-by"};
  refused(o, "--rank-by");  // the first one given
}

TEST(SlurmSrun, OutfilePattern) {
  LaunchOptions o = one_program(2, {"prog"});
  o.outfile_pattern = "out.%r";
  SrunCommand c = srun_command(o, one_input());
  EXPECT_EQ(word_with(c.argv, "--output="), "--output=./out.%t");
  EXPECT_EQ(word_with(c.argv, "--error="), "<none>");
  o.outfile_pattern = "100%%.%r.log";
  EXPECT_EQ(word_with(srun_command(o, one_input()).argv, "--output="), "--output=./100%%.%t.log");
  o.outfile_pattern = "out.%g.%r";
  std::string e = srun_error(o, one_input());
  EXPECT_TRUE(e.starts_with("-outfile-pattern with %g has no srun translation")) << e;
}

TEST(SlurmSrun, ErrfilePattern) {
  LaunchOptions o = one_program(2, {"prog"});
  o.errfile_pattern = "err.%r";
  SrunCommand c = srun_command(o, one_input());
  EXPECT_EQ(word_with(c.argv, "--error="), "--error=./err.%t");
  EXPECT_EQ(word_with(c.argv, "--output="), "<none>");
  o.errfile_pattern = "err.%g";
  std::string e = srun_error(o, one_input());
  EXPECT_TRUE(e.starts_with("-errfile-pattern with %g has no srun translation")) << e;
}

TEST(SlurmSrun, MergeStderrToStdout) {
  LaunchOptions o = one_program(2, {"prog"});
  o.merge_stderr = true;
  SrunCommand c = srun_command(o, one_input());
  EXPECT_TRUE(c.stderr_to_stdout);
  EXPECT_EQ(word_with(c.argv, "--output="), "<none>");
  EXPECT_EQ(word_with(c.argv, "--error="), "<none>");
  // With --output alone srun writes stderr into the same file.
  o.outfile_pattern = "out.%r";
  c = srun_command(o, one_input());
  EXPECT_FALSE(c.stderr_to_stdout);
  EXPECT_EQ(word_with(c.argv, "--output="), "--output=./out.%t");
  EXPECT_EQ(word_with(c.argv, "--error="), "<none>");
  // Without -merge the default is separate streams.
  EXPECT_FALSE(srun_command(one_program(1, {"prog"}), one_input()).stderr_to_stdout);
}

TEST(SlurmSrun, Wdir) {
  LaunchOptions o = one_program(1, {"prog"});
  o.wdir = "/scratch/run";
  EXPECT_EQ(word_with(srun_command(o, one_input()).argv, "--chdir="), "--chdir=/scratch/run");
  EXPECT_EQ(word_with(srun_command(one_program(1, {"prog"}), one_input()).argv, "--chdir"),
            "<none>");
}

TEST(SlurmSrun, HostsBecomeANodelist) {
  LaunchOptions o = one_program(1, {"prog"});
  o.hosts = {"a", "b:2"};
  SrunCommand c = srun_command(o, one_input());
  EXPECT_EQ(word_with(c.argv, "--nodelist="), "--nodelist=a,b");
  EXPECT_EQ(word_with(c.argv, "--nodefile="), "<none>");
}

TEST(SlurmSrun, HostfileBecomesANodefile) {
  LaunchOptions o = one_program(1, {"prog"});
  o.hostfile = "hosts.txt";
  SrunCommand c = srun_command(o, one_input());
  EXPECT_EQ(word_with(c.argv, "--nodefile="), "--nodefile=hosts.txt");
  EXPECT_EQ(word_with(c.argv, "--nodelist="), "<none>");
}

TEST(SlurmSrun, GenvIsSrunsEnvironmentExportedWhole) {
  LaunchOptions o = one_program(1, {"prog"});
  o.genv = {{"K", "V"}};
  SrunCommand c = srun_command(o, one_input());
  EXPECT_EQ(c.env, (std::vector<EnvSetting>{{"K", "V"}}));
  EXPECT_TRUE(has_word(c.argv, "--export=ALL"));
  EXPECT_FALSE(has_word(c.argv, "K=V"));
}

TEST(SlurmSrun, OneGroupsOwnEnvFollowsTheGlobalOne) {
  LaunchOptions o = one_program(1, {"prog"});
  o.genv = {{"A", "1"}};
  o.apps[0].env = {{"B", "2"}};
  EXPECT_EQ(srun_command(o, one_input()).env, (std::vector<EnvSetting>{{"A", "1"}, {"B", "2"}}));
}

TEST(SlurmSrun, GenvnoneExportsOnlyTheNamed) {
  LaunchOptions o = one_program(1, {"prog"});
  o.env_base = EnvBase::None;
  o.genv = {{"A", "1"}, {"B", std::nullopt}};  // -genv A 1 -x B
  SrunCommand c = srun_command(o, one_input());
  EXPECT_TRUE(has_word(c.argv, "--export=A,B")) << word_with(c.argv, "--export");
  EXPECT_EQ(c.env, (std::vector<EnvSetting>{{"A", "1"}, {"B", std::nullopt}}));
  // A name set twice is exported once.
  o.genv.push_back({"A", "3"});
  EXPECT_EQ(word_with(srun_command(o, one_input()).argv, "--export="), "--export=A,B");
}

TEST(SlurmSrun, GenvnoneAloneExportsNone) {
  LaunchOptions o = one_program(1, {"prog"});
  o.env_base = EnvBase::None;
  EXPECT_EQ(word_with(srun_command(o, one_input()).argv, "--export="), "--export=NONE");
}

TEST(SlurmSrun, OneGroupsEnvBaseOverridesTheGlobalOne) {
  LaunchOptions o = one_program(1, {"prog"});
  o.apps[0].env_base = EnvBase::None;  // -envlist C
  o.apps[0].env = {{"C", std::nullopt}};
  EXPECT_EQ(word_with(srun_command(o, one_input()).argv, "--export="), "--export=C");
  o.env_base = EnvBase::None;
  o.apps[0].env_base = EnvBase::All;  // -genvnone -envall
  EXPECT_EQ(word_with(srun_command(o, one_input()).argv, "--export="), "--export=ALL");
}

TEST(SlurmSrun, NodesWithoutTaskCountRunThatManyOnEach) {
  LaunchOptions o = one_program(1, {"prog"});  // -N 2, no -n: ntasks keeps its default
  o.ntasks_given = false;
  o.ntasks_per_node = 2;
  SrunCommand c = srun_command(o, one_input());
  EXPECT_EQ(Words(c.argv.begin(), c.argv.begin() + 3),
            (Words{"/usr/bin/srun", "--ntasks-per-node=2", "--cpus-per-task=1"}));
  EXPECT_EQ(word_with(c.argv, "--ntasks="), "<none>");
}

TEST(SlurmSrun, NodesWithTaskCount) {
  LaunchOptions o = one_program(4, {"prog"});  // -N 2 -n 4
  o.ntasks_per_node = 2;
  SrunCommand c = srun_command(o, one_input());
  EXPECT_EQ(Words(c.argv.begin(), c.argv.begin() + 4),
            (Words{"/usr/bin/srun", "--ntasks=4", "--ntasks-per-node=2", "--cpus-per-task=1"}));
}

TEST(SlurmSrun, WithoutNodesOrTaskCountOneTask) {
  LaunchOptions o = one_program(1, {"prog"});
  o.ntasks_given = false;
  EXPECT_TRUE(has_word(srun_command(o, one_input()).argv, "--ntasks=1"));
}

// `-n 2 a x : -n 1 b 'y z'`
LaunchOptions two_groups() {
  LaunchOptions o = one_program(2, {"a", "x"});
  o.apps.emplace_back();
  o.apps[1].ntasks = 1;
  o.apps[1].argv = {"b", "y z"};
  return o;
}

TEST(SlurmSrun, MpmdIsAMultiProgFile) {
  SrunCommand c =
      srun_command(two_groups(), inputs_for({"/p/a", "/p/b"}, {MpiKind::Mpich, MpiKind::Mpich}));
  EXPECT_EQ(c.argv, (Words{"/usr/bin/srun", "--ntasks=3", "--cpus-per-task=1", "--cpu-bind=cores",
                           "--exact", "--kill-on-bad-exit=1", "--mpi=pmi2", "--input=0",
                           "--disable-status", "--job-name=jiffy-7",
                           "--export=ALL", "--multi-prog", "/tmp/jiffy-mp.conf"}));
  EXPECT_EQ(c.multi_prog, "0-1 /p/a x\n2 /p/b 'y z'\n");
}

TEST(SlurmSrun, MpmdThreeGroupsOfOne) {
  LaunchOptions o = two_groups();
  o.apps[0].ntasks = 1;
  o.apps.emplace_back();
  o.apps[2].argv = {"c"};
  SrunCommand c = srun_command(
      o, inputs_for({"/p/a", "/p/b", "/p/c"}, {MpiKind::None, MpiKind::None, MpiKind::None}));
  EXPECT_TRUE(has_word(c.argv, "--ntasks=3"));
  EXPECT_EQ(c.multi_prog, "0 /p/a x\n1 /p/b 'y z'\n2 /p/c\n");
}

TEST(SlurmSrun, MpmdAlwaysGivesTheTaskCount) {
  LaunchOptions o = two_groups();
  o.ntasks_given = false;
  o.ntasks_per_node = 2;
  SrunCommand c = srun_command(o, inputs_for({"/p/a", "/p/b"}, {MpiKind::None, MpiKind::None}));
  EXPECT_TRUE(has_word(c.argv, "--ntasks=3"));
  EXPECT_TRUE(has_word(c.argv, "--ntasks-per-node=2"));
}

TEST(SlurmSrun, MpmdGlobalEnvIsKept) {
  LaunchOptions o = two_groups();
  o.genv = {{"A", "1"}};
  o.env_base = EnvBase::None;
  SrunCommand c = srun_command(o, inputs_for({"/p/a", "/p/b"}, {MpiKind::None, MpiKind::None}));
  EXPECT_EQ(c.env, (std::vector<EnvSetting>{{"A", "1"}}));
  EXPECT_TRUE(has_word(c.argv, "--export=A"));
}

TEST(SlurmSrun, MpmdGroupsCannotHaveTheirOwnEnvOrWdir) {
  SrunInputs in = inputs_for({"/p/a", "/p/b"}, {MpiKind::None, MpiKind::None});
  LaunchOptions o = two_groups();
  o.apps[1].env = {{"K", "V"}};
  std::string e = srun_error(o, in);
  EXPECT_TRUE(e.starts_with("-env (or -x) in a ':' group has no srun translation")) << e;
  o = two_groups();
  o.apps[0].env = {{"K", "V"}};  // -env in the first group is the group's too
  EXPECT_TRUE(srun_error(o, in).starts_with("-env (or -x) in a ':' group")) << srun_error(o, in);
  o = two_groups();
  o.apps[1].wdir = "/w";
  e = srun_error(o, in);
  EXPECT_TRUE(e.starts_with("-wdir in a ':' group has no srun translation")) << e;
  o = two_groups();
  o.apps[1].env_base = EnvBase::None;
  e = srun_error(o, in);
  EXPECT_TRUE(e.starts_with("-envall/-envnone/-envlist in a ':' group has no srun translation"))
      << e;
}

TEST(SlurmSrun, MpmdArgumentsSrunCannotCarry) {
  SrunInputs in = inputs_for({"/p/a", "/p/b"}, {MpiKind::None, MpiKind::None});
  for (const char* arg : {"it's", "two\nlines", "50%"}) {
    LaunchOptions o = two_groups();
    o.apps[1].argv.push_back(arg);
    std::string e = srun_error(o, in);
    EXPECT_TRUE(contains(e, "has no srun translation")) << arg << ": " << e;
  }
}

TEST(SlurmSrun, MpmdQuotesWhatNeedsIt) {
  LaunchOptions o = two_groups();
  o.apps[1].argv = {"b", "", "a\"b", "#c", "tab\there", "plain"};
  SrunCommand c = srun_command(o, inputs_for({"/p/a", "/p/b"}, {MpiKind::None, MpiKind::None}));
  EXPECT_EQ(c.multi_prog, "0-1 /p/a x\n2 /p/b '' 'a\"b' '#c' 'tab\there' plain\n");
}

// --- Patterns and --multi-prog words -------------------------------------------

TEST(SlurmPattern, RankAndPercent) {
  EXPECT_EQ(srun_pattern("-outfile-pattern", "out.%r"), "./out.%t");
  EXPECT_EQ(srun_pattern("-outfile-pattern", "%r/%r.log"), "./%t/%t.log");
  EXPECT_EQ(srun_pattern("-outfile-pattern", "a%%b"), "./a%%b");
  EXPECT_EQ(srun_pattern("-outfile-pattern", "plain.log"), "./plain.log");
  EXPECT_EQ(srun_pattern("-outfile-pattern", "/abs/out.%r"), "/abs/out.%t");
  EXPECT_EQ(srun_pattern("-outfile-pattern", ""), "");
}

TEST(SlurmPattern, WhatSrunCannotSayIsRefused) {
  auto error = [](std::string_view option, std::string_view pattern) -> std::string {
    try {
      srun_pattern(option, pattern);
    } catch (const Error& e) {
      return e.what();
    }
    return "<no error>";
  };
  std::string e = error("-outfile-pattern", "out.%g");
  EXPECT_TRUE(e.starts_with("-outfile-pattern with %g has no srun translation")) << e;
  e = error("-errfile-pattern", "err.%h");
  EXPECT_TRUE(e.starts_with("-errfile-pattern with %h has no srun translation")) << e;
  e = error("-outfile-pattern", "out%");
  EXPECT_TRUE(e.starts_with("-outfile-pattern with % has no srun translation")) << e;
  e = error("-outfile-pattern", "out\\%r");
  EXPECT_TRUE(e.starts_with("-outfile-pattern with '\\' has no srun translation")) << e;
}

TEST(SlurmMultiProg, Words) {
  EXPECT_EQ(multi_prog_word("plain"), "plain");
  EXPECT_EQ(multi_prog_word("/p/a.out"), "/p/a.out");
  EXPECT_EQ(multi_prog_word("y z"), "'y z'");
  EXPECT_EQ(multi_prog_word(""), "''");
  EXPECT_EQ(multi_prog_word("a\"b"), "'a\"b'");
  EXPECT_EQ(multi_prog_word("#c"), "'#c'");
  EXPECT_EQ(multi_prog_word("a\tb"), "'a\tb'");
}

TEST(SlurmMultiProg, WordsItCannotCarry) {
  for (const char* w : {"it's", "a\nb", "%t", "50%"}) {
    try {
      multi_prog_word(w);
      ADD_FAILURE() << "accepted " << w;
    } catch (const Error& e) {
      EXPECT_TRUE(contains(e.what(), "has no srun translation")) << e.what();
      EXPECT_TRUE(contains(e.what(), "--multi-prog")) << e.what();
    }
  }
}

// --- What srun makes of the line ------------------------------------------------
//
// The tests below read jiffy's output the way Slurm does (src/srun/fname.c,
// src/slurmd/slurmstepd/multi_prog.c), so that a translation that srun would
// silently read differently fails here rather than on a cluster.

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// srun's fname_create reads some --output/--error values as modes rather than
// file names: anything starting with "all" (any case) or '-' is the terminal,
// "none" is /dev/null and a bare task number is that one task's output only.
bool srun_reads_as_file_pattern(std::string_view p) {
  const std::string l = lower(p);
  if (l.starts_with("all") || p.starts_with("-") || l == "none") return false;
  if (!p.empty() && p.find_first_not_of("0123456789") == std::string_view::npos) return false;
  return true;
}

TEST(SlurmPattern, FileNamesSrunReadsAsModes) {
  // srun_pattern must not pass these through as they are: srun takes them
  // for its modes (src/srun/fname.c, fname_create): -outfile-pattern
  // all.%r.log writes no file at all (the output goes to the terminal),
  // "none" discards it, "0" shows rank 0's only. A relative pattern needs a
  // "./" in front (or the option refused); the file names must stay files.
  for (const char* pattern :
       {"all.%r.log", "ALLREDUCE.%r", "allout", "-out.%r", "none", "0", "12"}) {
    std::string out;
    try {
      out = srun_pattern("-outfile-pattern", pattern);
    } catch (const Error&) {
      continue;  // refusing is fine too
    }
    EXPECT_TRUE(srun_reads_as_file_pattern(out)) << pattern << " -> --output=" << out;
  }
  // Ordinary names are untouched by the check above.
  EXPECT_TRUE(srun_reads_as_file_pattern(srun_pattern("-outfile-pattern", "out.%r")));
  EXPECT_TRUE(srun_reads_as_file_pattern(srun_pattern("-outfile-pattern", "/abs/all.%r")));
}

// One --multi-prog line's words after the task range, as slurmstepd's
// multi_prog_get_argv reads them: blanks separate words, '\' takes the next
// character literally (at the end of the line it joins the next line), '...'
// is taken verbatim, '%' starts %t/%o. nullopt where the line would fail,
// continue onto the next line or expand something.
std::optional<Words> srun_reads_words(std::string_view line) {
  Words out;
  std::optional<std::string> cur;
  std::size_t i = 0;
  while (i < line.size()) {
    const char c = line[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      if (cur) out.push_back(*std::exchange(cur, std::nullopt));
      ++i;
      continue;
    }
    if (!cur) cur = std::string();
    if (c == '\\') {
      if (i + 1 == line.size()) return std::nullopt;  // continues the line
      *cur += line[i + 1];
      i += 2;
    } else if (c == '\'') {
      const std::size_t close = line.find('\'', i + 1);
      if (close == std::string_view::npos) return std::nullopt;
      *cur += line.substr(i + 1, close - i - 1);
      i = close + 1;
    } else if (c == '%') {
      return std::nullopt;
    } else {
      *cur += c;
      ++i;
    }
  }
  if (cur) out.push_back(*cur);
  return out;
}

TEST(SlurmMultiProg, SrunReadsBackTheWord) {
  for (const char* w : {"plain", "/p/a.out", "-snes_monitor", "y z", "", "a\"b", "#c", "a\tb",
                        "key=value", "  lead"}) {
    EXPECT_EQ(srun_reads_words(multi_prog_word(w)), Words{w})
        << "[" << w << "] -> [" << multi_prog_word(w) << "]";
  }
}

TEST(SlurmMultiProg, SrunReadsBackEachGroup) {
  LaunchOptions o = two_groups();
  o.apps[1].argv = {"b", "y z", "", "-v", "#1", "q\"uote"};
  SrunCommand c =
      srun_command(o, inputs_for({"/p/a", "/p/my prog"}, {MpiKind::None, MpiKind::None}));
  // Each line: the task range, then the program (resolved) and its arguments.
  std::vector<Words> read;
  std::size_t start = 0;
  while (start < c.multi_prog.size()) {
    const std::size_t nl = c.multi_prog.find('\n', start);
    ASSERT_NE(nl, std::string::npos) << c.multi_prog;
    const std::string line = c.multi_prog.substr(start, nl - start);
    const std::size_t blank = line.find(' ');
    ASSERT_NE(blank, std::string::npos) << line;
    std::optional<Words> words = srun_reads_words(std::string_view(line).substr(blank + 1));
    ASSERT_TRUE(words) << line;
    read.push_back(*words);
    start = nl + 1;
  }
  EXPECT_EQ(read,
            (std::vector<Words>{{"/p/a", "x"}, {"/p/my prog", "y z", "", "-v", "#1", "q\"uote"}}));
  EXPECT_TRUE(c.multi_prog.starts_with("0-1 ")) << c.multi_prog;
  EXPECT_NE(c.multi_prog.find("\n2 "), std::string::npos) << c.multi_prog;
}

TEST(SlurmMultiProg, BackslashSurvivesSrun) {
  // multi_prog_word must quote a word with a backslash: srun's
  // --multi-prog reader takes '\' as an escape (slurmstepd/multi_prog.c):
  // "C:\dir" reaches the rank as "C:dir", and a word ending in '\' joins the
  // next group's line to this one. Inside '...' a backslash is kept, so such
  // words need quoting (or refusing).
  for (const char* w : {"a\\b", "C:\\dir", "end\\", "\\"}) {
    std::string quoted;
    try {
      quoted = multi_prog_word(w);
    } catch (const Error&) {
      continue;  // refusing is fine too
    }
    EXPECT_EQ(srun_reads_words(quoted), Words{w}) << "[" << w << "] -> [" << quoted << "]";
  }
}

TEST(SlurmSrun, MpmdGroupLongerThanSrunReads) {
  // slurmstepd reads at most MAX_ARGC (128) words of a --multi-prog line
  // and drops the rest with only a log line ("Exceeded multi-prog argc
  // limit"), so a ':' group with more arguments runs with fewer, silently:
  // slurm.h promises that nothing is dropped silently, so srun_command should
  // refuse such a group.
  LaunchOptions o = two_groups();
  for (int i = 0; i < 200; ++i) o.apps[1].argv.push_back("arg" + std::to_string(i));
  EXPECT_THROW(srun_command(o, inputs_for({"/p/a", "/p/b"}, {MpiKind::None, MpiKind::None})),
               Error);
  // One program keeps its arguments on srun's own command line: no limit.
  LaunchOptions one = one_program(1, {"prog"});
  for (int i = 0; i < 200; ++i) one.apps[0].argv.push_back("arg" + std::to_string(i));
  EXPECT_EQ(srun_command(one, one_input()).argv.back(), "arg199");
}


TEST(SlurmReport, FailedTaskCodes) {
  EXPECT_EQ(srun_failure_code("srun: error: n1: task 1: Exited with exit code 3"), 3);
  EXPECT_EQ(srun_failure_code("srun: error: n2: tasks 0-3: Exited with exit code 255"), 255);
  EXPECT_EQ(srun_failure_code("srun: error: n1: task 0: Segmentation fault"), 128 + 11);
  EXPECT_EQ(srun_failure_code("srun: error: n1: task 0: Killed"), 128 + 9);
  EXPECT_EQ(srun_failure_code("srun: error: n1: task 0: Exited with exit code 256"), -1);
  EXPECT_EQ(srun_failure_code("srun: error: n1: task 0: Exited with exit code 3x"), -1);
  EXPECT_EQ(srun_failure_code("srun: error: Unable to create step for job 12"), -1);
  EXPECT_EQ(srun_failure_code("0: srun: error: n1: task 0: Killed"), -1);  // a rank's own words
  EXPECT_EQ(srun_failure_code(""), -1);
}

TEST(SlurmReport, MpichAbortCode) {
  const std::string word =
      "Abort(7) on node 1 (rank 1 in comm 0): application called MPI_Abort(MPI_COMM_WORLD, 7) - process 1";
  EXPECT_EQ(mpich_abort_code(word), 7);
  EXPECT_EQ(mpich_abort_code("1: " + word), 7);    // srun -l
  EXPECT_EQ(mpich_abort_code(" 3: " + word), 7);   // padded label
  EXPECT_EQ(mpich_abort_code("Abort(0) on node 0 (rank 0 in comm 0): application called MPI_Abort(c, 0)"), 0);
  EXPECT_EQ(mpich_abort_code("Abort(300) on node 0 (rank 0 in comm 2): application called MPI_Abort(c, 300)"),
            300 % 256);
  EXPECT_EQ(mpich_abort_code("Abort(-1) on node 0 (rank 0 in comm 0): application called MPI_Abort(c, -1)"),
            255);
  // Anything else is a rank's own text, not MPICH's word.
  EXPECT_EQ(mpich_abort_code("Abort(7)"), -1);
  EXPECT_EQ(mpich_abort_code("Abort(x) on node 0 (rank 0 in comm 0): application called MPI_Abort(c, 1)"), -1);
  EXPECT_EQ(mpich_abort_code("Abort(7) on node 0 (rank 0 in comm 0): something else"), -1);
  EXPECT_EQ(mpich_abort_code("my Abort(7) on node 0 (rank 0 in comm 0): application called MPI_Abort("), -1);
  EXPECT_EQ(mpich_abort_code("1:Abort(7) on node 0 (rank 0 in comm 0): application called MPI_Abort("), -1);
  EXPECT_EQ(mpich_abort_code(""), -1);
}

}  // namespace
}  // namespace jiffy
