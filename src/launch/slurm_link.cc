#include "launch/slurm_link.h"

#include <unistd.h>

#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "util/error.h"
#include "util/process.h"
#include "util/sys.h"

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
  const char* conf = std::getenv("SLURM_CONF");
  forward_ = {{"type", proto::type::kForward},
              {"slurm_conf", conf ? conf : ""},
              {"step_name", step_name},
              // Outside an allocation srun makes a job of its own for the
              // step: that whole job is what a vanished launcher leaves.
              {"own_job", std::getenv("SLURM_JOB_ID") == nullptr},
              {"v", proto::kVersion},
              {"backend", "slurm"},
              {"pid", ::getpid()},
              {"ntasks", ntasks},
              {"command", command},
              {"cwd", cwd},
              {"label", label},
              {"tag", tag}};
  if (std::string why = announce(); !why.empty()) {
    std::fprintf(stderr, "jiffy: warning: the daemon cannot list this launch (%s)\n", why.c_str());
  }
}

std::string SlurmLink::announce() {
  try {
    client_ = DaemonClient::connect(/*start_if_missing=*/true);
    client_->send(forward_);
    if (!step_.empty()) client_->send({{"type", proto::type::kStep}, {"step", step_}, {"nodes", nodes_}});
    told_at_ = now_s();
    return "";
  } catch (const Error& e) {
    client_.reset();
    return e.what();
  }
}

void SlurmLink::back_off(double now) {
  retry_at_ = now + pause_s_;
  pause_s_ = std::min(1.0, 2 * pause_s_);
}

// The daemon hung up (it died, or was stopped): its successor is told at
// once, and again, less and less often, for the restart window. A daemon
// that hangs up again within a second of being told keeps the backoff
// going (one that refuses us must not be asked in a tight loop).
void SlurmLink::lost(double now) {
  client_.reset();
  if (now - told_at_ > 1.0) {
    give_up_ = now + kRestartWindowS;
    pause_s_ = 0.005;
  }
  back_off(now);
}

void SlurmLink::retry(double now) {
  if (retry_at_ == 0 || now < retry_at_) return;
  if (announce().empty()) {
    retry_at_ = 0;
  } else if (now > give_up_) {
    retry_at_ = 0;
    std::fprintf(stderr, "jiffy: warning: lost the daemon; this launch is no longer listed\n");
  } else {
    back_off(now);
  }
}

void SlurmLink::send(const proto::Json& msg) {
  if (!client_) return;
  try {
    client_->send(msg);
  } catch (const Error&) {
    lost(now_s());
  }
}

void SlurmLink::step_started(const std::string& step, const std::string& nodes) {
  step_ = step;
  nodes_ = nodes;
  send({{"type", proto::type::kStep}, {"step", step}, {"nodes", nodes}});
}

void SlurmLink::on_readable(double now) {
  if (!client_) return;
  try {
    while (auto msg = client_->read_available()) {
      if ((*msg)["type"] == proto::type::kError) {  // refused: not asked again
        std::fprintf(stderr, "jiffy: warning: the daemon cannot list this launch (%s)\n",
                     proto::get_string(*msg, "message", 4096).c_str());
        client_.reset();
        return;
      }
    }
  } catch (const Error&) {
    lost(now);
  }
}

void SlurmLink::finished(int exit_code) {
  send({{"type", proto::type::kFinished}, {"exit_code", exit_code}});
  retry_at_ = 0;  // the end: a daemon that missed it has nothing to list
}

}  // namespace jiffy
