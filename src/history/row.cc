#include "history/row.h"

#include <cstring>

namespace jiffy::history {

namespace {

template <std::size_t N>
bool terminated(const char (&field)[N]) {
  return std::memchr(field, '\0', N) != nullptr;
}

template <std::size_t N>
void copy_field(char (&field)[N], const std::string& value, std::uint32_t& flags) {
  std::size_t n = value.size();
  if (n >= N) {
    n = N - 1;
    flags |= JIFFY_HISTORY_TRUNCATED;
  }
  std::memcpy(field, value.data(), n);
  field[n] = '\0';
}

double seconds(std::int64_t ns) { return static_cast<double>(ns) / 1e9; }

}  // namespace

std::optional<Row> from_record(const jiffy_history_record& r) {
  if (r.magic != JIFFY_HISTORY_MAGIC || r.size != sizeof r || r.version != JIFFY_HISTORY_VERSION ||
      r.checksum != jiffy_history_checksum(&r)) {
    return std::nullopt;
  }
  if (!terminated(r.tag) || !terminated(r.label) || !terminated(r.command) || !terminated(r.cwd) ||
      !terminated(r.cores) || !terminated(r.gpus) || !terminated(r.reason) || !terminated(r.step) ||
      !terminated(r.nodes)) {
    return std::nullopt;
  }
  if (r.source != JIFFY_HISTORY_FROM_DAEMON && r.source != JIFFY_HISTORY_FROM_LAUNCHER) return std::nullopt;
  if (r.outcome < JIFFY_OUTCOME_EXITED || r.outcome > JIFFY_OUTCOME_CANCELLED) return std::nullopt;
  if (r.tag[0] == '\0' || r.ntasks < 0 || r.ngroups < 0) return std::nullopt;
  Row row;
  row.tag = r.tag;
  row.job = r.job;
  row.source = r.source;
  row.outcome = r.outcome;
  row.exit_code = r.exit_code;
  row.signal = r.signal;
  row.pid = r.pid;
  row.ntasks = r.ntasks;
  row.ngroups = r.ngroups;
  row.flags = r.flags;
  row.submit_ns = r.submit_ns;
  row.start_ns = r.start_ns;
  row.end_ns = r.end_ns;
  row.user_us = r.user_us;
  row.sys_us = r.sys_us;
  row.maxrss_kb = r.maxrss_kb;
  row.label = r.label;
  row.command = r.command;
  row.cwd = r.cwd;
  row.cores = r.cores;
  row.gpus = r.gpus;
  row.reason = r.reason;
  row.step = r.step;
  row.nodes = r.nodes;
  return row;
}

jiffy_history_record to_record(const Row& row) {
  jiffy_history_record r;
  std::memset(&r, 0, sizeof r);
  r.magic = JIFFY_HISTORY_MAGIC;
  r.size = sizeof r;
  r.version = JIFFY_HISTORY_VERSION;
  r.source = row.source;
  r.outcome = row.outcome;
  r.exit_code = row.exit_code;
  r.signal = row.signal;
  r.pid = row.pid;
  r.ntasks = row.ntasks;
  r.ngroups = row.ngroups;
  r.flags = row.flags;
  r.job = row.job;
  r.submit_ns = row.submit_ns;
  r.start_ns = row.start_ns;
  r.end_ns = row.end_ns;
  r.user_us = row.user_us;
  r.sys_us = row.sys_us;
  r.maxrss_kb = row.maxrss_kb;
  copy_field(r.tag, row.tag, r.flags);
  copy_field(r.label, row.label, r.flags);
  copy_field(r.command, row.command, r.flags);
  copy_field(r.cwd, row.cwd, r.flags);
  copy_field(r.cores, row.cores, r.flags);
  copy_field(r.gpus, row.gpus, r.flags);
  copy_field(r.reason, row.reason, r.flags);
  copy_field(r.step, row.step, r.flags);
  copy_field(r.nodes, row.nodes, r.flags);
  r.checksum = jiffy_history_checksum(&r);
  return r;
}

const char* outcome_name(const Row& row) {
  switch (row.outcome) {
    case JIFFY_OUTCOME_EXITED: return row.exit_code == 0 ? "ok" : "failed";
    case JIFFY_OUTCOME_SIGNALED: return "signaled";
    case JIFFY_OUTCOME_TIMED_OUT: return "timeout";
    case JIFFY_OUTCOME_REFUSED: return "refused";
    case JIFFY_OUTCOME_LOST: return "lost";
    case JIFFY_OUTCOME_CANCELLED: return "cancelled";
  }
  return "?";
}

namespace {

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  std::size_t at = 0;
  while (at <= text.size()) {
    std::size_t end = text.find(sep, at);
    if (end == std::string::npos) end = text.size();
    parts.push_back(text.substr(at, end - at));
    at = end + 1;
  }
  return parts;
}

// "0-2,5" -> {0,1,2,5}; nullopt when malformed.
std::optional<std::vector<int>> parse_ranges(const std::string& text) {
  std::vector<int> out;
  if (text.empty()) return out;
  for (const std::string& part : split(text, ',')) {
    std::size_t dash = part.find('-');
    std::string a = part.substr(0, dash), b = dash == std::string::npos ? a : part.substr(dash + 1);
    if (a.empty() || b.empty() || a.size() > 6 || b.size() > 6 ||
        a.find_first_not_of("0123456789") != std::string::npos ||
        b.find_first_not_of("0123456789") != std::string::npos) {
      return std::nullopt;
    }
    int lo = std::stoi(a), hi = std::stoi(b);
    if (hi < lo || hi - lo > 65536) return std::nullopt;
    for (int c = lo; c <= hi; ++c) out.push_back(c);
  }
  return out;
}

}  // namespace

std::vector<std::vector<int>> parse_core_lists(const std::string& text) {
  std::vector<std::vector<int>> out;
  if (text.empty()) return out;
  for (const std::string& rank : split(text, ';')) {
    if (auto cores = parse_ranges(rank)) out.push_back(std::move(*cores));
  }
  return out;
}

std::vector<std::vector<std::string>> parse_name_lists(const std::string& text) {
  std::vector<std::vector<std::string>> out;
  if (text.empty()) return out;
  for (const std::string& rank : split(text, ';')) {
    std::vector<std::string> names;
    if (!rank.empty()) names = split(rank, ',');
    out.push_back(std::move(names));
  }
  return out;
}

proto::Json to_json(const Row& row) {
  proto::Json j;
  bool ran = row.start_ns != 0;
  bool known_exit = row.outcome != JIFFY_OUTCOME_LOST && row.outcome != JIFFY_OUTCOME_CANCELLED;
  j["id"] = row.id;
  j["job"] = row.job;
  j["tag"] = row.tag;
  j["label"] = row.label;
  j["command"] = row.command;
  j["cwd"] = row.cwd;
  j["ntasks"] = row.ntasks;
  j["groups"] = row.ngroups;
  j["cores"] = parse_core_lists(row.cores);
  j["gpus"] = parse_name_lists(row.gpus);
  j["submit"] = seconds(row.submit_ns);
  j["start"] = ran ? proto::Json(seconds(row.start_ns)) : proto::Json(nullptr);
  j["end"] = seconds(row.end_ns);
  j["wait_s"] = ran ? proto::Json(seconds(row.start_ns - row.submit_ns)) : proto::Json(nullptr);
  j["run_s"] = ran ? proto::Json(seconds(row.end_ns - row.start_ns)) : proto::Json(nullptr);
  j["outcome"] = outcome_name(row);
  j["exit_code"] = known_exit ? proto::Json(row.exit_code) : proto::Json(nullptr);
  j["signal"] = row.signal;
  j["timed_out"] = row.outcome == JIFFY_OUTCOME_TIMED_OUT;
  j["user_s"] = static_cast<double>(row.user_us) / 1e6;
  j["sys_s"] = static_cast<double>(row.sys_us) / 1e6;
  j["max_rss_kb"] = row.maxrss_kb;
  j["reason"] = row.reason;
  j["step"] = row.step;    // a Slurm step's id, "" for a launch on this machine
  j["nodes"] = row.nodes;  // its nodes
  j["pid"] = row.pid;
  j["lane"] = (row.flags & JIFFY_HISTORY_LANE) != 0;
  j["handed_over"] = (row.flags & JIFFY_HISTORY_HANDED_OVER) != 0;
  j["oversubscribed"] = (row.flags & JIFFY_HISTORY_OVERSUBSCRIBED) != 0;
  j["slurm"] = (row.flags & JIFFY_HISTORY_SLURM) != 0;
  return j;
}

}  // namespace jiffy::history
