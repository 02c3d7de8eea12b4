// Fuzzes the command-line parser (cli/command.h): both mpiexec dialects,
// MPMD groups, subcommands.
//
// Input: the words after "jiffy", separated by NUL bytes (as in
// /proc/<pid>/cmdline). A first word "MPIEXEC_TIMEOUT=<v>" is not a word
// but that variable of the caller's environment.
//
// Invariants: bad input throws jiffy::Error (nothing else) with a non-empty
// one-line message (unless it quotes a word holding a newline); a parsed
// launch has at least one group, each with a program and >= 1 rank, counts
// and the timeout in range; the per-group environment the launcher builds
// from it (launch/environment.h) holds one NAME=value entry per name.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "cli/command.h"
#include "fuzz_util.h"
#include "launch/environment.h"
#include "util/error.h"

namespace {

std::optional<std::string> g_timeout;

std::optional<std::string> fake_env(const char* name) {
  if (std::string_view(name) == "MPIEXEC_TIMEOUT") return g_timeout;
  return std::nullopt;
}

void check_launch(const jiffy::LaunchOptions& o) {
  FUZZ_CHECK(!o.apps.empty());
  long long total = 0;
  for (const jiffy::AppSpec& a : o.apps) {
    FUZZ_CHECK(a.ntasks >= 1);
    FUZZ_CHECK(!a.argv.empty());
    total += a.ntasks;
  }
  FUZZ_CHECK(total <= INT32_MAX);  // LaunchOptions::total_tasks() is an int
  FUZZ_CHECK(o.total_tasks() == total);
  FUZZ_CHECK(o.cores_per_task >= 1);
  FUZZ_CHECK(o.gpus_per_task >= 0 && o.gpus_per_job >= 0);
  FUZZ_CHECK(std::isfinite(o.timeout_s) && o.timeout_s >= 0);

  jiffy::Environment caller;
  caller.set("PATH", "/usr/bin:/bin");
  caller.set("HOME", "/root");
  caller.set("OMPI_MCA_btl", "self");
  for (std::size_t g = 0; g < o.apps.size(); ++g) {
    jiffy::Environment env = jiffy::group_environment(o, g, caller);
    std::set<std::string> names;
    for (const std::string& e : env.entries()) {
      std::size_t eq = e.find('=');
      FUZZ_CHECK(eq != std::string::npos);
      FUZZ_CHECK(names.insert(e.substr(0, eq)).second);
    }
    std::vector<char*> envp = env.envp();
    FUZZ_CHECK(envp.size() == env.entries().size() + 1 && envp.back() == nullptr);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string> argv{"jiffy"};
  std::string_view in(reinterpret_cast<const char*>(data), size);
  for (;;) {
    std::size_t nul = in.find('\0');
    argv.emplace_back(in.substr(0, nul));
    if (nul == std::string_view::npos) break;
    in.remove_prefix(nul + 1);
  }
  if (size == 0) argv.pop_back();  // no words at all
  g_timeout.reset();
  constexpr std::string_view kTimeout = "MPIEXEC_TIMEOUT=";
  if (argv.size() > 1 && argv[1].compare(0, kTimeout.size(), kTimeout) == 0) {
    g_timeout = argv[1].substr(kTimeout.size());
    argv.erase(argv.begin() + 1);
  }

  jiffy::Command cmd;
  try {
    cmd = jiffy::parse_command_line(argv, fake_env);
  } catch (const jiffy::Error& e) {
    std::string_view what = e.what();
    FUZZ_CHECK(!what.empty());
    // One line, unless it quotes a word that holds a newline.
    bool quotes_newline = false;
    for (const std::string& w : argv) quotes_newline |= w.find('\n') != std::string::npos;
    quotes_newline |= g_timeout && g_timeout->find('\n') != std::string::npos;
    FUZZ_CHECK(quotes_newline || what.find('\n') == std::string_view::npos);
    return 0;
  }
  if (auto* l = std::get_if<jiffy::LaunchCommand>(&cmd)) {
    check_launch(l->options);
  } else if (auto* d = std::get_if<jiffy::DaemonCommand>(&cmd)) {
    const jiffy::DaemonOptions& o = d->options;
    FUZZ_CHECK(!o.cores || *o.cores >= 1);
    FUZZ_CHECK(!o.gpus || *o.gpus >= 0);
    FUZZ_CHECK(o.slots_per_core >= 1);
    FUZZ_CHECK(o.max_oversubscribe >= 1);
    FUZZ_CHECK(std::isfinite(o.idle_timeout_s) && o.idle_timeout_s >= 0);
  } else if (auto* t = std::get_if<jiffy::TopCommand>(&cmd)) {
    FUZZ_CHECK(std::isfinite(t->options.interval_s) && t->options.interval_s >= 0.1);
    FUZZ_CHECK(t->options.iterations >= 0);
  } else if (std::holds_alternative<jiffy::HelpCommand>(cmd)) {
    FUZZ_CHECK(jiffy::help_text()[0] != '\0');
  }
  return 0;
}
