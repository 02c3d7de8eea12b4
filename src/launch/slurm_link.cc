#include "launch/slurm_link.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "util/error.h"

extern char** environ;

namespace jiffy {

void run_scancel(const std::string& step, bool wait) {
  std::string prog = "scancel";
  std::string quiet = "--quiet";
  std::string target = step;
  char* argv[] = {prog.data(), quiet.data(), target.data(), nullptr};
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, "scancel", nullptr, &attr, argv, environ);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    std::fprintf(stderr, "jiffy: cannot run scancel %s: %s\n", step.c_str(), std::strerror(rc));
    return;
  }
  if (wait) ::waitpid(pid, nullptr, 0);
}

SlurmLink::SlurmLink(const std::string& command, const std::string& cwd, const std::string& label,
                     int ntasks, const std::string& tag) {
  try {
    client_ = DaemonClient::connect(/*start_if_missing=*/true);
    send({{"type", proto::type::kForward},
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

void SlurmLink::step_started(const std::string& step) {
  send({{"type", proto::type::kStep}, {"step", step}});
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
