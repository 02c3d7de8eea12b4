// The command lines of `jiffy history` and `jiffy report` (pure: the clock
// is a parameter, the local time zone is the process's).
//
// Both take --since/--until as a duration ago ("90s", "10m", "2h", "3d",
// "1w"; decimals allowed) or a local time ("2026-12-04T10:00:00",
// "2026-12-04 10:00", "2026-12-04"). Bad input throws Error with a
// one-line message (without "jiffy: ", which main adds).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "history/query.h"

namespace jiffy::views {

// The time `text` names, in ns since the epoch; `now_ns` anchors durations.
// Throws Error("<what>: expected ...") when it is neither form.
std::int64_t parse_time(const std::string& what, const std::string& text, std::int64_t now_ns);

struct HistoryArgs {
  history::Filter filter;
  bool json = false;
  bool selective = false;  // some option chose rows (else the table shows the last 100)
  std::string db;          // --db FILE: read this database, do not ask the daemon
};

struct ReportArgs {
  std::optional<std::int64_t> since_ns, until_ns;
  bool last_run = false;             // also the default when no window is given
  std::vector<std::string> outputs;  // -o FILE: .html, .json, .svg
  std::string db;
};

struct ViewHelp {
  std::string subcommand;
};

using ViewArgs = std::variant<HistoryArgs, ReportArgs, ViewHelp>;

// args[0] is "history" or "report"; the rest are its options.
ViewArgs parse_view_args(const std::vector<std::string>& args, std::int64_t now_ns);

// The text `jiffy history --help` / `jiffy report --help` prints.
const char* view_help(const std::string& subcommand);

// The output format -o FILE asks for, by extension: "html", "json", "svg";
// "" when unknown.
std::string output_format(const std::string& path);

}  // namespace jiffy::views
