#include "launch/slurm_link.h"

#include <unistd.h>

#include <signal.h>

#include <cstdio>
#include <cstdlib>

#include "util/error.h"
#include "util/process.h"

namespace jiffy {

void run_scancel(const std::string& step) {
  if (!spawn_detached({"scancel", "--quiet", step})) {
    std::fprintf(stderr, "jiffy: cannot run scancel %s (not on PATH?)\n", step.c_str());
  }
}

void signal_step(const std::string& step, int sig) {
  const std::string name = sig == SIGTERM ? "TERM" : sig == SIGHUP ? "HUP" : sig == SIGQUIT ? "QUIT"
                           : std::to_string(sig);
  if (!spawn_detached({"scancel", "--quiet", "--signal=" + name, step})) {
    std::fprintf(stderr, "jiffy: cannot run scancel %s (not on PATH?)\n", step.c_str());
  }
}

SlurmLink::SlurmLink(const std::string& command, const std::string& cwd, const std::string& label,
                     int ntasks, const std::string& tag, const std::string& step_name) {
  try {
    client_ = DaemonClient::connect(/*start_if_missing=*/true);
    const char* conf = std::getenv("SLURM_CONF");
    send({{"type", proto::type::kForward},
          {"slurm_conf", conf ? conf : ""},
          {"step_name", step_name},
          // Outside an allocation srun makes a job of its own for the step:
          // that whole job is what a vanished launcher leaves behind.
          {"own_job", std::getenv("SLURM_JOB_ID") == nullptr},
          {"v", proto::kVersion},
          {"backend", "slurm"},
          {"pid", ::getpid()},
          {"ntasks", ntasks},
          {"command", command},
          {"cwd", cwd},
          {"label", label},
          {"tag", tag}});
  } catch (const Error& e) {
    std::fprintf(stderr, "jiffy: warning: the daemon cannot list this launch (%s)\n", e.what());
    client_.reset();
  }
}

void SlurmLink::send(const proto::Json& msg) {
  if (!client_) return;
  try {
    client_->send(msg);
  } catch (const Error&) {
    client_.reset();  // gone (a restart): this launch is no longer listed
  }
}

void SlurmLink::step_started(const std::string& step, const std::string& nodes) {
  send({{"type", proto::type::kStep}, {"step", step}, {"nodes", nodes}});
}

void SlurmLink::on_readable() {
  if (!client_) return;
  try {
    while (client_->read_available()) {
    }
  } catch (const Error&) {
    client_.reset();
  }
}

void SlurmLink::finished(int exit_code) {
  send({{"type", proto::type::kFinished}, {"exit_code", exit_code}});
}

}  // namespace jiffy
