#include "launch/sub_request.h"

#include <unistd.h>

#include <cstdint>

#include "util/error.h"

namespace jiffy {

JobGrant parse_grant(const proto::Json& msg, int ntasks) {
  JobGrant g;
  g.id = static_cast<unsigned long long>(proto::get_int(msg, "job", 1, INT64_MAX));
  g.exclusive = proto::get_bool(msg, "exclusive", false);
  const proto::Json& ranks = msg.at("ranks");
  if (!ranks.is_array() || ranks.size() != static_cast<std::size_t>(ntasks)) {
    throw Error("malformed grant from the daemon: wrong number of ranks");
  }
  for (const proto::Json& pair : msg.at("slots")) {
    g.slots.emplace_back(pair.at(0).get<int>(), pair.at(1).get<int>());
  }
  g.gpu_ids = proto::get_int_list(msg, "gpu_ids", 1 << 20, 0, 1 << 20);
  for (const proto::Json& r : ranks) {
    RankGrant rg;
    rg.cores = proto::get_int_list(r, "cores", 1 << 16, 0, 1 << 20);
    rg.cpus = proto::get_int_list(r, "cpus", 1 << 16, 0, CPU_SETSIZE - 1);
    for (const proto::Json& name : r.at("gpus")) rg.gpus.push_back(name.get<std::string>());
    g.ranks.push_back(std::move(rg));
  }
  return g;
}

std::unique_ptr<SubRequest> SubRequest::send(const DaemonPaths& paths, const Ask& ask) {
  DaemonClient client = DaemonClient::connect(paths, /*start_if_missing=*/false);
  client.send({{"type", proto::type::kSubmit},
               {"v", proto::kVersion},
               {"parent", ask.parent},
               {"asker", ask.asker},
               {"ntasks", ask.ntasks},
               {"cores_per_task", ask.cores_per_task},
               {"gpus_per_task", ask.gpus_per_task},
               {"gpus_per_job", 0},
               {"allow_oversubscribe", false},
               {"bind", ask.bind},
               {"pid", ::getpid()},
               {"command", ask.command},
               {"cwd", ask.cwd},
               {"progress", false}});
  return std::unique_ptr<SubRequest>(new SubRequest(paths, std::move(client), ask));
}

SubRequest::State SubRequest::on_ready() {
  if (!client_ || state_ != State::Waiting) {
    // A granted request's connection says nothing but a re-attach's `ok`;
    // a hang-up there is the daemon going (the ranks run on, as the job's
    // own do): their cores are told to its successor.
    if (client_) {
      try {
        while (auto msg = client_->read_available()) {
          if ((*msg)["type"] == proto::type::kError) client_.reset();  // refused: held until we exit
          if (!client_) break;
        }
      } catch (const Error& e) {
        client_.reset();
        if (daemon_restarting(e) && state_ == State::Granted) reattach();
      }
    }
    return state_;
  }
  try {
    while (auto msg = client_->read_available()) {
      const std::string& type = (*msg)["type"].get_ref<const std::string&>();
      if (type == proto::type::kGrant) {
        grant_ = parse_grant(*msg, ask_.ntasks);
        return state_ = State::Granted;
      }
      if (type == proto::type::kError) {
        why_ = proto::get_string(*msg, "message", 4096);
        client_.reset();
        return state_ = State::Refused;
      }
    }
  } catch (const Error& e) {
    why_ = daemon_restarting(e) ? "the daemon went away while the spawn waited for cores" : e.what();
    client_.reset();
    return state_ = State::Refused;
  }
  return state_;
}

// As DaemonLink's: the successor is started if need be, and accepts the
// cores only as its predecessor's ledger has them, with their parent and
// the family's tag (docs/protocol.md, "Spawned ranks"). Should that fail,
// they stay held, detached, until this launcher exits.
void SubRequest::reattach() {
  const proto::Json msg = {{"type", proto::type::kReattach}, {"v", proto::kVersion},
                           {"job", grant_.id},               {"parent", ask_.parent},
                           {"pgid", pgid_},                  {"ntasks", ask_.ntasks},
                           {"command", ask_.command},        {"slots", slot_pairs(grant_.slots)},
                           {"gpu_ids", grant_.gpu_ids},      {"exclusive", grant_.exclusive},
                           {"jobdir", ""},                   {"tag", tag_}};
  try {
    client_ = reattach_to_successor(paths_, msg);
  } catch (const Error&) {
    client_.reset();
  }
}

void SubRequest::finished(int code) {
  if (!client_) return;
  try {
    if (state_ == State::Granted) client_->send({{"type", proto::type::kFinished}, {"code", code}});
  } catch (const Error&) {
  }
  client_.reset();
}

}  // namespace jiffy
