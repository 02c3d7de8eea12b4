// How the screen is made: the reply is first read into plain structs (every
// field optional, see the header), then laid out. The layout gives the
// header and the cores what they need, and shares the rows left between the
// running jobs, the queue and the finished jobs one row at a time, in turn,
// so that a long queue cannot hide the running jobs nor the other way round.
#include "views/top_render.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <map>
#include <optional>

#include "util/sys.h"

namespace jiffy {

namespace {

using proto::Json;

// ---------------------------------------------------------------------------
// Reading the reply: never throws, whatever its shape.

const Json* field(const Json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}

std::optional<double> number(const Json& j, const char* key) {
  const Json* f = field(j, key);
  if (f == nullptr || !f->is_number()) return std::nullopt;
  double v = f->get<double>();
  return std::isfinite(v) ? std::optional<double>(v) : std::nullopt;
}

// An id or count: a non-negative integer, 0 when absent.
std::uint64_t count_of(const Json& j) {
  if (j.is_number_unsigned()) return j.get<std::uint64_t>();
  if (j.is_number_integer() && j.get<std::int64_t>() > 0)
    return static_cast<std::uint64_t>(j.get<std::int64_t>());
  return 0;
}

std::optional<std::uint64_t> count(const Json& j, const char* key) {
  const Json* f = field(j, key);
  if (f == nullptr || !(f->is_number_integer() || f->is_number_unsigned())) return std::nullopt;
  return count_of(*f);
}

std::optional<std::int64_t> integer(const Json& j, const char* key) {
  const Json* f = field(j, key);
  if (f == nullptr || !f->is_number_integer()) return std::nullopt;
  return f->get<std::int64_t>();
}

std::string text(const Json& j, const char* key) {
  const Json* f = field(j, key);
  return f != nullptr && f->is_string() ? f->get<std::string>() : std::string();
}

const Json& list(const Json& j, const char* key) {
  static const Json kEmpty = Json::array();
  const Json* f = field(j, key);
  return f != nullptr && f->is_array() ? *f : kEmpty;
}

// A core or GPU number: an integer in [0, 2^30].
std::optional<int> small_id(const Json& x) {
  constexpr std::int64_t kMax = 1 << 30;
  if (x.is_number_unsigned()) {
    if (x.get<std::uint64_t>() <= static_cast<std::uint64_t>(kMax)) return x.get<int>();
  } else if (x.is_number_integer()) {
    std::int64_t v = x.get<std::int64_t>();
    if (v >= 0 && v <= kMax) return static_cast<int>(v);
  }
  return std::nullopt;
}

// Integers found in a list or in its lists (per-rank cores: [[0,1],[2]]),
// ascending, each once.
std::vector<int> ints_within(const Json& l) {
  std::vector<int> out;
  auto take = [&](const Json& x) {
    if (auto v = small_id(x)) out.push_back(*v);
  };
  if (!l.is_array()) return out;
  for (const Json& x : l) {
    if (x.is_array()) {
      for (const Json& y : x) take(y);
    } else {
      take(x);
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// GPUs of a job: today's ids ([0,1]) or per-rank names ([["0"],["1"]]),
// as "0,1"; "" when none.
std::string gpus_within(const Json& l) {
  std::vector<int> ids = ints_within(l);
  if (!ids.empty()) return format_cpu_list(ids);
  std::vector<std::string> names;
  auto take = [&](const Json& x) {
    if (x.is_string() &&
        std::find(names.begin(), names.end(), x.get<std::string>()) == names.end()) {
      names.push_back(x.get<std::string>());
    }
  };
  if (l.is_array()) {
    for (const Json& x : l) {
      if (x.is_array()) {
        for (const Json& y : x) take(y);
      } else {
        take(x);
      }
    }
  }
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ",") + n;
  return out;
}

// "label  command", either alone when the other is empty.
std::string what_of(const Json& j) {
  std::string label = text(j, "label");
  std::string command = text(j, "command");
  if (label.empty()) return command;
  if (command.empty()) return label;
  return label + "  " + command;
}

struct Core {
  int id = 0;
  std::vector<std::uint64_t> holders;  // per slot: the job on it, 0 when free
};

struct Gpu {
  int id = 0;
  std::string name;
  std::uint64_t holder = 0;
};

struct Running {
  std::uint64_t id = 0;
  std::optional<std::uint64_t> ntasks;
  std::vector<int> cores;
  std::string gpus;
  std::optional<double> run_s;
  std::string state;
  std::string what;
  std::uint64_t parent = 0;  // a spawn's cores: the job they are for
  char key = ' ';  // its letter in the grid
};

struct Queued {
  std::uint64_t id = 0;
  std::optional<std::uint64_t> position, ntasks, gpus;
  std::optional<double> wait_s;
  std::optional<double> start_by_s;  // the head's deadline, where the daemon timed one
  std::string what;
  std::uint64_t parent = 0;
};

struct Finished {
  std::uint64_t id = 0;
  std::string outcome;
  std::optional<std::int64_t> exit_code, signal;
  std::optional<double> run_s, end;
  std::string what;
};

// A launch handed to Slurm (daemon/forwarded.h): no cores here, a step
// there.
struct Forward {
  std::uint64_t id = 0;
  std::optional<std::uint64_t> ntasks;
  std::string backend, step, nodes;
  std::optional<double> run_s;
  std::string what;
};

struct Status {
  std::optional<std::int64_t> pid;
  std::optional<double> uptime_s;
  std::vector<Core> cores;
  std::vector<Gpu> gpus;
  std::vector<Running> running;
  std::vector<Queued> queued;
  std::vector<Forward> forwarded;
  bool has_recent = false;
  std::vector<Finished> recent;
  const Json* totals = nullptr;
  std::string history_error;
};

char key_for(std::size_t i) {
  if (i < 26) return static_cast<char>('A' + i);
  if (i < 52) return static_cast<char>('a' + (i - 26));
  if (i < 62) return static_cast<char>('0' + (i - 52));
  return '*';
}

Running read_running(const Json& j, double now) {
  Running job;
  job.id = count(j, "job").value_or(0);
  job.ntasks = count(j, "ntasks");
  job.cores = ints_within(list(j, "cores"));
  job.gpus = gpus_within(list(j, "gpus"));
  // `start` (when the ranks were spawned) where the daemon says it; its
  // own age_s otherwise (0 for jobs it re-adopted).
  if (auto start = number(j, "start"); start && *start > 0) {
    job.run_s = std::max(0.0, now - *start);
  } else {
    job.run_s = number(j, "age_s");
  }
  job.state = text(j, "state");
  job.what = what_of(j);
  job.parent = count(j, "parent").value_or(0);
  return job;
}

Queued read_queued(const Json& j, double now) {
  Queued q;
  q.id = count(j, "job").value_or(0);
  q.position = count(j, "position");
  q.ntasks = count(j, "ntasks");
  q.gpus = count(j, "gpus_requested");
  q.wait_s = number(j, "wait_s");
  if (!q.wait_s) q.wait_s = number(j, "age_s");
  if (!q.wait_s) {
    if (auto submit = number(j, "submit"); submit && *submit > 0) {
      q.wait_s = std::max(0.0, now - *submit);
    }
  }
  q.start_by_s = number(j, "start_by_s");
  q.what = what_of(j);
  q.parent = count(j, "parent").value_or(0);
  return q;
}

Forward read_forward(const Json& j) {
  Forward f;
  f.id = count(j, "job").value_or(0);
  f.ntasks = count(j, "ntasks");
  f.backend = text(j, "backend");
  f.step = text(j, "step");
  f.nodes = text(j, "nodes");
  f.run_s = number(j, "age_s");
  f.what = what_of(j);
  return f;
}

Finished read_finished(const Json& j) {
  Finished f;
  f.id = count(j, "job").value_or(0);
  f.outcome = text(j, "outcome");
  f.exit_code = integer(j, "exit_code");
  f.signal = integer(j, "signal");
  f.run_s = number(j, "run_s");
  f.end = number(j, "end");
  f.what = what_of(j);
  return f;
}

void read_resources(const Json& r, Status& s) {
  const Json* res = field(r, "resources");
  for (const Json& c : res ? list(*res, "cores") : list(r, "")) {
    Core core;
    const Json* id = field(c, "id");
    core.id = id ? small_id(*id).value_or(-1) : static_cast<int>(s.cores.size());
    for (const Json& h : list(c, "holders")) core.holders.push_back(count_of(h));
    if (core.holders.empty()) core.holders.push_back(0);
    s.cores.push_back(std::move(core));
  }
  for (const Json& g : res ? list(*res, "gpus") : list(r, "")) {
    Gpu gpu;
    const Json* id = field(g, "id");
    gpu.id = id ? small_id(*id).value_or(-1) : static_cast<int>(s.gpus.size());
    gpu.name = text(g, "name");
    if (const Json* h = field(g, "holder")) gpu.holder = count_of(*h);
    s.gpus.push_back(std::move(gpu));
  }
}

Status read_status(const Json& r, double now) {
  Status s;
  if (const Json* d = field(r, "daemon")) {
    s.pid = integer(*d, "pid");
    s.uptime_s = number(*d, "uptime_s");
  }
  read_resources(r, s);
  for (const Json& j : list(r, "running")) s.running.push_back(read_running(j, now));
  std::stable_sort(s.running.begin(), s.running.end(),
                   [](const Running& a, const Running& b) { return a.id < b.id; });
  for (std::size_t i = 0; i < s.running.size(); ++i) s.running[i].key = key_for(i);
  for (const Json& j : list(r, "queued")) s.queued.push_back(read_queued(j, now));
  for (const Json& j : list(r, "forwarded")) s.forwarded.push_back(read_forward(j));
  if (const Json* recent = field(r, "recent"); recent != nullptr && recent->is_array()) {
    s.has_recent = true;
    for (const Json& j : *recent) s.recent.push_back(read_finished(j));
    // Newest first, whichever order the daemon keeps them in.
    std::stable_sort(s.recent.begin(), s.recent.end(), [](const Finished& a, const Finished& b) {
      return a.end.value_or(0) > b.end.value_or(0);
    });
  }
  if (const Json* t = field(r, "totals"); t != nullptr && t->is_object()) s.totals = t;
  if (const Json* h = field(r, "history")) s.history_error = text(*h, "error");
  return s;
}

// ---------------------------------------------------------------------------
// Text

std::string fmt(const char* f, double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, x);
  return buf;
}

std::string pad_right(std::string s, int cols) {
  int w = display_width(s);
  if (w < cols) s.append(static_cast<std::size_t>(cols - w), ' ');
  return s;
}

std::string pad_left(const std::string& s, int cols) {
  int w = display_width(s);
  return w < cols ? std::string(static_cast<std::size_t>(cols - w), ' ') + s : s;
}

// Rows of cells as aligned lines: each column as wide as its widest cell,
// two spaces apart; the last cell (the free text) is not padded. Cells
// whose column is empty in every row take no room.
std::vector<std::string> table(const std::vector<std::vector<std::string>>& rows,
                               const std::vector<bool>& right_aligned = {}) {
  std::size_t ncols = 0;
  for (const auto& r : rows) ncols = std::max(ncols, r.size());
  std::vector<int> width(ncols, 0);
  for (const auto& r : rows) {
    for (std::size_t c = 0; c + 1 < r.size(); ++c)
      width[c] = std::max(width[c], display_width(r[c]));
  }
  std::vector<std::string> out;
  for (const auto& r : rows) {
    std::string line;
    for (std::size_t c = 0; c < r.size(); ++c) {
      bool last = c + 1 == r.size();
      if (!last && width[c] == 0) continue;
      if (!line.empty()) line += "  ";
      bool right = c < right_aligned.size() && right_aligned[c];
      line += last ? r[c] : right ? pad_left(r[c], width[c]) : pad_right(r[c], width[c]);
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out.push_back(std::move(line));
  }
  return out;
}

std::string job_text(std::uint64_t id) { return "job " + std::to_string(id); }

std::string outcome_text(const Finished& f) {
  if (f.outcome == "failed" && f.exit_code) return "failed " + std::to_string(*f.exit_code);
  if (f.outcome == "signaled" && f.signal && *f.signal > 0)
    return "signal " + std::to_string(*f.signal);
  if (!f.outcome.empty()) return f.outcome;
  return f.exit_code ? "exit " + std::to_string(*f.exit_code) : "?";
}

std::string clock_text(double now_unix) {
  std::time_t t = static_cast<std::time_t>(now_unix);
  std::tm tm{};
  if (::localtime_r(&t, &tm) == nullptr) return "";
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

// left, and right flush with the last column when both fit.
std::string spread(const std::string& left, const std::string& right, int cols) {
  int lw = display_width(left), rw = display_width(right);
  if (right.empty() || lw + 2 + rw > cols) return left;
  return left + std::string(static_cast<std::size_t>(cols - lw - rw), ' ') + right;
}

// ---------------------------------------------------------------------------
// Sections

std::vector<std::string> header_lines(const Status& s, const TopSnapshot& snap, int cols,
                                      double now) {
  std::vector<std::string> out;
  // The numbers first: on a narrow screen the title and the clock go, then
  // the GPUs of a machine that has none, then the double spaces.
  std::vector<std::string> parts;
  bool no_gpus = s.gpus.empty();
  if (snap.reply != nullptr) {
    if (s.pid) parts.push_back("pid " + std::to_string(*s.pid));
    if (s.uptime_s) parts.push_back("up " + format_duration(*s.uptime_s));
    int busy = 0;
    for (const Core& c : s.cores) {
      if (std::any_of(c.holders.begin(), c.holders.end(), [](std::uint64_t h) { return h != 0; }))
        ++busy;
    }
    parts.push_back("cores " + std::to_string(busy) + "/" + std::to_string(s.cores.size()));
    int gbusy = static_cast<int>(
        std::count_if(s.gpus.begin(), s.gpus.end(), [](const Gpu& g) { return g.holder != 0; }));
    parts.push_back("gpus " + std::to_string(gbusy) + "/" + std::to_string(s.gpus.size()));
    parts.push_back("queued " + std::to_string(s.queued.size()));
  }
  auto join = [&](bool title, bool gpus, const char* sep) {
    std::string h = title ? "jiffy top" : "";
    for (const std::string& p : parts) {
      if (!gpus && p.starts_with("gpus ")) continue;
      h += (h.empty() ? "" : sep) + p;
    }
    return h;
  };
  std::string head = join(true, true, "  ");
  if (display_width(head) > cols) head = join(false, true, "  ");
  if (display_width(head) > cols && no_gpus) head = join(false, false, "  ");
  if (display_width(head) > cols) head = join(false, !no_gpus, " ");
  out.push_back(spread(head, clock_text(now), cols));
  if (!snap.problem.empty()) {
    out.push_back(snap.problem);
  } else if (snap.reply == nullptr) {
    out.push_back("no daemon running for this resource set; waiting for one to start");
  }
  if (s.totals != nullptr) {
    const Json& t = *s.totals;
    std::string line = "since start:";
    line += " " + std::to_string(count(t, "jobs").value_or(0)) + " jobs";
    if (auto f = count(t, "failed")) line += ", " + std::to_string(*f) + " failed";
    if (auto f = count(t, "timed_out")) line += ", " + std::to_string(*f) + " timed out";
    if (auto cs = number(t, "core_seconds")) line += ", " + format_duration(*cs) + " core time";
    out.push_back(line);
  }
  if (!s.history_error.empty()) out.push_back("history: " + s.history_error);
  return out;
}

std::string holder_keys(const std::vector<std::uint64_t>& holders,
                        const std::map<std::uint64_t, char>& keys) {
  std::string k;
  for (std::uint64_t h : holders) {
    if (h == 0) {
      k += '.';
    } else {
      auto it = keys.find(h);
      k += it == keys.end() ? '?' : it->second;
    }
  }
  return k;
}

// Cells "<id><key per slot>" packed into lines of at most cols columns.
void grid(std::vector<std::string>& out, const std::string& prefix,
          const std::vector<std::string>& cells, int cols) {
  int cw = 0;
  for (const std::string& c : cells) cw = std::max(cw, display_width(c));
  std::string line = prefix;
  int in_line = 0;
  for (const std::string& c : cells) {
    std::string cell = pad_left(c, cw);
    if (in_line > 0 && display_width(line) + 1 + cw > cols) {
      out.push_back(line);
      line = std::string(prefix.size(), ' ');
      in_line = 0;
    }
    line += (line.empty() ? "" : " ") + cell;
    ++in_line;
  }
  if (in_line > 0) out.push_back(line);
}

std::vector<std::string> core_lines(const Status& s, bool per_core, int cols) {
  std::map<std::uint64_t, const Running*> by_id;
  std::map<std::uint64_t, char> keys;
  for (const Running& r : s.running) {
    by_id.emplace(r.id, &r);
    keys.emplace(r.id, r.key);
  }
  std::vector<std::string> out;
  if (per_core) {
    // One line per core and GPU: who holds it, for how long, what it is.
    std::vector<std::vector<std::string>> rows;
    auto add = [&](std::string name, std::vector<std::uint64_t> holders) {
      std::vector<std::uint64_t> jobs;
      for (std::uint64_t h : holders) {
        if (h != 0 && std::find(jobs.begin(), jobs.end(), h) == jobs.end()) jobs.push_back(h);
      }
      if (jobs.empty()) {
        rows.push_back({std::move(name), "-", "", ""});
        return;
      }
      std::string who = job_text(jobs[0]);
      for (std::size_t i = 1; i < jobs.size(); ++i) who += "," + std::to_string(jobs[i]);
      auto it = by_id.find(jobs[0]);
      const Running* r = it == by_id.end() ? nullptr : it->second;
      rows.push_back({std::move(name), who, r && r->run_s ? format_duration(*r->run_s) : "",
                      r ? r->what : ""});
    };
    for (const Core& c : s.cores) add("core " + std::to_string(c.id), c.holders);
    for (const Gpu& g : s.gpus) {
      std::string name = "gpu " + std::to_string(g.id);
      if (!g.name.empty() && g.name != std::to_string(g.id)) name += " (" + g.name + ")";
      add(std::move(name), {g.holder});
    }
    return table(rows, {false, false, true, false});
  }
  out.push_back("cores (letter: job below, . free)");
  auto id_width = [](int max_id) { return static_cast<int>(std::to_string(max_id).size()); };
  int w = 0;
  for (const Core& c : s.cores) w = std::max(w, id_width(c.id));
  std::vector<std::string> cells;
  for (const Core& c : s.cores)
    cells.push_back(pad_left(std::to_string(c.id), w) + holder_keys(c.holders, keys));
  grid(out, "", cells, cols);
  if (!s.gpus.empty()) {
    w = 0;
    for (const Gpu& g : s.gpus) w = std::max(w, id_width(g.id));
    cells.clear();
    for (const Gpu& g : s.gpus)
      cells.push_back(pad_left(std::to_string(g.id), w) + holder_keys({g.holder}, keys));
    grid(out, "gpus", cells, cols);
  }
  return out;
}

struct Section {
  std::string title;
  std::vector<std::string> items;
};

Section running_section(const Status& s, bool keys) {
  Section sec{"running " + std::to_string(s.running.size()), {}};
  std::vector<std::vector<std::string>> rows;
  for (const Running& r : s.running) {
    std::string what = r.what;
    if (r.parent) what = "[spawn of " + job_text(r.parent) + "] " + what;
    if (!r.state.empty() && r.state != "running") what = "[" + r.state + "] " + what;
    rows.push_back({keys ? std::string(1, r.key) : "", job_text(r.id),
                    r.ntasks ? "-n " + std::to_string(*r.ntasks) : "",
                    r.cores.empty() ? "" : "cores " + format_cpu_list(r.cores),
                    r.gpus.empty() ? "" : "gpus " + r.gpus,
                    r.run_s ? format_duration(*r.run_s) : "", what});
  }
  for (std::string& l : table(rows, {false, false, false, false, false, true}))
    sec.items.push_back("  " + l);
  return sec;
}

Section queued_section(const Status& s) {
  Section sec{"queued " + std::to_string(s.queued.size()), {}};
  std::vector<std::vector<std::string>> rows;
  for (const Queued& q : s.queued) {
    rows.push_back({q.position ? "#" + std::to_string(*q.position) : "", job_text(q.id),
                    q.ntasks ? "-n " + std::to_string(*q.ntasks) : "",
                    q.gpus && *q.gpus > 0 ? "gpus " + std::to_string(*q.gpus) : "",
                    q.wait_s ? "waiting " + format_duration(*q.wait_s) : "",
                    q.start_by_s ? "start by " + format_duration(*q.start_by_s) : "",
                    q.parent ? "[spawn of " + job_text(q.parent) + "] " + q.what : q.what});
  }
  for (std::string& l : table(rows)) sec.items.push_back("  " + l);
  return sec;
}

// As `jiffy status` words them: "slurm step 312.4 on n[1-2]", or "slurm
// step (starting)" until squeue has found it.
Section forwarded_section(const Status& s) {
  Section sec{"forwarded " + std::to_string(s.forwarded.size()), {}};
  std::vector<std::vector<std::string>> rows;
  for (const Forward& f : s.forwarded) {
    std::string where = (f.backend.empty() ? "slurm" : f.backend) + " step ";
    where += f.step.empty() ? "(starting)" : f.step + (f.nodes.empty() ? "" : " on " + f.nodes);
    rows.push_back({job_text(f.id), f.ntasks ? "-n " + std::to_string(*f.ntasks) : "", where,
                    f.run_s ? format_duration(*f.run_s) : "", f.what});
  }
  for (std::string& l : table(rows, {false, false, false, true})) sec.items.push_back("  " + l);
  return sec;
}

Section recent_section(const Status& s, double now) {
  Section sec{"finished (last " + std::to_string(s.recent.size()) + ")", {}};
  std::vector<std::vector<std::string>> rows;
  for (const Finished& f : s.recent) {
    rows.push_back({job_text(f.id), outcome_text(f), f.run_s ? format_duration(*f.run_s) : "-",
                    f.end ? format_duration(std::max(0.0, now - *f.end)) + " ago" : "", f.what});
  }
  for (std::string& l : table(rows, {false, false, true, true})) sec.items.push_back("  " + l);
  return sec;
}

// How many item rows each section gets out of `rows`, one at a time in turn;
// -1: the section is left out (not even its title fits).
std::vector<int> share_rows(const std::vector<Section>& secs, int rows) {
  std::vector<int> got(secs.size(), -1);
  int left = rows;
  for (std::size_t i = 0; i < secs.size() && left > 0; ++i) {
    got[i] = 0;
    --left;
  }
  for (bool more = true; more && left > 0;) {
    more = false;
    for (std::size_t i = 0; i < secs.size() && left > 0; ++i) {
      if (got[i] >= 0 && static_cast<std::size_t>(got[i]) < secs[i].items.size()) {
        ++got[i];
        --left;
        more = true;
      }
    }
  }
  return got;
}

// lines cut to n, the last saying how many were cut.
void keep_first(std::vector<std::string>& lines, std::size_t n, const std::string& indent) {
  if (lines.size() <= n) return;
  std::size_t cut = lines.size() - n + 1;
  lines.resize(n);
  if (n > 0) lines.back() = indent + "... " + std::to_string(cut) + " more";
}

}  // namespace

// ---------------------------------------------------------------------------

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) s = 0;
  if (s < 10) return fmt("%.1fs", std::floor(s * 10) / 10);
  auto t = static_cast<long long>(s);
  char buf[48];
  if (t < 60) {
    std::snprintf(buf, sizeof buf, "%llds", t);
  } else if (t < 3600) {
    std::snprintf(buf, sizeof buf, "%lld:%02lld", t / 60, t % 60);
  } else if (t < 86400) {
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", t / 3600, t / 60 % 60, t % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lldd%02lldh", t / 86400, t / 3600 % 24);
  }
  return buf;
}

namespace {

// Calls emit(bytes, columns) for each character of text: valid UTF-8 as
// is, anything a terminal would act on (or could misread) as "?".
template <typename Emit>
void for_each_char(std::string_view t, Emit emit) {
  std::size_t i = 0;
  while (i < t.size()) {
    auto b = static_cast<unsigned char>(t[i]);
    if (b < 0x80) {
      if (b < 0x20 || b == 0x7f) {
        if (!emit(std::string_view("?"), 1)) return;
      } else if (!emit(t.substr(i, 1), 1)) {
        return;
      }
      ++i;
      continue;
    }
    std::size_t n = b >= 0xC2 && b <= 0xDF   ? 2
                    : b >= 0xE0 && b <= 0xEF ? 3
                    : b >= 0xF0 && b <= 0xF4 ? 4
                                             : 0;
    std::uint32_t cp = n == 2 ? b & 0x1F : n == 3 ? b & 0x0F : b & 0x07;
    bool ok = n > 0 && i + n <= t.size();
    for (std::size_t k = 1; ok && k < n; ++k) {
      auto c = static_cast<unsigned char>(t[i + k]);
      if ((c & 0xC0) != 0x80) ok = false;
      cp = (cp << 6) | (c & 0x3F);
    }
    // Overlong forms, surrogates, beyond U+10FFFF: a byte at a time.
    if (ok && ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
               (cp >= 0xD800 && cp <= 0xDFFF))) {
      ok = false;
    }
    if (!ok) {
      if (!emit(std::string_view("?"), 1)) return;
      ++i;
      continue;
    }
    if (cp < 0xA0) {  // a C1 control (0x9B is CSI to some terminals)
      if (!emit(std::string_view("?"), 1)) return;
      i += n;
      continue;
    }
    if (!emit(t.substr(i, n), cp >= 0x1100 ? 2 : 1)) return;
    i += n;
  }
}

}  // namespace

std::string fit_to_width(std::string_view text, int cols) {
  std::string out;
  int used = 0;
  for_each_char(text, [&](std::string_view bytes, int w) {
    if (used + w > cols) return false;
    out.append(bytes);
    used += w;
    return true;
  });
  return out;
}

int display_width(std::string_view text) {
  int used = 0;
  for_each_char(text, [&](std::string_view, int w) {
    used += w;
    return true;
  });
  return used;
}

std::vector<std::string> render_top(const TopSnapshot& snap, TermSize size, double now) {
  const int cols = std::max(1, size.cols);
  const int rows = std::max(0, size.rows);
  Status s = snap.reply != nullptr ? read_status(*snap.reply, now) : Status{};
  std::vector<std::string> out = header_lines(s, snap, cols, now);
  if (rows > 0 && out.size() > static_cast<std::size_t>(rows))
    out.resize(static_cast<std::size_t>(rows));
  if (snap.reply != nullptr) {
    int left = rows > 0 ? rows - static_cast<int>(out.size()) : 1 << 30;
    // A line per core while they take at most a third of the screen.
    int per_core_budget = rows > 0 ? std::max(2, left / 3) : 16;
    bool per_core = s.cores.size() + s.gpus.size() <= static_cast<std::size_t>(per_core_budget);
    std::vector<std::string> cores = core_lines(s, per_core, cols);
    // The cores may take all but a line for each section title.
    keep_first(cores, static_cast<std::size_t>(std::max(0, left - 3)), "");
    left -= static_cast<int>(cores.size());
    out.insert(out.end(), cores.begin(), cores.end());
    std::vector<Section> secs = {running_section(s, !per_core), queued_section(s)};
    // Only where there are some: most machines never forward a launch.
    if (!s.forwarded.empty()) secs.push_back(forwarded_section(s));
    if (s.has_recent) secs.push_back(recent_section(s, now));
    std::vector<int> got = share_rows(secs, left);
    for (std::size_t i = 0; i < secs.size(); ++i) {
      if (got[i] < 0) continue;
      out.push_back(secs[i].title);
      keep_first(secs[i].items, static_cast<std::size_t>(got[i]), "  ");
      out.insert(out.end(), secs[i].items.begin(), secs[i].items.end());
    }
  }
  for (std::string& l : out) {
    l = fit_to_width(l, cols);
    if (l.empty()) l = " ";
  }
  return out;
}

}  // namespace jiffy
