// Fuzzes what one client sends on the daemon's socket, as far as the daemon
// acts on it without I/O (the real Server, sockets and all, is
// daemon_server_fuzzer.cc; this one is ~100x faster and checks more).
//
// Input: the raw byte stream of one connection (length-prefixed JSON frames,
// proto/message.h), e.g. a launcher's submit, started, finished.
//
// 1. proto::FrameDecoder: the stream decoded in one piece and in small
//    pieces (as a non-blocking socket delivers it) must give the same
//    messages and fail at the same point.
// 2. Each message is handled the way Server::dispatch and its handlers do
//    (same validators, same ranges, same order), against a real Scheduler
//    on a small fake machine that two other jobs already use: submit,
//    schedule, layout of every grant (whose reply is encoded and decoded
//    again), started, finished, reattach (adopt), status (rendered by
//    render_status). An Error or a JSON exception drops the client, as
//    Server::on_readable does; then the connection closes (cancel or
//    release, as Server::client_gone does).
// 3. Invariants: once everyone has left, every slot and GPU is free and
//    nothing is queued or running; no grant hands out a slot twice; layouts
//    name only existing cores, CPUs and GPUs.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/job_state.h"
#include "fuzz_util.h"
#include "daemon/status.h"
#include "proto/message.h"
#include "sched/layout.h"
#include "sched/scheduler.h"
#include "util/error.h"

namespace {

using jiffy::Error;
using jiffy::JobId;
using jiffy::JobState;
using jiffy::proto::Json;
namespace proto = jiffy::proto;

// Decodes the whole stream: the messages, and whether it ended in an error.
struct Decoded {
  std::vector<Json> messages;
  bool failed = false;
};

Decoded decode_whole(std::string_view in) {
  Decoded d;
  proto::FrameDecoder dec;
  dec.feed(in);
  try {
    while (auto m = dec.next()) d.messages.push_back(std::move(*m));
  } catch (const Error&) {
    d.failed = true;
  }
  return d;
}

Decoded decode_in_pieces(std::string_view in) {
  static constexpr std::size_t kPieces[] = {1, 3, 2, 7, 4, 61, 5, 1024, 1, 13};
  Decoded d;
  proto::FrameDecoder dec;
  std::size_t pos = 0, i = 0;
  try {
    while (pos < in.size()) {
      std::size_t n = std::min(kPieces[i++ % std::size(kPieces)], in.size() - pos);
      dec.feed(in.substr(pos, n));
      pos += n;
      while (auto m = dec.next()) d.messages.push_back(std::move(*m));
    }
  } catch (const Error&) {
    d.failed = true;
  }
  return d;
}

jiffy::Bind parse_bind(const std::string& s) {  // as server.cc
  if (s == "core") return jiffy::Bind::Core;
  if (s == "hwthread") return jiffy::Bind::HwThread;
  if (s == "none") return jiffy::Bind::None;
  throw Error("malformed submit message: unknown bind '" + s + "'");
}

// The part of Server that one client's messages reach.
class Model {
 public:
  Model() : rs_(jiffy::fuzz::machine()), sched_(rs_, jiffy::SchedPolicy{}) {
    // Two other launchers: one running on two cores, one waiting for four.
    for (auto [id, n] : {std::pair<JobId, int>{1, 2}, {2, 4}}) {
      jiffy::Request r;
      r.id = id;
      r.ntasks = n;
      sched_.submit(r);
      others_.insert(id);
    }
    next_job_ = 3;
    schedule_pass();
  }

  // Server::dispatch, minus the I/O.
  void dispatch(const Json& msg) {
    const std::string& type = msg["type"].get_ref<const std::string&>();
    if (type == proto::type::kSubmit) return handle_submit(msg);
    if (type == proto::type::kStarted) return handle_started(msg);
    if (type == proto::type::kFinished) return handle_finished(msg);
    if (type == proto::type::kStatus) return handle_status();
    if (type == proto::type::kStop) {
      stopping_ = true;
      return;
    }
    if (type == proto::type::kReattach) return handle_reattach(msg);
    throw Error("unknown message type '" + type.substr(0, 64) + "'");
  }

  bool stopping() const { return stopping_; }
  bool dropped() const { return dropped_; }
  void drop() { dropped_ = true; }

  // Server::client_gone, then the other launchers finish too.
  void close_all() {
    if (job_ != 0) {
      if (state_ == JobState::Queued) {
        sched_.cancel(job_);
      } else if (state_ == JobState::Granted || state_ == JobState::Running) {
        sched_.release(job_);
      }
      job_ = 0;
    }
    schedule_pass();
    for (JobId id : others_) {
      sched_.cancel(id);
      sched_.release(id);
    }
    others_.clear();
    schedule_pass();
    FUZZ_CHECK(sched_.queued() == 0);
    FUZZ_CHECK(sched_.running() == 0);
    FUZZ_CHECK(sched_.free_slots() == rs_.total_slots());
    FUZZ_CHECK(sched_.free_gpus() == static_cast<int>(rs_.gpus.size()));
    for (std::size_t c = 0; c < rs_.cores.size(); ++c) {
      for (int s = 0; s < rs_.cores[c].slots; ++s) {
        FUZZ_CHECK(sched_.slot_holder({static_cast<int>(c), s}) == 0);
      }
    }
  }

 private:
  void handle_submit(const Json& msg) {
    int v = static_cast<int>(proto::get_int(msg, "v", 0, 1 << 20));
    if (v != proto::kVersion) throw Error("protocol version not supported");
    if (job_ != 0) throw Error("submit sent twice on one connection");
    constexpr int kMax = 1 << 20;
    jiffy::Request r;
    r.ntasks = static_cast<int>(proto::get_int(msg, "ntasks", 1, kMax));
    r.cores_per_task = static_cast<int>(proto::get_int(msg, "cores_per_task", 1, kMax));
    r.gpus_per_task = static_cast<int>(proto::get_int(msg, "gpus_per_task", 0, kMax));
    r.gpus_per_job = static_cast<int>(proto::get_int(msg, "gpus_per_job", 0, kMax));
    if (static_cast<long long>(r.ntasks) * r.cores_per_task > kMax) throw Error("request too large");
    r.allow_oversubscribe = proto::get_bool(msg, "allow_oversubscribe", true);
    bind_ = parse_bind(proto::get_string(msg, "bind", 16));
    proto::get_int(msg, "pid", 0, 1 << 30);
    command_ = proto::get_string(msg, "command", 4096);
    proto::get_bool(msg, "progress", false);
    if (msg.contains("tag")) proto::get_tag(msg);
    JobId arrival = msg.contains("arrival")
                        ? static_cast<JobId>(proto::get_int(msg, "arrival", 0, INT64_MAX / 2))
                        : 0;
    bool arrival_free = arrival != 0 && !others_.count(arrival);
    r.id = arrival_free ? arrival : next_job_;
    try {
      sched_.submit(r);
    } catch (const Error&) {
      drop();  // answered and hung up
      return;
    }
    next_job_ = std::max(next_job_, r.id + 1);
    job_ = r.id;
    request_ = r;
    state_ = JobState::Queued;
    schedule_pass();
    if (state_ == JobState::Queued) FUZZ_CHECK(sched_.position(job_) >= 0);
  }

  void handle_started(const Json& msg) {
    if (state_ != JobState::Granted) throw Error("'started' before a grant");
    proto::get_int(msg, "pgid", 1, 1 << 30);
    // (The server also requires the group to be led by a child of the
    // launcher: /proc, covered by daemon_server_fuzzer.cc.)
    if (msg.contains("tag")) proto::get_tag(msg);
    if (msg.contains("jobdir")) proto::get_string(msg, "jobdir", 4096);
    state_ = JobState::Running;
  }

  void handle_finished(const Json& msg) {
    if (state_ != JobState::Granted && state_ != JobState::Running) {
      throw Error("'finished' without a running job");
    }
    proto::get_int(msg, "code", -1, 1 << 16);
    FUZZ_CHECK(jiffy::transition_allowed(state_, JobState::Exited));
    sched_.release(job_);
    state_ = JobState::Released;
    job_ = 0;
    schedule_pass();
  }

  void handle_reattach(const Json& msg) {
    if (proto::get_int(msg, "v", 0, 1 << 20) != proto::kVersion) throw Error("protocol version mismatch");
    if (job_ != 0) throw Error("reattach on a connection that already holds a job");
    JobId id = static_cast<JobId>(proto::get_int(msg, "job", 1, INT64_MAX / 2));
    if (others_.count(id)) throw Error("job is already attached");
    jiffy::Grant g;
    g.id = id;
    const Json& slots = msg.at("slots");
    if (!slots.is_array() || slots.size() > (1u << 20)) throw Error("malformed reattach message: slots");
    for (const Json& pair : slots) {
      if (!pair.is_array() || pair.size() != 2 || !pair[0].is_number_integer() || !pair[1].is_number_integer()) {
        throw Error("malformed reattach message: slot");
      }
      g.slots.push_back({pair[0].get<int>(), pair[1].get<int>()});
    }
    g.gpus = proto::get_int_list(msg, "gpu_ids", 1 << 20, 0, 1 << 20);
    g.exclusive = proto::get_bool(msg, "exclusive", false);
    int free_before = sched_.free_slots();
    try {
      sched_.adopt(g);
    } catch (const Error&) {
      FUZZ_CHECK(sched_.free_slots() == free_before);  // refused: nothing changed
      drop();
      return;
    }
    FUZZ_CHECK(sched_.free_slots() == free_before - static_cast<int>(g.slots.size()));
    for (const jiffy::SlotRef& s : g.slots) FUZZ_CHECK(sched_.slot_holder(s) == id);
    next_job_ = std::max(next_job_, id + 1);
    job_ = id;
    state_ = JobState::Running;
    proto::get_int(msg, "pgid", 0, 1 << 30);
    if (msg.contains("tag")) proto::get_string(msg, "tag", 64);
    request_ = jiffy::Request{};
    request_.id = id;
    request_.ntasks = static_cast<int>(proto::get_int(msg, "ntasks", 0, 1 << 20));
    command_ = proto::get_string(msg, "command", 4096);
    if (msg.contains("jobdir")) proto::get_string(msg, "jobdir", 4096);
  }

  // A status reply shaped like Server::status_json, rendered as
  // `jiffy status` prints it.
  void handle_status() {
    Json cores = Json::array();
    for (std::size_t i = 0; i < rs_.cores.size(); ++i) {
      Json holders = Json::array();
      for (int s = 0; s < rs_.cores[i].slots; ++s) {
        JobId h = sched_.slot_holder({static_cast<int>(i), s});
        holders.push_back(h ? Json(h) : Json(nullptr));
      }
      cores.push_back({{"id", i}, {"cpus", rs_.cores[i].pus}, {"numa", rs_.cores[i].numa},
                       {"slots", rs_.cores[i].slots}, {"holders", std::move(holders)}});
    }
    Json gpus = Json::array();
    for (std::size_t i = 0; i < rs_.gpus.size(); ++i) {
      JobId h = sched_.gpu_holder(static_cast<int>(i));
      gpus.push_back({{"id", i}, {"name", rs_.gpus[i].name}, {"holder", h ? Json(h) : Json(nullptr)}});
    }
    Json running = Json::array(), queued = Json::array();
    if (job_ != 0) {
      Json j = {{"job", job_}, {"ntasks", request_.ntasks}, {"slots", request_.slots()},
                {"gpus_requested", request_.gpus()}, {"pid", 1234}, {"command", command_},
                {"state", jiffy::to_string(state_)}};
      if (state_ == JobState::Queued) {
        j["position"] = sched_.position(job_);
        j["age_s"] = 1.5;
        queued.push_back(std::move(j));
      } else {
        j["cores"] = Json::array();
        j["gpus"] = Json::array();
        j["exclusive"] = false;
        j["age_s"] = 2.0;
        j["waited_s"] = 0.5;
        running.push_back(std::move(j));
      }
    }
    Json reply = {{"type", proto::type::kStatusReply},
                  {"daemon", {{"pid", 1}, {"uptime_s", 3.0}, {"key", "0123456789abcdef"},
                              {"socket", "/tmp/jiffy-0/0123456789abcdef.sock"}, {"clients", 3},
                              {"idle_timeout_s", 60.0}, {"max_oversubscribe", 8}}},
                  {"resources", {{"cores", std::move(cores)}, {"gpus", std::move(gpus)}}},
                  {"running", std::move(running)},
                  {"queued", std::move(queued)}};
    // What the client does with it: one frame, decoded with the status limit.
    proto::FrameDecoder dec(proto::kMaxStatusFrame);
    dec.feed(proto::encode(reply));
    std::optional<Json> back = dec.next();
    FUZZ_CHECK(back.has_value());
    (void)jiffy::render_status(*back);
  }

  // Server::schedule_pass: grants, each one's layout and its reply.
  void schedule_pass() {
    for (const jiffy::Grant& g : sched_.schedule()) {
      std::set<std::pair<int, int>> seen;
      for (const jiffy::SlotRef& s : g.slots) {
        FUZZ_CHECK(s.core >= 0 && s.core < static_cast<int>(rs_.cores.size()));
        FUZZ_CHECK(s.slot >= 0 && s.slot < rs_.cores[static_cast<std::size_t>(s.core)].slots);
        FUZZ_CHECK(seen.insert({s.core, s.slot}).second);
        FUZZ_CHECK(sched_.slot_holder(s) == g.id);
      }
      const bool mine = g.id == job_;
      FUZZ_CHECK(mine || others_.count(g.id));
      jiffy::Request req = request_;
      jiffy::Bind bind = bind_;
      if (!mine) {
        req = jiffy::Request{};
        req.id = g.id;
        req.ntasks = g.id == 1 ? 2 : 4;
        bind = jiffy::Bind::Core;
      } else {
        FUZZ_CHECK(transition_allowed(state_, JobState::Granted));
        state_ = JobState::Granted;
        if (!g.exclusive) FUZZ_CHECK(static_cast<int>(g.slots.size()) == req.slots());
        FUZZ_CHECK(static_cast<int>(g.gpus.size()) == req.gpus());
      }
      Json ranks = Json::array();
      std::vector<jiffy::RankPlacement> placements = jiffy::layout(rs_, req, g, bind);
      FUZZ_CHECK(static_cast<int>(placements.size()) == req.ntasks);
      for (const jiffy::RankPlacement& p : placements) {
        FUZZ_CHECK(!p.cores.empty());
        for (int c : p.cores) FUZZ_CHECK(c >= 0 && c < static_cast<int>(rs_.cores.size()));
        for (int cpu : p.cpus) FUZZ_CHECK(cpu >= 0 && cpu < 12);
        FUZZ_CHECK((bind == jiffy::Bind::None) == p.cpus.empty());
        Json names = Json::array();
        for (int i : p.gpus) {
          FUZZ_CHECK(i >= 0 && i < static_cast<int>(rs_.gpus.size()));
          names.push_back(rs_.gpus[static_cast<std::size_t>(i)].name);
        }
        ranks.push_back({{"cores", p.cores}, {"cpus", p.cpus}, {"gpus", names}});
      }
      Json slots = Json::array();
      for (const jiffy::SlotRef& r : g.slots) slots.push_back({r.core, r.slot});
      Json grant = {{"type", proto::type::kGrant}, {"job", g.id},           {"exclusive", g.exclusive},
                    {"slots", std::move(slots)},   {"gpu_ids", g.gpus},     {"ranks", std::move(ranks)}};
      // The launcher decodes what the daemon sends.
      proto::FrameDecoder dec;
      dec.feed(proto::encode(grant));
      std::optional<Json> back = dec.next();
      FUZZ_CHECK(back.has_value() && *back == grant);
    }
  }

  jiffy::ResourceSet rs_;
  jiffy::Scheduler sched_;
  std::set<JobId> others_;  // jobs of other launchers, never released before the end
  JobId next_job_ = 1;
  JobId job_ = 0;  // this client's
  JobState state_ = JobState::Submitted;
  jiffy::Request request_;
  jiffy::Bind bind_ = jiffy::Bind::Core;
  std::string command_;
  bool stopping_ = false;
  bool dropped_ = false;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);

  Decoded whole = decode_whole(in);
  Decoded pieces = decode_in_pieces(in);
  FUZZ_CHECK(whole.failed == pieces.failed);
  FUZZ_CHECK(whole.messages == pieces.messages);

  Model server;
  for (const Json& msg : whole.messages) {
    try {
      server.dispatch(msg);
    } catch (const Error&) {
      server.drop();
    } catch (const std::exception&) {  // e.g. a JSON type error: Server drops the client too
      server.drop();
    }
    if (server.dropped() || server.stopping()) break;
  }
  server.close_all();
  return 0;
}
