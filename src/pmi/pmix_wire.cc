#include "pmi/pmix_wire.h"

#include "util/error.h"

namespace jiffy::pmix_wire {

namespace {

constexpr std::size_t kMaxRanks = 1 << 20;
constexpr std::size_t kMaxText = 1 << 16;  // a path, a namespace, a variable's value

Json string_pairs(const std::vector<std::pair<std::string, std::string>>& pairs) {
  Json out = Json::array();
  for (const auto& [k, v] : pairs) out.push_back({k, v});
  return out;
}

std::vector<std::pair<std::string, std::string>> parse_pairs(const Json& list, const char* what) {
  if (!list.is_array() || list.size() > kMaxRanks) throw Error(std::string("malformed ") + what);
  std::vector<std::pair<std::string, std::string>> out;
  for (const Json& p : list) {
    if (!p.is_array() || p.size() != 2 || !p[0].is_string() || !p[1].is_string() ||
        p[0].get_ref<const std::string&>().empty() || p[0].get_ref<const std::string&>().size() > kMaxText ||
        p[1].get_ref<const std::string&>().size() > kMaxText) {
      throw Error(std::string("malformed ") + what);
    }
    out.emplace_back(p[0].get<std::string>(), p[1].get<std::string>());
  }
  return out;
}

std::vector<std::string> parse_strings(const Json& msg, const char* field) {
  return proto::get_string_list(msg, field, kMaxRanks, kMaxText);
}

}  // namespace

Json job_message(const JobRequest& job) {
  return {{"type", type::kJob}, {"v", kVersion}, {"nspace", job.nspace}, {"appnum", job.appnum}, {"dir", job.dir}};
}

JobRequest parse_job(const Json& msg) {
  const auto v = proto::get_int(msg, "v", 0, 1 << 20);
  if (v != kVersion) {
    throw Error("this shared PMIx server speaks protocol " + std::to_string(kVersion) + ", the launcher " +
                std::to_string(v) + " (jiffy was upgraded while it ran): `jiffy stop` ends it once its jobs are done");
  }
  JobRequest j;
  j.nspace = proto::get_string(msg, "nspace", 255);
  j.appnum = proto::get_int_list(msg, "appnum", kMaxRanks, 0, 1 << 20);
  j.dir = proto::get_string(msg, "dir", 4096);
  if (j.nspace.empty() || j.appnum.empty() || j.dir.empty() || j.dir[0] != '/') {
    throw Error("malformed job message: a namespace, ranks and an absolute directory are needed");
  }
  return j;
}

Json world_message(const WorldRequest& w) {
  return {{"type", type::kWorld}, {"world", w.world}, {"appnum", w.appnum}, {"spawn_id", w.spawn_id}};
}

WorldRequest parse_world(const Json& msg) {
  WorldRequest w;
  w.world = static_cast<int>(proto::get_int(msg, "world", 1, 1 << 20));
  w.appnum = proto::get_int_list(msg, "appnum", kMaxRanks, 0, 1 << 20);
  w.spawn_id = static_cast<int>(proto::get_int(msg, "spawn_id", 0, 1 << 30));
  if (w.appnum.empty()) throw Error("malformed world message: no ranks");
  return w;
}

Json spawn_done_message(int spawn_id, bool ok, int world) {
  return {{"type", type::kSpawnDone}, {"spawn_id", spawn_id}, {"ok", ok}, {"world", world}};
}

Json abandon_port_message(const std::string& port) { return {{"type", type::kAbandonPort}, {"port", port}}; }

Json vars_message(int world, const std::vector<Vars>& ranks) {
  Json list = Json::array();
  for (const Vars& r : ranks) list.push_back(string_pairs(r));
  return {{"type", type::kVars}, {"world", world}, {"ranks", std::move(list)}};
}

std::vector<Vars> parse_vars(const Json& msg, int world, std::size_t nranks) {
  if (proto::get_int(msg, "world", 0, 1 << 20) != world) throw Error("malformed vars message: another world's");
  auto it = msg.find("ranks");
  if (it == msg.end() || !it->is_array() || it->size() != nranks) {
    throw Error("malformed vars message: not one entry per rank");
  }
  std::vector<Vars> out;
  for (const Json& r : *it) out.push_back(parse_pairs(r, "vars message"));
  return out;
}

Json event_message(const PmixEvent& e) {
  Json m = {{"type", type::kEvent}, {"kind", static_cast<int>(e.kind)}, {"world", e.world},
            {"rank", e.rank}, {"status", e.status}, {"message", e.message}, {"spawn_id", e.spawn_id}};
  if (e.kind == PmixEvent::Kind::Spawn) {
    Json apps = Json::array();
    for (const PmixSpawnApp& a : e.apps) {
      apps.push_back({{"command", a.command}, {"argv", a.argv}, {"nprocs", a.nprocs}, {"env", string_pairs(a.env)},
                      {"wdir", a.wdir}, {"hosts", a.hosts}, {"hostfile", a.hostfile}});
    }
    m["apps"] = std::move(apps);
  }
  return m;
}

PmixEvent parse_event(const Json& msg) {
  PmixEvent e;
  const auto kind = proto::get_int(msg, "kind", 0, static_cast<int>(PmixEvent::Kind::Spawn));
  e.kind = static_cast<PmixEvent::Kind>(kind);
  e.world = static_cast<int>(proto::get_int(msg, "world", 0, 1 << 20));
  e.rank = static_cast<int>(proto::get_int(msg, "rank", 0, 1 << 24));
  e.status = static_cast<int>(proto::get_int(msg, "status", INT32_MIN, INT32_MAX));
  e.message = proto::get_string(msg, "message", kMaxText);
  e.spawn_id = static_cast<int>(proto::get_int(msg, "spawn_id", 0, 1 << 30));
  if (e.kind == PmixEvent::Kind::Spawn) {
    auto it = msg.find("apps");
    if (it == msg.end() || !it->is_array() || it->empty() || it->size() > 4096) {
      throw Error("malformed event message: a spawn without programs");
    }
    for (const Json& a : *it) {
      if (!a.is_object()) throw Error("malformed event message: a program is not an object");
      PmixSpawnApp app;
      app.command = proto::get_string(a, "command", 4096);
      app.argv = parse_strings(a, "argv");
      app.nprocs = static_cast<int>(proto::get_int(a, "nprocs", 1, 1 << 20));
      auto env = a.find("env");
      if (env == a.end()) throw Error("malformed event message: no env");
      app.env = parse_pairs(*env, "event message");
      app.wdir = proto::get_string(a, "wdir", 4096);
      app.hosts = parse_strings(a, "hosts");
      app.hostfile = proto::get_string(a, "hostfile", 4096);
      e.apps.push_back(std::move(app));
    }
  }
  return e;
}

}  // namespace jiffy::pmix_wire
