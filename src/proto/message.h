// The daemon protocol: framed, size-bounded, versioned JSON messages.
//
// A frame is a 4-byte big-endian payload length followed by that many bytes
// of UTF-8 JSON: one object whose "type" names the message. Frames larger
// than kMaxFrame are a protocol error. Every client message carries "v"
// (kVersion); the daemon answers a mismatch with an error. docs/protocol.md
// lists the vocabulary and the order in which messages flow.
//
// Encoding and decoding are pure (no I/O): FrameDecoder takes bytes as they
// arrive and yields whole messages, so the daemon can feed it from a
// non-blocking socket and the fuzzer from a buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace jiffy::proto {

using Json = nlohmann::json;

constexpr int kVersion = 1;
constexpr std::size_t kMaxFrame = 64 * 1024;  // a status reply for 1,000s of jobs fits
constexpr std::size_t kMaxStatusFrame = 16 * 1024 * 1024;  // status replies only

// Message types (the "type" field).
namespace type {
inline constexpr const char* kSubmit = "submit";      // client: ask for resources
inline constexpr const char* kQueued = "queued";      // daemon: not granted yet (position)
inline constexpr const char* kGrant = "grant";        // daemon: resources, per-rank layout
inline constexpr const char* kPreparing = "preparing";  // client, queued: my job directory exists (jobdir)
inline constexpr const char* kStarted = "started";    // client: ranks are running (pgid)
inline constexpr const char* kFinished = "finished";  // client: job is over (exit code)
inline constexpr const char* kStatus = "status";      // client: ask for the daemon's state
inline constexpr const char* kStatusReply = "status_reply";
inline constexpr const char* kStop = "stop";  // client: ask the daemon to exit
inline constexpr const char* kReattach = "reattach";  // client: my job runs, a new daemon must know
inline constexpr const char* kLane = "lane";  // client: I took lane slots myself (proto/lane.h)
inline constexpr const char* kHistory = "history";  // client: ingest the history journal now
inline constexpr const char* kHistoryReply = "history_reply";  // daemon: {db, error, pending}
inline constexpr const char* kForward = "forward";  // client: my launch runs elsewhere (Slurm): list it
inline constexpr const char* kStep = "step";  // client, forwarded: my Slurm step's id (JOBID.STEPID)
inline constexpr const char* kOk = "ok";
inline constexpr const char* kError = "error";  // daemon: request refused (message)
}  // namespace type

// Returns the frame for msg (length prefix + JSON text).
std::string encode(const Json& msg);

// Accumulates bytes and splits them into messages.
class FrameDecoder {
 public:
  explicit FrameDecoder(std::size_t max_frame = kMaxFrame) : max_frame_(max_frame) {}
  void feed(std::string_view bytes) { buf_.append(bytes); }
  // The next whole message, or nullopt when more bytes are needed. Throws
  // Error on an oversized frame, invalid JSON, or a payload that is not an
  // object with a string "type"; the stream is unusable after that.
  std::optional<Json> next();
  std::size_t buffered() const { return buf_.size(); }

 private:
  std::size_t max_frame_;
  std::string buf_;
};

// Field access with validation: throws Error("malformed <type> message: ...")
// when the field is missing, of the wrong type or out of [lo, hi].
std::int64_t get_int(const Json& msg, const char* field, std::int64_t lo, std::int64_t hi);
std::string get_string(const Json& msg, const char* field, std::size_t max_len);
bool get_bool(const Json& msg, const char* field, bool fallback);
// A job tag ("tag" of submit, started, lane, reattach): what the job's
// ranks carry as JIFFY_JOB_TAG; checked by is_job_tag (util/process.h).
std::string get_tag(const Json& msg);
// A list of integers, each checked against [lo, hi] before it is narrowed
// (4294967296 is out of range, never core 0).
std::vector<int> get_int_list(const Json& msg, const char* field, std::size_t max_len, int lo,
                              int hi);
// A list of strings, each at most max_len bytes.
std::vector<std::string> get_string_list(const Json& msg, const char* field, std::size_t max_items,
                                         std::size_t max_len);
// A list of [a, b] pairs (slots: [core, slot]), each number checked as above.
std::vector<std::pair<int, int>> get_int_pairs(const Json& msg, const char* field,
                                               std::size_t max_len, int lo, int hi);

// An error reply carrying a one-line message.
Json error_message(const std::string& message);

}  // namespace jiffy::proto
