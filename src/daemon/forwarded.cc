#include "daemon/forwarded.h"

#include "util/error.h"

namespace jiffy {
namespace {

constexpr std::size_t kMaxText = 4096;

}  // namespace

bool is_step_name(const std::string& text) {
  if (!text.starts_with("jiffy-") || text.size() > 64 || text.size() == 6) return false;
  for (std::size_t i = 6; i < text.size(); ++i) {
    char c = text[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool is_slurm_step_id(const std::string& text) {
  if (text.empty() || text.size() > 40) return false;
  std::size_t dot = text.find('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 == text.size()) return false;
  bool plus_seen = false;
  for (std::size_t i = 0; i < dot; ++i) {
    char c = text[i];
    if (c == '+' && !plus_seen && i > 0 && i + 1 < dot) {
      plus_seen = true;
    } else if (c < '0' || c > '9') {
      return false;
    }
  }
  for (std::size_t i = dot + 1; i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') return false;
  }
  return true;
}

void Forwarded::add(int client, std::uint64_t job, const proto::Json& msg, double now) {
  Launch l;
  l.job = job;
  l.backend = proto::get_string(msg, "backend", 16);
  if (l.backend != "slurm") throw Error("forward: unknown backend '" + l.backend + "'");
  l.pid = static_cast<int>(proto::get_int(msg, "pid", 0, 1 << 30));
  l.ntasks = static_cast<int>(proto::get_int(msg, "ntasks", 1, 1 << 24));
  l.command = proto::get_string(msg, "command", kMaxText);
  l.cwd = msg.contains("cwd") ? proto::get_string(msg, "cwd", kMaxText) : "";
  l.label = msg.contains("label") ? proto::get_string(msg, "label", 1024) : "";
  l.tag = msg.contains("tag") ? proto::get_tag(msg) : "";
  l.slurm_conf = msg.contains("slurm_conf") ? proto::get_string(msg, "slurm_conf", kMaxText) : "";
  l.step_name = msg.contains("step_name") ? proto::get_string(msg, "step_name", 64) : "";
  l.own_job = proto::get_bool(msg, "own_job", false);
  if (!l.step_name.empty() && !is_step_name(l.step_name)) {
    throw Error("forward: not a step name of jiffy's: '" + l.step_name + "'");
  }
  l.since = now;
  launches_[client] = std::move(l);
}

void Forwarded::on_message(int client, const proto::Json& msg) {
  Launch& l = launches_.at(client);
  const std::string& type = msg["type"].get_ref<const std::string&>();
  if (type == proto::type::kStep) {
    std::string step = proto::get_string(msg, "step", 64);
    if (!is_slurm_step_id(step)) throw Error("step: not a Slurm step id: '" + step + "'");
    l.step = std::move(step);
    if (msg.contains("nodes")) l.nodes = proto::get_string(msg, "nodes", kMaxText);
  } else if (type == proto::type::kFinished) {
    l.finished = true;
  } else {
    throw Error("a forwarded launch may send only step and finished, not '" + type.substr(0, 64) + "'");
  }
}

std::vector<std::string> Forwarded::gone(int client) {
  auto it = launches_.find(client);
  if (it == launches_.end()) return {};
  const Launch& l = it->second;
  std::vector<std::string> cancel;
  if (!l.finished && (!l.step.empty() || !l.step_name.empty())) {
    if (!l.slurm_conf.empty()) cancel = {"env", "SLURM_CONF=" + l.slurm_conf};
    // The step first: cancelling a step kills its ranks at once (a job's
    // cancel sends SIGTERM and waits KillWait for the rest). Then srun's own
    // job, if srun made it (no allocation around the launch): with its
    // srun gone it would stay, holding its nodes.
    std::string script;
    if (!l.step.empty()) {
      script = l.own_job ? "scancel --quiet \"$1\"; scancel --quiet \"${1%%.*}\""
                         : "scancel --quiet \"$1\"";
    } else {
      // Never told its id (it lived under 0.1 s, or waited for resources):
      // found by name (-J names srun's own job too). srun died with the
      // launcher, so no step is made after this; one made just before is
      // found.
      script = "squeue -h -s --name=\"$1\" -o %i | xargs -r scancel --quiet";
      if (l.own_job) script += "; squeue -h --name=\"$1\" -o %i | xargs -r scancel --quiet";
    }
    cancel.insert(cancel.end(), {"sh", "-c", script, "sh", l.step.empty() ? l.step_name : l.step});
  }
  launches_.erase(it);
  return cancel;
}

proto::Json Forwarded::status(double now) const {
  proto::Json rows = proto::Json::array();
  for (const auto& [client, l] : launches_) {
    rows.push_back({{"job", l.job},
                    {"backend", l.backend},
                    {"pid", l.pid},
                    {"ntasks", l.ntasks},
                    {"command", l.command},
                    {"cwd", l.cwd},
                    {"label", l.label},
                    {"step", l.step},
                    {"nodes", l.nodes},
                    {"age_s", now - l.since}});
  }
  return rows;
}

}  // namespace jiffy
