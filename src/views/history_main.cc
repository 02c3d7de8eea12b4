// jiffy-history: `jiffy history` and `jiffy report`, the views of the
// history database (docs/history.md). jiffy-launch execs it for those two
// subcommands (src/main.cc), so that only this executable links SQLite.
//
// Reads like a table of contents: parse the options, find the database
// (ask the daemon, which ingests its journal first and says where it
// writes), read what the options select, render it.
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "history/path.h"
#include "history/query.h"
#include "launch/client.h"
#include "util/error.h"
#include "util/runtime_dir.h"
#include "views/history_table.h"
#include "views/options.h"
#include "views/report_model.h"
#include "views/report_render.h"

namespace {

using namespace jiffy;

constexpr int kDefaultRows = 100;                     // the table without options choosing rows
constexpr std::int64_t kBurstGapNs = 60'000'000'000;  // --last-run: a minute

std::int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

void warn(const std::string& message) {
  std::fprintf(stderr, "jiffy: history: %s\n", message.c_str());
}

int daemon_timeout_ms() { return static_cast<int>(daemon_answer_timeout_s() * 1000); }

// Whether launchers left records that no daemon has ingested yet (they
// ran while none did: a refused launch, a daemon killed).
bool journal_waits() {
  try {
    struct stat st;
    return ::stat(daemon_paths().history.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0;
  } catch (const std::exception&) {
    return false;
  }
}

// The database the daemon writes, once it has ingested its journal; "" when
// no daemon runs or it keeps no history (then the environment's default is
// read). The database has one writer, the daemon: when none runs but its
// journal holds records, one is started to ingest them (it leaves when
// idle, as after a launch). What the daemon says is wrong with its
// database goes to stderr.
std::string ask_daemon() {
  try {
    auto reply = DaemonClient::ask({{"type", proto::type::kHistory}, {"v", proto::kVersion}}, daemon_timeout_ms(),
                                   /*start_if_missing=*/journal_waits());
    if (!reply) return "";
    if ((*reply)["type"] != proto::type::kHistoryReply) return "";  // a daemon from before the history
    std::string error = reply->value("error", "");
    if (!error.empty()) warn(error);
    return reply->value("db", "");
  } catch (const Error& e) {
    // A daemon silent, or gone for good: read what is on disk.
    if (e.sys_errno() == ETIMEDOUT) warn(std::string(e.what()) + "; reading the database as it is");
    return "";
  } catch (const std::exception&) {
    return "";  // a malformed reply: read what is on disk
  }
}

// Opens the database: --db, else the daemon's, else the environment's.
// nullopt (and a message) when there is none yet.
std::optional<history::Database> open_database(const std::string& explicit_path) {
  std::string path = explicit_path;
  if (path.empty()) path = ask_daemon();
  if (path.empty()) path = history::default_db_path([](const char* n) -> std::optional<std::string> {
    const char* v = std::getenv(n);
    return v ? std::optional<std::string>(v) : std::nullopt;
  });
  if (path.empty()) throw Error("history: no database: neither XDG_STATE_HOME nor HOME is set");
  auto db = history::Database::open(path);
  if (!db) warn("no jobs recorded yet (no database at " + path + ")");
  return db;
}

void write_out(const std::string& text) { std::fwrite(text.data(), 1, text.size(), stdout); }

int table_width() {
  winsize ws{};
  if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 60)
    return ws.ws_col;
  return 100;
}

int run_history(views::HistoryArgs& args) {
  auto db = open_database(args.db);
  if (!db) return 0;
  bool capped = !args.selective && !args.json;
  if (capped) args.filter.limit = kDefaultRows;
  std::vector<history::Row> rows = db->rows(args.filter);
  if (args.json) {
    for (const history::Row& r : rows) {
      write_out(history::to_json(r).dump(-1, ' ', false, proto::Json::error_handler_t::replace) +
                "\n");
    }
    return 0;
  }
  if (rows.empty()) {
    std::fprintf(stderr, "jiffy: history: %s (database %s)\n",
                 args.selective ? "no jobs match" : "no jobs recorded yet", db->path().c_str());
    return 0;
  }
  write_out(views::render_table(rows, table_width()));
  if (capped) {
    std::int64_t total = db->count({});
    if (total > static_cast<std::int64_t>(rows.size())) {
      std::printf("(the last %zu of %lld jobs; --limit N, --since TIME or --json for more)\n",
                  rows.size(), static_cast<long long>(total));
    }
  }
  return 0;
}

// Writes `text` to `path` whole: a temporary file renamed over it.
void write_file(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (!f) throw_errno("cannot write " + path);
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw_errno("cannot write " + path);
  }
}

int run_report(const views::ReportArgs& args) {
  auto db = open_database(args.db);
  if (!db) return args.outputs.empty() ? 0 : 1;
  std::int64_t since = 0, until = 0;
  if (args.last_run) {
    auto burst = db->last_burst(kBurstGapNs);
    if (!burst) {
      std::fprintf(stderr, "jiffy: report: no jobs recorded yet (database %s)\n",
                   db->path().c_str());
      return args.outputs.empty() ? 0 : 1;
    }
    since = burst->first;
    until = burst->second;
  } else {
    until = args.until_ns.value_or(now_ns());
    since = args.since_ns.value_or(until - 86'400'000'000'000);
  }
  history::Filter filter;
  filter.since_ns = since;
  filter.until_ns = until;
  filter.overlapping = true;
  views::ReportModel model =
      views::build_report(db->rows(filter), since, until, db->machine_at(until));
  if (args.outputs.empty()) {
    write_out(views::render_text(model));
    return 0;
  }
  for (const std::string& path : args.outputs) {
    std::string format = views::output_format(path);
    std::string text = format == "html"  ? views::render_html(model)
                       : format == "svg" ? views::render_svg(model, true)
                                         : views::render_trace(model);
    write_file(path, text);
    std::fprintf(stderr, "jiffy: report: wrote %s (%d job%s)\n", path.c_str(), model.summary.jobs,
                 model.summary.jobs == 1 ? "" : "s");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    views::ViewArgs parsed = views::parse_view_args(args, now_ns());
    if (auto* help = std::get_if<views::ViewHelp>(&parsed)) {
      std::fputs(views::view_help(help->subcommand), stdout);
      return 0;
    }
    if (auto* h = std::get_if<views::HistoryArgs>(&parsed)) return run_history(*h);
    return run_report(std::get<views::ReportArgs>(parsed));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "jiffy: %s\n", e.what());
    return 1;
  }
}
