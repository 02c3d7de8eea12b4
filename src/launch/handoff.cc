#include "launch/handoff.h"

#include <cerrno>
#include <cstdlib>

#include "util/error.h"
#include "util/sys.h"

namespace jiffy {

namespace {

long long number(const std::string& s, long long min, long long max, const char* what) {
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || errno != 0 || *end != '\0' || v < min || v > max) {
    throw Error(std::string("malformed hand-over state: bad ") + what + " '" + s + "'");
  }
  return v;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    std::size_t end = s.find(sep, start);
    out.push_back(s.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) return out;
    start = end + 1;
  }
}

// "0-3,6" -> 0,1,2,3,6
std::vector<int> cpu_list(const std::string& s) {
  std::vector<int> cpus;
  for (const std::string& part : split(s, ',')) {
    std::vector<std::string> range = split(part, '-');
    if (range.size() > 2) throw Error("malformed hand-over state: bad cpus '" + s + "'");
    int lo = static_cast<int>(number(range[0], 0, 1 << 20, "cpus"));
    int hi = range.size() == 2 ? static_cast<int>(number(range[1], lo, 1 << 20, "cpus")) : lo;
    for (int c = lo; c <= hi; ++c) cpus.push_back(c);
  }
  return cpus;
}

}  // namespace

std::optional<std::string> take_handoff_state() { return take_env(kHandoffVar); }

Handoff parse_handoff(const std::string& state) {
  Handoff h;
  std::size_t grant_at = state.find(" grant=");
  std::string head = state.substr(0, grant_at);
  if (grant_at != std::string::npos) h.grant = state.substr(grant_at + 7);
  bool version = false, ranks = false, daemon = false;
  for (const std::string& field : split(head, ' ')) {
    std::size_t eq = field.find('=');
    if (eq == std::string::npos) throw Error("malformed hand-over state: '" + field + "'");
    std::string key = field.substr(0, eq), value = field.substr(eq + 1);
    if (key == "v") {
      version = value == "1";
    } else if (key == "ticket") {
      h.ticket = static_cast<unsigned long long>(number(value, 1, INT64_MAX, "ticket"));
    } else if (key == "daemon") {
      h.daemon_fd = static_cast<int>(number(value, 0, 1 << 20, "daemon fd"));
      daemon = true;
    } else if (key == "cpus") {
      h.cpus = cpu_list(value);
    } else if (key == "pmix") {
      h.pmix_fd = static_cast<int>(number(value, 0, 1 << 20, "PMIx rendezvous fd"));
    } else if (key == "submit") {
      h.submit_ns = number(value, 0, INT64_MAX, "submit time");
    } else if (key == "start") {
      h.start_ns = number(value, 0, INT64_MAX, "start time");
    } else if (key == "deadline") {
      h.deadline_ns = number(value, 1, INT64_MAX, "deadline");
    } else if (key == "lane") {
      h.lane = number(value, 0, 1, "lane") == 1;
    } else if (key == "lanefd") {
      h.lane_fd = static_cast<int>(number(value, 0, 1 << 20, "lane fd"));
    } else if (key == "tag") {
      h.tag = value;
    } else if (key == "pgid") {
      h.pgid = static_cast<pid_t>(number(value, 2, INT32_MAX, "pgid"));
    } else if (key == "ranks") {
      for (const std::string& r : split(value, ',')) {
        std::vector<std::string> f = split(r, ':');
        if (f.size() != 3) throw Error("malformed hand-over state: rank '" + r + "'");
        Handoff::Rank rank;
        rank.pid = static_cast<pid_t>(number(f[0], 2, INT32_MAX, "rank pid"));
        rank.pmi_fd = static_cast<int>(number(f[1], -1, 1 << 20, "PMI fd"));
        rank.done = number(f[2], 0, 1, "rank state") == 1;
        h.ranks.push_back(rank);
      }
      ranks = true;
    } else {
      throw Error("malformed hand-over state: unknown field '" + key + "'");
    }
  }
  if (!version) throw Error("malformed hand-over state: not version 1");
  h.running = daemon;
  if (h.running && (!ranks || h.ranks.empty() || h.pgid != h.ranks[0].pid || h.tag.empty() ||
                    h.cpus.empty() || h.grant.empty())) {
    throw Error("malformed hand-over state: incomplete running job");
  }
  return h;
}

}  // namespace jiffy
