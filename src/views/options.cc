// Options of `jiffy history` and `jiffy report`: a table per subcommand
// (name -> handler), values attached with '=' or given as the next word, one
// dash or two, as in the rest of jiffy's command line (cli/parse.cc).
#include "views/options.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <span>
#include <string_view>

#include "util/error.h"

namespace jiffy::views {

namespace {

constexpr const char* kTimeForms =
    "a duration ago (90s, 10m, 2h, 3d, 1w) or a local time (2026-12-04T10:00[:00], "
    "2026-12-04 10:00, 2026-12-04)";

bool digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

int to_int(std::string_view s) {
  int v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

std::optional<std::int64_t> parse_duration_ago(const std::string& text, std::int64_t now_ns) {
  if (text.size() < 2) return std::nullopt;
  double unit = 0;
  switch (text.back()) {
    case 's':
      unit = 1;
      break;
    case 'm':
      unit = 60;
      break;
    case 'h':
      unit = 3600;
      break;
    case 'd':
      unit = 86400;
      break;
    case 'w':
      unit = 7 * 86400;
      break;
    default:
      return std::nullopt;
  }
  std::string_view number(text.data(), text.size() - 1);
  if (number.empty() || !(number[0] >= '0' && number[0] <= '9')) return std::nullopt;
  double v = 0;
  auto [ptr, ec] =
      std::from_chars(number.data(), number.data() + number.size(), v, std::chars_format::fixed);
  if (ec != std::errc() || ptr != number.data() + number.size() || !std::isfinite(v))
    return std::nullopt;
  double ns = v * unit * 1e9;
  if (ns > 1e18) return std::nullopt;  // beyond 30 years: a typo
  return now_ns - static_cast<std::int64_t>(ns);
}

// YYYY-MM-DD[(T| )HH:MM[:SS]] in local time.
std::optional<std::int64_t> parse_local_time(const std::string& text) {
  std::string_view s = text;
  if (s.size() < 10 || s[4] != '-' || s[7] != '-') return std::nullopt;
  std::string_view y = s.substr(0, 4), mo = s.substr(5, 2), d = s.substr(8, 2);
  if (!digits(y) || !digits(mo) || !digits(d)) return std::nullopt;
  std::tm tm{};
  tm.tm_year = to_int(y) - 1900;
  tm.tm_mon = to_int(mo) - 1;
  tm.tm_mday = to_int(d);
  s.remove_prefix(10);
  if (!s.empty()) {
    if ((s[0] != 'T' && s[0] != ' ') || (s.size() != 6 && s.size() != 9) || s[3] != ':')
      return std::nullopt;
    std::string_view h = s.substr(1, 2), mi = s.substr(4, 2), sec = "00";
    if (s.size() == 9) {
      if (s[6] != ':') return std::nullopt;
      sec = s.substr(7, 2);
    }
    if (!digits(h) || !digits(mi) || !digits(sec)) return std::nullopt;
    tm.tm_hour = to_int(h);
    tm.tm_min = to_int(mi);
    tm.tm_sec = to_int(sec);
  }
  if (tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 ||
      tm.tm_sec > 60) {
    return std::nullopt;
  }
  int mday = tm.tm_mday, mon = tm.tm_mon;
  tm.tm_isdst = -1;  // whatever daylight saving time says on that date
  std::time_t t = std::mktime(&tm);
  if (t == static_cast<std::time_t>(-1) || tm.tm_mday != mday || tm.tm_mon != mon)
    return std::nullopt;  // Feb 30
  return static_cast<std::int64_t>(t) * 1'000'000'000;
}

// A cursor over the words, handing the current option its value.
class Words {
 public:
  Words(const std::vector<std::string>& args) : args_(args) {}
  bool done() const { return pos_ >= args_.size(); }
  void next_option() {
    const std::string& word = args_[pos_++];
    if (word.size() < 2 || word[0] != '-') {
      throw Error("unexpected argument '" + word + "' to 'jiffy " + args_[0] + "' (see jiffy " +
                  args_[0] + " --help)");
    }
    std::size_t dashes = word.starts_with("--") ? 2 : 1, eq = word.find('=');
    spelled_ = word.substr(0, eq);
    name_ = spelled_.substr(dashes);
    attached_.reset();
    if (eq != std::string::npos) attached_ = word.substr(eq + 1);
  }
  const std::string& name() const { return name_; }
  const std::string& spelled() const { return spelled_; }
  std::string value() {
    if (attached_) return *std::exchange(attached_, std::nullopt);
    if (done()) throw Error(spelled_ + ": missing value");
    return args_[pos_++];
  }
  std::string nonempty() {
    std::string v = value();
    if (v.empty()) throw Error(spelled_ + ": expected a value, got ''");
    return v;
  }
  int positive() {
    std::string v = value();
    int n = 0;
    auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (v.empty() || ec != std::errc() || ptr != v.data() + v.size() || n < 1) {
      throw Error(spelled_ + ": expected a positive integer, got '" + v + "'");
    }
    return n;
  }
  std::int64_t time(std::int64_t now_ns) { return parse_time(spelled_, value(), now_ns); }
  void end_option() const {
    if (attached_) throw Error(spelled_ + ": takes no value");
  }

 private:
  const std::vector<std::string>& args_;
  std::size_t pos_ = 1;
  std::string spelled_, name_;
  std::optional<std::string> attached_;
};

template <typename State>
struct Option {
  std::string_view name;
  void (*handle)(State&, Words&, std::int64_t now_ns);
};

void check_window(const std::optional<std::int64_t>& since,
                  const std::optional<std::int64_t>& until) {
  if (since && until && *until < *since) throw Error("--until is earlier than --since");
}

constexpr Option<HistoryArgs> kHistoryOptions[] = {
    {"since", [](HistoryArgs& a, Words& w, std::int64_t now) { a.filter.since_ns = w.time(now); }},
    {"until", [](HistoryArgs& a, Words& w, std::int64_t now) { a.filter.until_ns = w.time(now); }},
    {"failed", [](HistoryArgs& a, Words&, std::int64_t) { a.filter.failed = true; }},
    {"label", [](HistoryArgs& a, Words& w, std::int64_t) { a.filter.label_glob = w.nonempty(); }},
    {"command",
     [](HistoryArgs& a, Words& w, std::int64_t) { a.filter.command_glob = w.nonempty(); }},
    {"cwd", [](HistoryArgs& a, Words& w, std::int64_t) { a.filter.cwd = w.nonempty(); }},
    {"slowest", [](HistoryArgs& a, Words& w, std::int64_t) { a.filter.slowest = w.positive(); }},
    {"limit", [](HistoryArgs& a, Words& w, std::int64_t) { a.filter.limit = w.positive(); }},
    {"json", [](HistoryArgs& a, Words&, std::int64_t) { a.json = true; }},
    {"db", [](HistoryArgs& a, Words& w, std::int64_t) { a.db = w.nonempty(); }},
};

constexpr Option<ReportArgs> kReportOptions[] = {
    {"since", [](ReportArgs& a, Words& w, std::int64_t now) { a.since_ns = w.time(now); }},
    {"until", [](ReportArgs& a, Words& w, std::int64_t now) { a.until_ns = w.time(now); }},
    {"last-run", [](ReportArgs& a, Words&, std::int64_t) { a.last_run = true; }},
    {"o",
     [](ReportArgs& a, Words& w, std::int64_t) {
       std::string path = w.nonempty();
       if (output_format(path).empty()) {
         throw Error("-o " + path + ": unknown format (the name must end in .html, .json or .svg)");
       }
       a.outputs.push_back(path);
     }},
    {"db", [](ReportArgs& a, Words& w, std::int64_t) { a.db = w.nonempty(); }},
};

template <typename State>
std::optional<ViewHelp> parse_options(State& state, std::span<const Option<State>> table,
                                      const std::vector<std::string>& args, std::int64_t now_ns) {
  Words w(args);
  while (!w.done()) {
    w.next_option();
    if (w.name() == "h" || w.name() == "help") return ViewHelp{args[0]};
    auto it = std::find_if(table.begin(), table.end(),
                           [&](const Option<State>& o) { return o.name == w.name(); });
    if (it == table.end())
      throw Error("unknown option '" + w.spelled() + "' (see jiffy " + args[0] + " --help)");
    it->handle(state, w, now_ns);
    w.end_option();
  }
  return std::nullopt;
}

}  // namespace

std::int64_t parse_time(const std::string& what, const std::string& text, std::int64_t now_ns) {
  if (auto t = parse_duration_ago(text, now_ns)) return *t;
  if (auto t = parse_local_time(text)) return *t;
  throw Error(what + ": expected " + kTimeForms + ", got '" + text + "'");
}

std::string output_format(const std::string& path) {
  for (const char* ext : {"html", "json", "svg"}) {
    std::string dot = std::string(".") + ext;
    if (path.size() > dot.size() && path.ends_with(dot)) return ext;
  }
  return "";
}

ViewArgs parse_view_args(const std::vector<std::string>& args, std::int64_t now_ns) {
  if (args.empty()) throw Error("expected 'history' or 'report'");
  if (args[0] == "history") {
    HistoryArgs a;
    if (auto help = parse_options<HistoryArgs>(a, kHistoryOptions, args, now_ns)) return *help;
    check_window(a.filter.since_ns, a.filter.until_ns);
    const history::Filter& f = a.filter;
    a.selective = f.since_ns || f.until_ns || f.failed || !f.label_glob.empty() ||
                  !f.command_glob.empty() || !f.cwd.empty() || f.slowest > 0 || f.limit > 0;
    return a;
  }
  if (args[0] == "report") {
    ReportArgs a;
    if (auto help = parse_options<ReportArgs>(a, kReportOptions, args, now_ns)) return *help;
    if (a.last_run && (a.since_ns || a.until_ns))
      throw Error("--last-run cannot be combined with --since or --until");
    check_window(a.since_ns, a.until_ns);
    if (!a.since_ns && !a.until_ns) a.last_run = true;
    return a;
  }
  throw Error("unknown view '" + args[0] + "' (expected history or report)");
}

const char* view_help(const std::string& subcommand) {
  if (subcommand == "report") {
    return R"(Usage: jiffy report [--since TIME] [--until TIME] [--last-run] [-o FILE]...

Reports on the jobs of a time window: every job whose submit-to-end span
overlaps it. Without -o, prints a summary; -o FILE (repeatable) writes,
by the file's extension:
  .html   one self-contained page: a timeline (a row per core and GPU, a bar
          per job on each of its cores, coloured by outcome; hover for the
          command, label, exit and queue wait), the queue length over time,
          and a summary (failures, timeouts, utilisation, queue wait, the 20
          longest jobs, jobs wider than the machine, jobs that never ran)
  .json   Chrome Trace Event format (open in https://ui.perfetto.dev or
          chrome://tracing): one thread per core and GPU
  .svg    the timeline alone

Options:
  --since TIME     window start (default: a day before --until)
  --until TIME     window end (default: now)
  --last-run       the last burst of launches: jobs with no gap longer than a
                   minute between one's end and the next's submit (the
                   default without --since/--until)
  -o FILE          write the report (.html, .json or .svg)
  --db FILE        read this database instead of the daemon's

TIME is a duration ago (90s, 10m, 2h, 3d, 1w) or a local time
(2026-12-04T10:00:00, "2026-12-04 10:00", 2026-12-04).
)";
  }
  return R"(Usage: jiffy history [options]

Lists the jobs launched on this machine, one per line, the newest last.
Without options that choose rows, shows the last 100.

Options:
  --since TIME     jobs that ended at or after TIME
  --until TIME     jobs that ended at or before TIME
  --failed         jobs whose outcome is not ok (failed, signaled, timeout,
                   refused, lost, cancelled)
  --label GLOB     jobs whose label matches (SQLite GLOB: * ? [...], case-
                   sensitive)
  --command GLOB   jobs whose command matches
  --cwd DIR        jobs launched in DIR
  --slowest N      the N longest run times (still listed by end time)
  --limit N        the last N jobs (after the other filters)
  --json           one JSON object per line (fields: docs/history.md)
  --db FILE        read this database instead of the daemon's

TIME is a duration ago (90s, 10m, 2h, 3d, 1w) or a local time
(2026-12-04T10:00:00, "2026-12-04 10:00", 2026-12-04).
)";
}

}  // namespace jiffy::views
