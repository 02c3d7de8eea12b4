#include "views/options.h"

#include <gtest/gtest.h>

#include <ctime>

#include "util/error.h"

namespace jiffy::views {
namespace {

constexpr std::int64_t kNow = 1'800'000'000'000'000'000;
constexpr std::int64_t kS = 1'000'000'000;

std::string error_of(const std::vector<std::string>& args) {
  try {
    parse_view_args(args, kNow);
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

std::int64_t local(int y, int mo, int d, int h, int mi, int s) {
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  tm.tm_isdst = -1;
  return static_cast<std::int64_t>(std::mktime(&tm)) * kS;
}

TEST(ViewTime, DurationsMeanThatLongAgo) {
  EXPECT_EQ(parse_time("--since", "90s", kNow), kNow - 90 * kS);
  EXPECT_EQ(parse_time("--since", "10m", kNow), kNow - 600 * kS);
  EXPECT_EQ(parse_time("--since", "2h", kNow), kNow - 7200 * kS);
  EXPECT_EQ(parse_time("--since", "3d", kNow), kNow - 3 * 86400 * kS);
  EXPECT_EQ(parse_time("--since", "1w", kNow), kNow - 7 * 86400 * kS);
  EXPECT_EQ(parse_time("--since", "1.5h", kNow), kNow - 5400 * kS);
}

TEST(ViewTime, IsoTimesAreLocal) {
  EXPECT_EQ(parse_time("--since", "2026-12-04T10:00:00", kNow), local(2026, 12, 4, 10, 0, 0));
  EXPECT_EQ(parse_time("--since", "2026-12-04 10:00", kNow), local(2026, 12, 4, 10, 0, 0));
  EXPECT_EQ(parse_time("--since", "2026-12-04T10:00:30", kNow), local(2026, 12, 4, 10, 0, 30));
  EXPECT_EQ(parse_time("--since", "2026-12-04", kNow), local(2026, 12, 4, 0, 0, 0));
}

TEST(ViewTime, MalformedTimesAreRefusedWithTheForms) {
  for (const char* bad :
       {"", "10", "m", "10x", "-5m", "1e3s", "2026-13-01", "2026-02-30", "2026-12-04T25:00",
        "2026-12-04 10", "yesterday", "10 m", "2026-12-04T10:00:00Z"}) {
    try {
      parse_time("--since", bad, kNow);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--since: expected a duration ago"), std::string::npos)
          << e.what();
    }
  }
}

TEST(ViewOptions, HistoryFiltersAreParsed) {
  auto a = std::get<HistoryArgs>(parse_view_args(
      {"history", "--since", "1h", "--until=10m", "--failed", "--label", "run*", "--command",
       "./ex?", "--cwd", "/w", "--slowest", "5", "--limit", "3", "--json", "--db", "x.db"},
      kNow));
  EXPECT_EQ(a.filter.since_ns, kNow - 3600 * kS);
  EXPECT_EQ(a.filter.until_ns, kNow - 600 * kS);
  EXPECT_TRUE(a.filter.failed);
  EXPECT_EQ(a.filter.label_glob, "run*");
  EXPECT_EQ(a.filter.command_glob, "./ex?");
  EXPECT_EQ(a.filter.cwd, "/w");
  EXPECT_EQ(a.filter.slowest, 5);
  EXPECT_EQ(a.filter.limit, 3);
  EXPECT_TRUE(a.json);
  EXPECT_TRUE(a.selective);
  EXPECT_EQ(a.db, "x.db");
  EXPECT_FALSE(std::get<HistoryArgs>(parse_view_args({"history", "--json"}, kNow)).selective);
}

TEST(ViewOptions, BadOptionsSayWhat) {
  EXPECT_EQ(error_of({"history", "--bogus"}),
            "unknown option '--bogus' (see jiffy history --help)");
  EXPECT_EQ(error_of({"history", "--limit", "0"}), "--limit: expected a positive integer, got '0'");
  EXPECT_EQ(error_of({"history", "--limit"}), "--limit: missing value");
  EXPECT_EQ(error_of({"history", "--failed=yes"}), "--failed: takes no value");
  EXPECT_EQ(error_of({"history", "foo"}),
            "unexpected argument 'foo' to 'jiffy history' (see jiffy history --help)");
  EXPECT_EQ(error_of({"history", "--since", "1h", "--until", "2h"}),
            "--until is earlier than --since");
  EXPECT_EQ(error_of({"report", "-o", "x.pdf"}),
            "-o x.pdf: unknown format (the name must end in .html, .json or .svg)");
  EXPECT_EQ(error_of({"report", "--last-run", "--since", "1h"}),
            "--last-run cannot be combined with --since or --until");
}

TEST(ViewOptions, ReportDefaultsToTheLastRun) {
  auto a = std::get<ReportArgs>(
      parse_view_args({"report", "-o", "a.html", "-o", "b.json", "-o=c.svg"}, kNow));
  EXPECT_TRUE(a.last_run);
  EXPECT_EQ(a.outputs, (std::vector<std::string>{"a.html", "b.json", "c.svg"}));
  auto b = std::get<ReportArgs>(parse_view_args({"report", "--since", "2h"}, kNow));
  EXPECT_FALSE(b.last_run);
  EXPECT_EQ(b.since_ns, kNow - 7200 * kS);
}

TEST(ViewOptions, HelpAnswersAtOnce) {
  EXPECT_EQ(std::get<ViewHelp>(parse_view_args({"report", "--help", "--bogus"}, kNow)).subcommand,
            "report");
  EXPECT_EQ(std::get<ViewHelp>(parse_view_args({"history", "-h"}, kNow)).subcommand, "history");
}

}  // namespace
}  // namespace jiffy::views
