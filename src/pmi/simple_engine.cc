// SimpleEngine: line framing, a command table, a KVS map and a counted barrier.
//
// on_data() cuts complete lines out of each rank's input and hands them to
// handle_line(): inside a spawn block to handle_spawn_line(), otherwise to
// Request::parse() and dispatch(), which checks the rank's state against the
// command's table entry and calls its handler. Handlers answer through reply().
// Every path that ends a rank's conversation (protocol error, abort,
// disconnect) marks it closed *before* running a callback, so a callback may
// re-enter the engine and on_data() stops at the rank's next line.
//
// The barrier is counted by scanning the ranks: N is at most a node's slots
// times the oversubscription factor, and a job runs about four barriers.
#include "pmi/simple_engine.h"

#include <algorithm>
#include <charconv>
#include <optional>
#include <utility>

#include "util/error.h"

namespace jiffy::pmi {

namespace {

// PMI error codes (MPICH pmi.h). The client maps any rc other than "0" to
// PMI_FAIL; the specific code only helps someone reading a trace.
constexpr int kPmiFail = -1;
constexpr int kPmiErrInvalidArg = 3;
constexpr int kPmiErrInvalidKey = 4;
constexpr int kPmiErrInvalidKeyLength = 5;
constexpr int kPmiErrInvalidValLength = 7;
constexpr int kPmiErrInvalidKvs = 14;

// Keys the server answers itself and ranks never put (pmi.md A5).
// MPICH builds its node map from PMI_process_mapping; MVAPICH2 fails in
// MPI_Init without it. For N ranks on one node it is (vector,(0,1,N)).
constexpr std::string_view kProcessMappingKey = "PMI_process_mapping";
// Read only by MPICH's failed-process query; empty means "none have died".
constexpr std::string_view kDeadProcessesKey = "PMI_dead_processes";

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// A whole string as an int; nothing for empty, trailing junk or overflow.
std::optional<int> parse_int(std::string_view s) {
  int v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

// s for an error message: quoted, cut to 80 bytes, non-printables as '?'.
std::string quote(std::string_view s) {
  constexpr std::size_t kMax = 80;
  std::string out = "'";
  for (char c : s.substr(0, kMax)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  out += s.size() > kMax ? "...'" : "'";
  return out;
}

// The value of the first item named key in a spawn block.
const std::string* find_item(const KeyValues& block, std::string_view key) {
  for (const auto& [k, v] : block) {
    if (k == key) return &v;
  }
  return nullptr;
}

// count pairs name_key_<i> / name_val_<i>, i from 0, after name_num
// (simple_pmi.c writes preput and info so). Returns "" or why not.
std::string read_pairs(const KeyValues& block, const std::string& name, KeyValues* out) {
  const std::string* num = find_item(block, name + "_num");
  if (!num) return "";
  std::optional<int> n = parse_int(*num);
  if (!n || *n < 0 || *n > 1024) return "bad_" + name + "_num";
  for (int i = 0; i < *n; ++i) {
    const std::string* key = find_item(block, name + "_key_" + std::to_string(i));
    const std::string* val = find_item(block, name + "_val_" + std::to_string(i));
    if (!key || !val) return "missing_" + name + "_" + std::to_string(i);
    out->emplace_back(*key, *val);
  }
  return "";
}

// One block of a spawn request as an app (and the request's preput pairs).
// Returns "" or why the block makes no request, as one word for the reply.
std::string read_spawn_block(const KeyValues& block, SpawnApp* app, KeyValues* preput) {
  const std::string* nprocs = find_item(block, "nprocs");
  std::optional<int> n = nprocs ? parse_int(*nprocs) : std::nullopt;
  if (!n || *n < 1 || *n > SimpleEngine::kMaxSpawnProcs) return "bad_nprocs";
  app->nprocs = *n;
  const std::string* exe = find_item(block, "execname");
  if (!exe || exe->empty()) return "missing_execname";
  app->execname = *exe;
  const std::string* argcnt = find_item(block, "argcnt");
  std::optional<int> nargs = argcnt ? parse_int(*argcnt) : std::optional<int>(0);
  if (!nargs || *nargs < 0 || *nargs > 4096) return "bad_argcnt";
  for (int i = 1; i <= *nargs; ++i) {  // arg1..argN (1-based, unlike the pairs)
    const std::string* arg = find_item(block, "arg" + std::to_string(i));
    if (!arg) return "missing_arg" + std::to_string(i);
    app->args.push_back(*arg);
  }
  if (std::string why = read_pairs(block, "info", &app->info); !why.empty()) return why;
  KeyValues pairs;
  if (std::string why = read_pairs(block, "preput", &pairs); !why.empty()) return why;
  for (const auto& [key, val] : pairs) {
    if (key.empty() || key.size() > static_cast<std::size_t>(SimpleEngine::kKeylenMax) ||
        val.size() > static_cast<std::size_t>(SimpleEngine::kVallenMax)) {
      return "bad_preput_key";
    }
  }
  if (preput->empty()) *preput = std::move(pairs);  // every block repeats them
  return "";
}

}  // namespace

int SpawnRequest::total_procs() const {
  long long n = 0;
  for (const SpawnApp& a : apps) n += a.nprocs;
  return static_cast<int>(std::min<long long>(n, 1LL << 30));
}

// One request line as key=value tokens, each split at its first '=' (MPICH
// puts values like "segments=3"). Views point into the caller's line.
class SimpleEngine::Request {
 public:
  // Nothing, with *why set, for an empty line or a token without a key or '='.
  static std::optional<Request> parse(std::string_view line, std::string* why) {
    Request req;
    std::string_view rest = line;
    while (true) {
      while (!rest.empty() && is_space(rest.front())) rest.remove_prefix(1);
      if (rest.empty()) break;
      std::size_t end = 0;
      while (end < rest.size() && !is_space(rest[end])) ++end;
      std::string_view token = rest.substr(0, end);
      rest.remove_prefix(end);
      std::size_t eq = token.find('=');
      if (eq == std::string_view::npos || eq == 0) {
        *why =
            "malformed PMI request (token " + quote(token) + " is not key=value): " + quote(line);
        return std::nullopt;
      }
      req.tokens_.emplace_back(token.substr(0, eq), token.substr(eq + 1));
    }
    if (req.tokens_.empty()) {
      *why = "empty PMI request line";
      return std::nullopt;
    }
    return req;
  }

  // The value of the first token named key (MPICH's own parser also takes the
  // first); nothing when absent.
  std::optional<std::string_view> get(std::string_view key) const {
    for (const auto& [k, v] : tokens_) {
      if (k == key) return v;
    }
    return std::nullopt;
  }

 private:
  std::vector<std::pair<std::string_view, std::string_view>> tokens_;
};

SimpleEngine::SimpleEngine(JobInfo info, Callbacks cb)
    : info_(std::move(info)), cb_(std::move(cb)) {
  if (info_.size < 1) throw Error("PMI job size must be at least 1");
  if (info_.appnum.size() != static_cast<std::size_t>(info_.size)) {
    throw Error("PMI job needs one appnum per rank (" + std::to_string(info_.appnum.size()) +
                " for " + std::to_string(info_.size) + " ranks)");
  }
  if (info_.kvsname.empty() || info_.kvsname.size() > static_cast<std::size_t>(kKvsnameMax)) {
    throw Error("PMI kvsname must be 1 to " + std::to_string(kKvsnameMax) + " bytes");
  }
  for (char c : info_.kvsname) {
    if (c <= 0x20 || c == 0x7f)
      throw Error("PMI kvsname " + quote(info_.kvsname) + " has whitespace");
  }
  if (!cb_.send || !cb_.abort || !cb_.finalized || !cb_.protocol_error) {
    throw Error("PMI engine needs all four callbacks");
  }
  for (const auto& [key, val] : info_.preput) {
    if (key.empty() || key.size() > static_cast<std::size_t>(kKeylenMax) ||
        val.size() > static_cast<std::size_t>(kVallenMax) || key == kProcessMappingKey ||
        key == kDeadProcessesKey) {
      throw Error("PMI preput key " + quote(key) + " is not one a rank could put");
    }
    kvs_.insert_or_assign(key, val);
  }
  ranks_.resize(static_cast<std::size_t>(info_.size));
}

const SimpleEngine::Command* SimpleEngine::find_command(std::string_view name) {
  // name is "cmd=<x>" or "mcmd=<x>". needs_init / lock_step: see Command.
  static const Command kCommands[] = {
      {"cmd=init", &SimpleEngine::on_init, false, true},
      {"cmd=get_maxes", &SimpleEngine::on_get_maxes, true, true},
      {"cmd=get_appnum", &SimpleEngine::on_get_appnum, true, true},
      {"cmd=get_my_kvsname", &SimpleEngine::on_get_my_kvsname, true, true},
      {"cmd=get_universe_size", &SimpleEngine::on_get_universe_size, true, true},
      {"cmd=put", &SimpleEngine::on_put, true, true},
      {"cmd=get", &SimpleEngine::on_get, true, true},
      {"cmd=barrier_in", &SimpleEngine::on_barrier_in, true, true},
      {"cmd=finalize", &SimpleEngine::on_finalize, true, true},
      // A rank may abort at any time, even from a second thread while its
      // first waits in a barrier; the job is going down either way.
      {"cmd=abort", &SimpleEngine::on_abort, false, false},
      {"cmd=publish_name", &SimpleEngine::on_publish_name, true, true},
      {"cmd=unpublish_name", &SimpleEngine::on_unpublish_name, true, true},
      {"cmd=lookup_name", &SimpleEngine::on_lookup_name, true, true},
      {"mcmd=spawn", &SimpleEngine::on_spawn, true, true},
  };
  for (const Command& c : kCommands) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

SimpleEngine::Rank& SimpleEngine::rank_at(int rank) {
  return const_cast<Rank&>(std::as_const(*this).rank_at(rank));
}

const SimpleEngine::Rank& SimpleEngine::rank_at(int rank) const {
  if (rank < 0 || rank >= info_.size) {
    throw Error("PMI rank " + std::to_string(rank) + " is not in [0, " +
                std::to_string(info_.size) + ")");
  }
  return ranks_[static_cast<std::size_t>(rank)];
}

bool SimpleEngine::initialized(int rank) const { return rank_at(rank).initialized; }
bool SimpleEngine::finalized(int rank) const { return rank_at(rank).finalized; }
bool SimpleEngine::ever_connected(int rank) const { return rank_at(rank).spoke; }

void SimpleEngine::on_data(int rank, std::string_view bytes) {
  Rank& r = rank_at(rank);  // ranks_ never resizes: the reference stays valid
  while (!r.closed && !bytes.empty()) {
    std::size_t nl = bytes.find('\n');
    std::size_t len = r.partial.size() + (nl == std::string_view::npos ? bytes.size() : nl);
    if (len > kMaxLineBytes) {
      r.spoke = true;
      fail_protocol(rank, "PMI request line longer than " + std::to_string(kMaxLineBytes) +
                              " bytes: " + quote(r.partial.empty() ? bytes : r.partial));
      return;
    }
    if (nl == std::string_view::npos) {
      r.partial.append(bytes);
      return;
    }
    std::string line = std::exchange(r.partial, {});
    line.append(bytes.substr(0, nl));
    bytes.remove_prefix(nl + 1);
    handle_line(rank, line);
  }
}

bool SimpleEngine::on_disconnect(int rank) {
  Rank& r = rank_at(rank);
  if (r.closed) return false;  // already reported, or a second call
  r.closed = true;
  r.partial.clear();
  r.in_barrier = false;
  r.in_spawn_block = false;
  r.awaiting_spawn = false;
  // Hydra semantics: a rank that spoke PMI must finalize before it goes.
  if (r.initialized && !r.finalized) {
    job_failed_ = true;
    return true;
  }
  // The rank can never enter a barrier now; the others may be complete.
  maybe_release_barrier();
  return false;
}

void SimpleEngine::handle_line(int rank, std::string_view line) {
  Rank& r = rank_at(rank);
  r.spoke = true;
  if (r.in_spawn_block) {
    handle_spawn_line(rank, line);
    return;
  }
  std::string why;
  std::optional<Request> req = Request::parse(line, &why);
  if (!req) {
    fail_protocol(rank, why);
    return;
  }
  dispatch(rank, *req);
}

void SimpleEngine::dispatch(int rank, const Request& req) {
  std::string name;
  if (auto cmd = req.get("cmd")) {
    name = "cmd=" + std::string(*cmd);
  } else if (auto mcmd = req.get("mcmd")) {
    name = "mcmd=" + std::string(*mcmd);
  } else {
    fail_protocol(rank, "PMI request without cmd");
    return;
  }
  const Command* command = find_command(name);
  // RFC 13 treats an unknown command as a protocol error. Answering
  // "<cmd>_result rc=-1" would not help: the client expects a reply named
  // after the command, which we cannot know, and fails on any other.
  if (command == nullptr) {
    fail_protocol(rank, "unknown PMI command " + quote(name));
    return;
  }
  const Rank& r = rank_at(rank);
  if (command->lock_step && r.in_barrier) {
    fail_protocol(rank, "PMI request " + quote(name) + " while waiting in a barrier");
  } else if (command->lock_step && r.awaiting_spawn) {
    fail_protocol(rank, "PMI request " + quote(name) + " while waiting for its spawn");
  } else if (command->lock_step && r.finalized) {
    fail_protocol(rank, "PMI request " + quote(name) + " after finalize");
  } else if (command->needs_init && !r.initialized) {
    fail_protocol(rank, "PMI request " + quote(name) + " before init");
  } else {
    (this->*command->handler)(rank, req);
  }
}

void SimpleEngine::reply(int rank, std::string_view line) {
  if (rank_at(rank).closed) return;  // closed by a callback re-entering us
  cb_.send(rank, line);
}

void SimpleEngine::fail_protocol(int rank, const std::string& why) {
  Rank& r = rank_at(rank);
  r.closed = true;
  r.partial.clear();
  r.in_barrier = false;
  r.in_spawn_block = false;
  r.awaiting_spawn = false;
  job_failed_ = true;
  cb_.protocol_error(rank, why);
}

void SimpleEngine::maybe_release_barrier() {
  if (job_failed_) return;
  bool anyone_waiting = false;
  for (const Rank& r : ranks_) {
    if (r.in_barrier) {
      anyone_waiting = true;
    } else if (!r.finalized && !r.closed) {
      return;  // may still enter (or has not even connected yet)
    }
  }
  if (!anyone_waiting) return;
  // Clear every flag before the first send, so a callback that re-enters
  // the engine sees the barrier already over.
  std::vector<int> waiting;
  for (std::size_t i = 0; i < ranks_.size(); ++i) {
    if (ranks_[i].in_barrier) {
      ranks_[i].in_barrier = false;
      waiting.push_back(static_cast<int>(i));
    }
  }
  // The client does not check this rc (simple_pmi.c PMI_Barrier): a failed
  // barrier can only be signalled by killing the job, hence job_failed_.
  for (int rank : waiting) reply(rank, "cmd=barrier_out rc=0\n");
}

void SimpleEngine::on_init(int rank, const Request& req) {
  std::optional<int> version = parse_int(req.get("pmi_version").value_or(""));
  std::optional<int> subversion = parse_int(req.get("pmi_subversion").value_or(""));
  // Like Hydra: 1.0 and 1.1 are answered with 1.1. The MPICH client checks
  // only rc, and rc=0 is mandatory (an absent rc reads as a version mismatch).
  if (version == 1 && (subversion == 0 || subversion == 1)) {
    // A second init is answered like the first: Hydra does, and a library and
    // MPI that both call PMI_Init in one process share one fd.
    rank_at(rank).initialized = true;
    reply(rank, "cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1\n");
    return;
  }
  // Our version in the reply lets the client print "client=2.0 mgr=1.1".
  reply(rank,
        "cmd=response_to_init rc=-1 pmi_version=1 pmi_subversion=1 msg=unsupported_version\n");
  std::string asked = std::string(req.get("pmi_version").value_or("?")) + "." +
                      std::string(req.get("pmi_subversion").value_or("?"));
  std::string hint = version == 2 ? " (PMI-2 is not served; is it linked against libpmi2?)" : "";
  fail_protocol(rank, "unsupported PMI version " + quote(asked) + ", only 1.1 is served" + hint);
}

void SimpleEngine::on_get_maxes(int rank, const Request&) {
  reply(rank, "cmd=maxes rc=0 kvsname_max=" + std::to_string(kKvsnameMax) + " keylen_max=" +
                  std::to_string(kKeylenMax) + " vallen_max=" + std::to_string(kVallenMax) + "\n");
}

void SimpleEngine::on_get_appnum(int rank, const Request&) {
  reply(rank, "cmd=appnum rc=0 appnum=" +
                  std::to_string(info_.appnum[static_cast<std::size_t>(rank)]) + "\n");
}

void SimpleEngine::on_get_my_kvsname(int rank, const Request&) {
  reply(rank, "cmd=my_kvsname rc=0 kvsname=" + info_.kvsname + "\n");
}

void SimpleEngine::on_get_universe_size(int rank, const Request&) {
  reply(rank, "cmd=universe_size rc=0 size=" + std::to_string(info_.universe_size) + "\n");
}

std::string SimpleEngine::check_kvsname_and_key(const Request& req) const {
  auto error = [](int rc, std::string_view msg) {
    return "rc=" + std::to_string(rc) + " msg=" + std::string(msg);
  };
  std::optional<std::string_view> kvsname = req.get("kvsname");
  std::optional<std::string_view> key = req.get("key");
  if (!kvsname) return error(kPmiErrInvalidArg, "missing_kvsname");
  if (*kvsname != info_.kvsname) return error(kPmiErrInvalidKvs, "unknown_kvsname");
  if (!key) return error(kPmiErrInvalidArg, "missing_key");
  if (key->empty()) return error(kPmiErrInvalidKey, "empty_key");
  if (key->size() > static_cast<std::size_t>(kKeylenMax)) {
    return error(kPmiErrInvalidKeyLength, "key_too_long");
  }
  return {};
}

void SimpleEngine::on_put(int rank, const Request& req) {
  std::string error = check_kvsname_and_key(req);
  std::string_view key = req.get("key").value_or("");
  std::optional<std::string_view> value = req.get("value");
  if (error.empty() && !value) {
    error = "rc=" + std::to_string(kPmiErrInvalidArg) + " msg=missing_value";
  } else if (error.empty() && value->size() > static_cast<std::size_t>(kVallenMax)) {
    error = "rc=" + std::to_string(kPmiErrInvalidValLength) + " msg=value_too_long";
  } else if (error.empty() && (key == kProcessMappingKey || key == kDeadProcessesKey)) {
    error = "rc=" + std::to_string(kPmiErrInvalidKey) + " msg=reserved_key";
  }
  if (!error.empty()) {
    reply(rank, "cmd=put_result " + error + "\n");
    return;
  }
  // Each key should be put once (RFC 13); a repeat overwrites, as in Hydra.
  // Visible at once, which is legal: PMI only promises after the next barrier.
  kvs_.insert_or_assign(std::string(key), std::string(*value));
  reply(rank, "cmd=put_result rc=0\n");
}

void SimpleEngine::on_get(int rank, const Request& req) {
  std::string error = check_kvsname_and_key(req);
  if (!error.empty()) {
    reply(rank, "cmd=get_result " + error + "\n");
    return;
  }
  std::string_view key = *req.get("key");
  if (key == kProcessMappingKey) {
    reply(rank, "cmd=get_result rc=0 value=(vector,(0,1," + std::to_string(info_.size) + "))\n");
  } else if (key == kDeadProcessesKey) {
    reply(rank, "cmd=get_result rc=0 value=\n");
  } else if (auto it = kvs_.find(key); it != kvs_.end()) {
    reply(rank, "cmd=get_result rc=0 value=" + it->second + "\n");
  } else {
    // Hydra's words; msg has no spaces because the client splits at spaces.
    reply(rank, "cmd=get_result rc=" + std::to_string(kPmiFail) + " msg=key_" + std::string(key) +
                    "_not_found value=unknown\n");
  }
}

void SimpleEngine::on_barrier_in(int rank, const Request&) {
  rank_at(rank).in_barrier = true;
  maybe_release_barrier();
}

void SimpleEngine::on_finalize(int rank, const Request&) {
  rank_at(rank).finalized = true;
  reply(rank, "cmd=finalize_ack rc=0\n");
  cb_.finalized(rank);
  // A finalized rank can never enter a barrier the others may be waiting in.
  maybe_release_barrier();
}

void SimpleEngine::on_abort(int rank, const Request& req) {
  // MPICH sends exitcode (possibly negative); older Flux clients exit_code.
  std::optional<std::string_view> text = req.get("exitcode");
  if (!text) text = req.get("exit_code");
  int exitcode = parse_int(text.value_or("")).value_or(1);
  Rank& r = rank_at(rank);
  r.closed = true;
  r.partial.clear();
  r.in_barrier = false;
  job_failed_ = true;
  // No reply: the client waits for one forever, so the caller must kill it.
  cb_.abort(rank, exitcode);
}

// Publish, unpublish and lookup are not served. The client requires an
// explicit rc, so rc=-1 makes MPI_Publish_name and friends fail cleanly.
void SimpleEngine::on_publish_name(int rank, const Request&) {
  reply(rank, "cmd=publish_result rc=-1 msg=not_supported\n");
}

void SimpleEngine::on_unpublish_name(int rank, const Request&) {
  reply(rank, "cmd=unpublish_result rc=-1 msg=not_supported\n");
}

void SimpleEngine::on_lookup_name(int rank, const Request&) {
  reply(rank, "cmd=lookup_result rc=-1 msg=not_supported\n");
}

void SimpleEngine::on_spawn(int rank, const Request& req) {
  Rank& r = rank_at(rank);
  r.in_spawn_block = true;
  r.block.clear();
  r.totspawns = parse_int(req.get("totspawns").value_or("")).value_or(-1);
  r.spawnssofar = parse_int(req.get("spawnssofar").value_or("")).value_or(-1);
}

// One item of a spawn block: "key=value to the end of the line" (arguments
// may hold spaces and '=', kept as they are), or "endcmd".
void SimpleEngine::handle_spawn_line(int rank, std::string_view line) {
  Rank& r = rank_at(rank);
  std::string_view item = trim(line);
  if (item == "endcmd") {
    r.in_spawn_block = false;
    end_spawn_block(rank);
    return;
  }
  std::size_t eq = item.find('=');
  if (eq == std::string_view::npos || eq == 0) {
    fail_protocol(rank, "malformed PMI spawn item " + quote(line));
    return;
  }
  std::string_view key = item.substr(0, eq);
  std::string_view value = line.substr(line.find('=') + 1);
  if (!value.empty() && value.back() == '\r') value.remove_suffix(1);
  if (r.block.size() >= 16384) {
    fail_protocol(rank, "PMI spawn block of more than 16384 items");
    return;
  }
  r.block.emplace_back(std::string(key), std::string(value));
  if (key == "totspawns") r.totspawns = parse_int(trim(value)).value_or(-1);
  if (key == "spawnssofar") r.spawnssofar = parse_int(trim(value)).value_or(-1);
}

// MPICH sends one block per app, numbered spawnssofar = 1..totspawns, and
// reads a single reply after the last; without the counts, each block is a
// request of its own.
void SimpleEngine::end_spawn_block(int rank) {
  Rank& r = rank_at(rank);
  if (r.spawn_error.empty()) {
    SpawnApp app;
    r.spawn_error = read_spawn_block(r.block, &app, &r.spawn.preput);
    if (r.spawn_error.empty()) r.spawn.apps.push_back(std::move(app));
    if (r.spawn_error.empty() && r.spawn.total_procs() > kMaxSpawnProcs) r.spawn_error = "too_many_processes";
  }
  r.block.clear();
  bool last = r.totspawns < 0 || r.spawnssofar < 0 || r.spawnssofar >= r.totspawns;
  if (!last) return;
  SpawnRequest request = std::exchange(r.spawn, {});
  std::string why = std::exchange(r.spawn_error, {});
  if (!cb_.spawn) why = "spawn_not_supported";
  if (!why.empty()) {
    reply(rank, "cmd=spawn_result rc=-1 msg=" + why + "\n");
    return;
  }
  r.awaiting_spawn = true;
  cb_.spawn(rank, std::move(request));
}

void SimpleEngine::spawn_done(int rank, bool ok, const std::string& why) {
  Rank& r = rank_at(rank);
  if (!r.awaiting_spawn || r.closed) return;
  r.awaiting_spawn = false;
  if (ok) {
    reply(rank, "cmd=spawn_result rc=0\n");
    return;
  }
  std::string word = why.empty() ? "spawn_failed" : why;
  for (char& c : word) {
    if (c <= 0x20 || c == 0x7f) c = '_';
  }
  reply(rank, "cmd=spawn_result rc=-1 msg=" + word + "\n");
}

}  // namespace jiffy::pmi
