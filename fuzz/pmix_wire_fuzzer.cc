// Fuzzes the shared PMIx server's protocol (pmi/pmix_wire.h), both ways:
// what a launcher sends the server (job, world, spawn_done, abandon_port,
// stop) and what the server sends a launcher (vars, event, error).
//
// Input: the raw byte stream of one connection (length-prefixed JSON
// frames, as proto/message.h).
//
// 1. Each message is parsed as its type says, with the parser that side
//    uses (parse_job, parse_world, parse_vars, parse_event); an Error (or a
//    JSON exception) is a refusal, as pmix_service.cc and pmix_remote.cc
//    take it.
// 2. What a parser accepts is encoded again and parsed again: the same
//    value must come back (the encoders and parsers agree on every field).
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <string_view>

#include "fuzz_util.h"
#include "pmi/pmix_wire.h"
#include "proto/message.h"
#include "util/error.h"

namespace {

namespace wire = jiffy::pmix_wire;
using jiffy::PmixEvent;
using jiffy::pmix_wire::Json;

bool same(const PmixEvent& a, const PmixEvent& b) {
  if (a.kind != b.kind || a.world != b.world || a.rank != b.rank || a.status != b.status ||
      a.message != b.message || a.spawn_id != b.spawn_id || a.apps.size() != b.apps.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.apps.size(); ++i) {
    const auto &x = a.apps[i], &y = b.apps[i];
    if (x.command != y.command || x.argv != y.argv || x.nprocs != y.nprocs || x.env != y.env ||
        x.wdir != y.wdir || x.hosts != y.hosts || x.hostfile != y.hostfile) {
      return false;
    }
  }
  return true;
}

Json again(const Json& m) {
  jiffy::proto::FrameDecoder d(wire::kMaxFrame);
  d.feed(jiffy::proto::encode(m));
  std::optional<Json> back = d.next();
  FUZZ_CHECK(back.has_value());
  return *back;
}

void check(const Json& m) {
  const std::string& type = m["type"].get_ref<const std::string&>();
  if (type == wire::type::kJob) {
    wire::JobRequest j = wire::parse_job(m);
    wire::JobRequest k = wire::parse_job(again(wire::job_message(j)));
    FUZZ_CHECK(k.nspace == j.nspace && k.appnum == j.appnum && k.dir == j.dir);
  } else if (type == wire::type::kWorld) {
    wire::WorldRequest w = wire::parse_world(m);
    wire::WorldRequest x = wire::parse_world(again(wire::world_message(w)));
    FUZZ_CHECK(x.world == w.world && x.appnum == w.appnum && x.spawn_id == w.spawn_id);
  } else if (type == wire::type::kVars) {
    auto it = m.find("ranks");
    const std::size_t n = it != m.end() && it->is_array() ? it->size() : 0;
    const int world = static_cast<int>(jiffy::proto::get_int(m, "world", 0, 1 << 20));
    std::vector<wire::Vars> v = wire::parse_vars(m, world, n);
    FUZZ_CHECK(wire::parse_vars(again(wire::vars_message(world, v)), world, n) == v);
  } else if (type == wire::type::kEvent) {
    PmixEvent e = wire::parse_event(m);
    FUZZ_CHECK(e.kind != PmixEvent::Kind::Lost);  // never on the wire
    FUZZ_CHECK(same(wire::parse_event(again(wire::event_message(e))), e));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  jiffy::proto::FrameDecoder dec(wire::kMaxFrame);
  dec.feed(std::string_view(reinterpret_cast<const char*>(data), size));
  for (;;) {
    std::optional<Json> m;
    try {
      m = dec.next();
    } catch (const jiffy::Error&) {
      return 0;  // the connection is dropped
    }
    if (!m) return 0;
    try {
      check(*m);
    } catch (const jiffy::Error&) {
    } catch (const std::exception&) {  // a JSON type error: refused too
    }
  }
}
