// Fuzzes the PMI-1 engine (pmi/simple_engine.h) as the launcher drives it:
// bytes from each rank's PMI fd, in any interleaving and any split, and
// ranks disconnecting.
//
// Input: one byte for the job's shape, then records.
//   shape: size = 1 + (b & 3); bit 2: MPMD (appnum = rank / 2); bit 3:
//   universe size -1 (as Hydra may send); bit 4: protocol_error closes the
//   rank at once (on_disconnect from inside the callback, as a caller may).
//   record: header h; rank = (h & 0x0f) % size. h & 0x80: that rank's fd hit
//   EOF (on_disconnect). Otherwise a length byte n follows, then n bytes the
//   rank wrote (a line may span records; several lines may share one).
// At the end every rank disconnects.
//
// Invariants, from the engine's contract: only Error for a bad rank (never
// thrown here); each reply is one line starting "cmd=" for a rank in range;
// protocol_error, abort and finalized at most once per rank; nothing is sent
// to a rank after its disconnect; no barrier completes once the job failed
// (abort, protocol error, or disconnect between init and finalize); a
// disconnect is a failure only for a rank that initialized and did not
// finalize.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_util.h"
#include "pmi/simple_engine.h"

namespace {

struct RankSeen {
  bool disconnected = false;
  int protocol_errors = 0;
  int aborts = 0;
  int finalized = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t shape = data[0];
  const int n = 1 + (shape & 3);
  jiffy::pmi::JobInfo info;
  info.size = n;
  info.kvsname = "kvs_42_0";
  for (int r = 0; r < n; ++r) info.appnum.push_back((shape & 4) ? r / 2 : 0);
  info.universe_size = (shape & 8) ? -1 : n;
  const bool close_on_error = (shape & 16) != 0;

  std::vector<RankSeen> seen(static_cast<std::size_t>(n));
  bool job_failed = false;
  jiffy::pmi::SimpleEngine* engine = nullptr;

  jiffy::pmi::SimpleEngine::Callbacks cb;
  cb.send = [&](int rank, std::string_view reply) {
    FUZZ_CHECK(rank >= 0 && rank < n);
    FUZZ_CHECK(!seen[static_cast<std::size_t>(rank)].disconnected);
    FUZZ_CHECK(reply.size() >= 5 && reply.size() <= 8192);
    FUZZ_CHECK(reply.substr(0, 4) == "cmd=");
    FUZZ_CHECK(reply.find('\n') == reply.size() - 1);
    if (reply.substr(0, 15) == "cmd=barrier_out") FUZZ_CHECK(!job_failed);
  };
  cb.abort = [&](int rank, int) {
    FUZZ_CHECK(rank >= 0 && rank < n);
    FUZZ_CHECK(++seen[static_cast<std::size_t>(rank)].aborts == 1);
    job_failed = true;
  };
  cb.finalized = [&](int rank) {
    FUZZ_CHECK(rank >= 0 && rank < n);
    FUZZ_CHECK(++seen[static_cast<std::size_t>(rank)].finalized == 1);
    FUZZ_CHECK(engine->finalized(rank));
  };
  cb.protocol_error = [&](int rank, const std::string& why) {
    FUZZ_CHECK(rank >= 0 && rank < n);
    FUZZ_CHECK(++seen[static_cast<std::size_t>(rank)].protocol_errors == 1);
    FUZZ_CHECK(!why.empty() && why.find('\n') == std::string::npos);
    job_failed = true;
    if (close_on_error) {
      seen[static_cast<std::size_t>(rank)].disconnected = true;
      engine->on_disconnect(rank);  // already reported: the caller keeps the first cause
    }
  };
  // Half the shapes take spawn requests (answered at once, ok or not by
  // the request's size), the other half leave them refused.
  if (shape & 32) {
    cb.spawn = [&](int rank, jiffy::pmi::SpawnRequest req) {
      FUZZ_CHECK(rank >= 0 && rank < n);
      FUZZ_CHECK(!req.apps.empty());
      FUZZ_CHECK(req.total_procs() >= 1 && req.total_procs() <= jiffy::pmi::SimpleEngine::kMaxSpawnProcs);
      for (const auto& app : req.apps) FUZZ_CHECK(app.nprocs >= 1 && !app.execname.empty());
      engine->spawn_done(rank, req.total_procs() % 2 == 0, "odd count");
    };
  }
  jiffy::pmi::SimpleEngine e(info, cb);
  engine = &e;

  auto disconnect = [&](int rank) {
    bool was_init = e.initialized(rank), was_final = e.finalized(rank);
    seen[static_cast<std::size_t>(rank)].disconnected = true;
    bool failure = e.on_disconnect(rank);
    if (failure) {
      FUZZ_CHECK(was_init && !was_final);
      job_failed = true;
    }
  };

  std::size_t pos = 1;
  while (pos < size) {
    const std::uint8_t h = data[pos++];
    const int rank = (h & 0x0f) % n;
    if (h & 0x80) {
      disconnect(rank);
      continue;
    }
    if (pos >= size) break;
    std::size_t len = data[pos++];
    len = std::min(len, size - pos);
    std::string_view bytes(reinterpret_cast<const char*>(data + pos), len);
    pos += len;
    if (seen[static_cast<std::size_t>(rank)].disconnected) continue;  // the fd is closed
    e.on_data(rank, bytes);
    if (bytes.find('\n') != std::string_view::npos) FUZZ_CHECK(e.ever_connected(rank));
  }
  for (int r = 0; r < n; ++r) {
    if (!seen[static_cast<std::size_t>(r)].disconnected) disconnect(r);
  }
  return 0;
}
