// jiffy: the command users type. Reads like a table of contents: parse the
// command line, then hand over to the subcommand.
#include <limits.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "cli/command.h"
#include "cli/version.h"
#include "daemon/status.h"
#include "launch/client.h"
#include "launch/history_journal.h"
#include "launch/launcher.h"
#include "launch/pmix_shared.h"
#include "pmi/pmix_server.h"
#include "launch/output.h"
#include "util/runtime_dir.h"
#include "util/error.h"
#include "util/sys.h"
#include "views/top.h"

namespace {

using namespace jiffy;

std::optional<std::string> getenv_opt(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::optional<std::string>(v) : std::nullopt;
}

// `jiffy daemon ...` runs jiffyd, which alone links the topology library:
// in the foreground with --foreground, else detached (like the daemon a
// launcher starts), returning once it serves.
int run_daemon(const std::vector<std::string>& args, const DaemonOptions& opt) {
  if (!opt.foreground && !opt.detached_child) {
    DaemonPaths paths = daemon_paths();
    std::vector<std::string> extra(args.begin() + 2, args.end());
    std::string verdict = start_daemon(paths, extra);
    if (verdict == "running") {
      throw Error("a daemon is already running for this resource set (" + paths.shown(paths.socket) + ")");
    }
    if (verdict != "ok") throw Error(verdict.substr(verdict.rfind("error: ", 0) == 0 ? 7 : 0));
    std::fprintf(stderr, "jiffy: daemon started (socket %s, log %s)\n", paths.shown(paths.socket).c_str(),
                 paths.shown(paths.log).c_str());
    return 0;
  }
  std::string exe = daemon_executable();
  std::vector<char*> argv;
  std::string name = "jiffyd:" + daemon_paths().identity;  // its rendezvous name (daemon/rendezvous.h)
  argv.push_back(name.data());
  for (std::size_t i = 1; i < args.size(); ++i) argv.push_back(const_cast<char*>(args[i].c_str()));
  argv.push_back(nullptr);
  ::execv(exe.c_str(), argv.data());
  throw_errno("cannot run " + exe);
}

// The daemon's status reply; nullopt when no daemon runs. A daemon that
// dies as we ask (SIGKILL tears a process down with its listening socket
// open a moment longer; `jiffy stop`) is asked no more, and a successor,
// if one is starting, is asked instead (DaemonClient::ask).
std::optional<proto::Json> ask_status(bool start_if_missing = false) {
  return DaemonClient::ask({{"type", proto::type::kStatus}, {"v", proto::kVersion}},
                           static_cast<int>(daemon_answer_timeout_s() * 1000), start_if_missing);
}

int run_status(const StatusCommand& cmd) {
  auto reply = ask_status();
  if (!reply) {
    std::puts(cmd.json ? "{\"daemon\":null}" : "no daemon running for this resource set");
    return 0;
  }
  if ((*reply)["type"] == proto::type::kError) throw Error(proto::get_string(*reply, "message", 4096));
  if (std::optional<proto::Json> pmix = shared_pmix_status(daemon_paths())) (*reply)["pmix_server"] = *pmix;
  if (cmd.json) {
    reply->erase("type");
    std::puts(reply->dump(2, ' ', false, proto::Json::error_handler_t::replace).c_str());
  } else {
    std::fputs(render_status(*reply).c_str(), stdout);
  }
  return 0;
}

// `jiffy resource-spec`: the daemon's GPUs (it starts if none runs) as a
// CTest resource specification file, one slot each, by the names that
// CTest then hands back in CTEST_RESOURCE_GROUP_<N>_GPUS (cli/ctest.h).
// Cores are not listed: jiffy arbitrates them itself.
int run_resource_spec() {
  auto reply = ask_status(/*start_if_missing=*/true);
  if (!reply) throw Error("no daemon answered");
  if ((*reply)["type"] == proto::type::kError) throw Error(proto::get_string(*reply, "message", 4096));
  proto::Json gpus = proto::Json::array();
  for (const proto::Json& g : reply->at("resources").at("gpus")) {
    gpus.push_back({{"id", g.at("name")}, {"slots", 1}});
  }
  proto::Json spec = {{"version", {{"major", 1}, {"minor", 0}}}, {"local", {{{"gpus", gpus}}}}};
  std::puts(spec.dump(2).c_str());
  return 0;
}

// Stops the daemon of this resource set and waits until it has closed its
// socket, so that "stop" then "start" works. One that dies before it has
// said "ok" (killed, or stopping already) is gone: a successor that came up
// meanwhile is stopped in its turn.
int run_stop() {
  // The set's shared PMIx server first: it takes no more jobs, and exits
  // when its last one has ended.
  try {
    stop_shared_pmix(daemon_paths());
  } catch (const Error&) {
    // None there to stop, or not ours: the daemon is what `stop` is about.
  }
  const double give_up = now_s() + kRestartWindowS;
  RestartBackoff backoff;
  for (;;) {
    auto client = DaemonClient::connect_existing();
    if (!client) return 0;
    bool acknowledged = false;
    try {
      client->send({{"type", proto::type::kStop}, {"v", proto::kVersion}});
      acknowledged = client->receive(10000).has_value();
      while (client->receive(10000)) {
      }
      return 0;  // still open after 10 s: it is stopping all the same
    } catch (const Error& e) {
      if (acknowledged || !daemon_restarting(e)) return 0;  // it closed: stopped
      if (now_s() > give_up) throw;
    }
    backoff.pause();
  }
}

// `name` in the directory of this executable.
std::string sibling_executable(const char* name) {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw_errno("readlink /proc/self/exe");
  std::string exe(buf, static_cast<std::size_t>(n));
  return exe.substr(0, exe.rfind('/') + 1) + name;
}

// `jiffy history` and `jiffy report` run jiffy-history, beside this
// executable: the launch path never links SQLite.
[[noreturn]] void run_view(const ViewCommand& cmd) {
  std::string exe = sibling_executable("jiffy-history");
  std::vector<char*> argv;
  argv.push_back(exe.data());
  for (const std::string& a : cmd.args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execv(exe.c_str(), argv.data());
  throw_errno("cannot run " + exe);
}

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t started_ns = realtime_ns();  // the launch's submit time (its history record)
  std::vector<std::string> args(argv, argv + argc);
  own_blocking_stdio();  // before anything is written (launch/output.h)
  try {
    // A launcher's PMIx server for a job that started without one
    // (launch/bootstrap.h, the rendezvous); jiffy-pmix only.
    if (args.size() > 1 && args[1] == "--jiffy-pmix-host") {
      return PmixServer::host_main(std::vector<std::string>(args.begin() + 2, args.end()));
    }
    // The shared PMIx server of a resource set (launch/pmix_shared.h);
    // jiffy-pmix only.
    if (args.size() > 1 && args[1] == "--jiffy-pmix-serve") {
      return PmixServer::serve_main(std::vector<std::string>(args.begin() + 2, args.end()));
    }
    // The front (src/front) continues a launch here: launch/handoff.h. The
    // state is in our environment, not our arguments (anyone can read
    // those): taken out at once, so that no child inherits it.
    std::optional<Handoff> handoff;
    if (args.size() > 1 && args[1] == "--jiffy-handoff") {
      std::optional<std::string> state = take_handoff_state();
      args.erase(args.begin() + 1);
      // A front older than this launcher (mid-upgrade) put it in argv.
      if (!state && args.size() > 1 && args[1].rfind("v=", 0) == 0) {
        state = args[1];
        args.erase(args.begin() + 1);
      }
      if (!state) throw Error("malformed hand-over state: no " + std::string(kHandoffVar));
      handoff = parse_handoff(*state);
    }
    Command cmd = parse_command_line(args, getenv_opt);
    if (auto* c = std::get_if<LaunchCommand>(&cmd)) {
      return run_launch(c->options, args, handoff ? &*handoff : nullptr, started_ns);
    }
    if (auto* c = std::get_if<DaemonCommand>(&cmd)) return run_daemon(args, c->options);
    if (auto* c = std::get_if<StatusCommand>(&cmd)) return run_status(*c);
    if (auto* c = std::get_if<TopCommand>(&cmd)) return run_top(c->options);
    if (std::holds_alternative<StopCommand>(cmd)) return run_stop();
    if (std::holds_alternative<ResourceSpecCommand>(cmd)) return run_resource_spec();
    if (auto* c = std::get_if<ViewCommand>(&cmd)) run_view(*c);
    if (std::holds_alternative<HelpCommand>(cmd)) {
      std::fputs(help_text(), stdout);
      return 0;
    }
    std::fputs(version_text().c_str(), stdout);
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "jiffy: %s\n", e.what());
    return 1;
  }
}
