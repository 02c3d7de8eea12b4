#include "proto/message.h"

#include "util/error.h"
#include "util/process.h"

namespace jiffy::proto {

std::string encode(const Json& msg) {
  // Arguments and paths need not be UTF-8: replace what JSON cannot carry
  // rather than fail the launch.
  std::string body = msg.dump(-1, ' ', false, Json::error_handler_t::replace);
  std::uint32_t n = static_cast<std::uint32_t>(body.size());
  std::string frame;
  frame.reserve(4 + body.size());
  frame.push_back(static_cast<char>((n >> 24) & 0xff));
  frame.push_back(static_cast<char>((n >> 16) & 0xff));
  frame.push_back(static_cast<char>((n >> 8) & 0xff));
  frame.push_back(static_cast<char>(n & 0xff));
  frame += body;
  return frame;
}

std::optional<Json> FrameDecoder::next() {
  if (buf_.size() < 4) return std::nullopt;
  auto byte = [&](int i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(buf_[i])); };
  std::uint32_t n = byte(0) << 24 | byte(1) << 16 | byte(2) << 8 | byte(3);
  if (n > max_frame_) {
    throw Error("message of " + std::to_string(n) + " bytes exceeds the limit of " +
                std::to_string(max_frame_));
  }
  if (buf_.size() < 4 + n) return std::nullopt;
  Json msg = Json::parse(buf_.begin() + 4, buf_.begin() + 4 + n, nullptr, /*allow_exceptions=*/false);
  buf_.erase(0, 4 + n);
  if (msg.is_discarded()) throw Error("malformed message: not valid JSON");
  if (!msg.is_object() || !msg.contains("type") || !msg["type"].is_string()) {
    throw Error("malformed message: not an object with a string \"type\"");
  }
  return msg;
}

namespace {

[[noreturn]] void malformed(const Json& msg, const char* field, const std::string& why) {
  std::string t = msg.contains("type") && msg["type"].is_string() ? msg["type"].get<std::string>()
                                                                  : "?";
  throw Error("malformed " + t + " message: field '" + field + "' " + why);
}

const Json& field_of(const Json& msg, const char* field) {
  auto it = msg.find(field);
  if (it == msg.end()) malformed(msg, field, "is missing");
  return *it;
}

// One integer of a list, range-checked as the JSON value it is (signed or
// unsigned, any width) before it becomes an int.
int element(const Json& msg, const char* field, const Json& e, int lo, int hi) {
  if (!e.is_number_integer()) malformed(msg, field, "holds a non-integer");
  bool in_range;
  if (e.is_number_unsigned()) {  // JSON's non-negative numbers, up to 2^64 - 1
    std::uint64_t u = e.get<std::uint64_t>();
    in_range = hi >= 0 && u <= static_cast<std::uint64_t>(hi) &&
               (lo <= 0 || u >= static_cast<std::uint64_t>(lo));
  } else {
    std::int64_t x = e.get<std::int64_t>();
    in_range = x >= lo && x <= hi;
  }
  if (!in_range) malformed(msg, field, "holds a value out of range");
  return static_cast<int>(e.get<std::int64_t>());
}

}  // namespace

std::int64_t get_int(const Json& msg, const char* field, std::int64_t lo, std::int64_t hi) {
  const Json& v = field_of(msg, field);
  if (!v.is_number_integer()) malformed(msg, field, "is not an integer");
  std::int64_t x = v.get<std::int64_t>();
  if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)) {
    malformed(msg, field, "is out of range");
  }
  if (x < lo || x > hi) {
    malformed(msg, field, "is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return x;
}

std::string get_string(const Json& msg, const char* field, std::size_t max_len) {
  const Json& v = field_of(msg, field);
  if (!v.is_string()) malformed(msg, field, "is not a string");
  const std::string& s = v.get_ref<const std::string&>();
  if (s.size() > max_len) malformed(msg, field, "is too long");
  return s;
}

std::string get_tag(const Json& msg) {
  std::string tag = get_string(msg, "tag", 64);
  if (!is_job_tag(tag)) {
    malformed(msg, "tag", "is not 16 to 64 hex digits");
  }
  return tag;
}

bool get_bool(const Json& msg, const char* field, bool fallback) {
  auto it = msg.find(field);
  if (it == msg.end()) return fallback;
  if (!it->is_boolean()) malformed(msg, field, "is not a boolean");
  return it->get<bool>();
}

std::vector<int> get_int_list(const Json& msg, const char* field, std::size_t max_len, int lo,
                              int hi) {
  const Json& v = field_of(msg, field);
  if (!v.is_array()) malformed(msg, field, "is not a list");
  if (v.size() > max_len) malformed(msg, field, "is too long");
  std::vector<int> out;
  out.reserve(v.size());
  for (const Json& e : v) out.push_back(element(msg, field, e, lo, hi));
  return out;
}

std::vector<std::string> get_string_list(const Json& msg, const char* field, std::size_t max_items,
                                         std::size_t max_len) {
  const Json& v = field_of(msg, field);
  if (!v.is_array()) malformed(msg, field, "is not a list");
  if (v.size() > max_items) malformed(msg, field, "is too long");
  std::vector<std::string> out;
  out.reserve(v.size());
  for (const Json& e : v) {
    if (!e.is_string()) malformed(msg, field, "holds something not a string");
    if (e.get_ref<const std::string&>().size() > max_len) malformed(msg, field, "holds a string too long");
    out.push_back(e.get<std::string>());
  }
  return out;
}

std::vector<std::pair<int, int>> get_int_pairs(const Json& msg, const char* field,
                                               std::size_t max_len, int lo, int hi) {
  const Json& v = field_of(msg, field);
  if (!v.is_array()) malformed(msg, field, "is not a list");
  if (v.size() > max_len) malformed(msg, field, "is too long");
  std::vector<std::pair<int, int>> out;
  out.reserve(v.size());
  for (const Json& e : v) {
    if (!e.is_array() || e.size() != 2) malformed(msg, field, "holds something not a pair");
    out.emplace_back(element(msg, field, e[0], lo, hi), element(msg, field, e[1], lo, hi));
  }
  return out;
}

Json error_message(const std::string& message) {
  return Json{{"type", type::kError}, {"message", message}};
}

}  // namespace jiffy::proto
