#include "views/top_render.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace jiffy {
namespace {

using proto::Json;

constexpr double kNow = 1'800'000'000.0;

// A status reply as today's daemon sends it (daemon/server.cc status_json):
// `cores` cores of one slot, `holders[i]` the job on core i (0 = free).
Json reply_with(const std::vector<unsigned>& holders, int gpus = 0) {
  Json cores = Json::array();
  for (std::size_t i = 0; i < holders.size(); ++i) {
    cores.push_back({{"id", i},
                     {"cpus", {i}},
                     {"numa", 0},
                     {"slots", 1},
                     {"holders", {holders[i] ? Json(holders[i]) : Json(nullptr)}}});
  }
  Json g = Json::array();
  for (int i = 0; i < gpus; ++i)
    g.push_back({{"id", i}, {"name", std::to_string(i)}, {"holder", nullptr}});
  return {{"type", "status_reply"},
          {"daemon", {{"pid", 4242}, {"uptime_s", 3725.0}, {"socket", "/tmp/x.sock"}}},
          {"resources", {{"cores", cores}, {"gpus", g}}},
          {"running", Json::array()},
          {"queued", Json::array()}};
}

Json running_job(unsigned id, std::vector<int> cores, double age_s, const std::string& command) {
  return {{"job", id},
          {"ntasks", cores.size()},
          {"slots", cores.size()},
          {"gpus_requested", 0},
          {"pid", 100},
          {"command", command},
          {"state", "running"},
          {"cores", cores},
          {"gpus", Json::array()},
          {"exclusive", false},
          {"age_s", age_s},
          {"waited_s", 0.0}};
}

// A launch run as a Slurm step, as daemon/forwarded.cc lists it.
Json forwarded_launch(unsigned id, int ntasks, const std::string& step, const std::string& nodes,
                      const std::string& command) {
  return {{"job", id},         {"backend", "slurm"}, {"pid", 4711},  {"ntasks", ntasks},
          {"command", command}, {"cwd", "/w"},       {"label", ""},  {"step", step},
          {"nodes", nodes},     {"age_s", 3.2}};
}

std::vector<std::string> render(const Json& reply, TermSize size = {80, 24}) {
  return render_top({&reply, ""}, size, kNow);
}

std::string joined(const std::vector<std::string>& lines) {
  std::string all;
  for (const std::string& l : lines) all += l + "\n";
  return all;
}

bool has_line(const std::vector<std::string>& lines, const std::string& needle) {
  for (const std::string& l : lines) {
    if (l.find(needle) != std::string::npos) return true;
  }
  return false;
}

void expect_fits(const std::vector<std::string>& lines, TermSize size) {
  if (size.rows > 0) {
    EXPECT_LE(lines.size(), static_cast<std::size_t>(size.rows));
  }
  for (const std::string& l : lines) {
    EXPECT_LE(display_width(l), size.cols) << l;
    EXPECT_FALSE(l.empty());
    EXPECT_EQ(l.find('\n'), std::string::npos) << l;
  }
}

TEST(TopRender, NoDaemonSaysSo) {
  std::vector<std::string> lines = render_top({nullptr, ""}, {80, 24}, kNow);
  ASSERT_GE(lines.size(), 2u);
  EXPECT_EQ(lines[0].rfind("jiffy top", 0), 0u);
  EXPECT_TRUE(has_line(lines, "no daemon running")) << joined(lines);
}

TEST(TopRender, ProblemIsShownUnderTheHeader) {
  Json r = reply_with({0, 0});
  std::vector<std::string> lines =
      render_top({&r, "the daemon has not answered for 3.0s"}, {80, 24}, kNow);
  ASSERT_GE(lines.size(), 2u);
  EXPECT_EQ(lines[1], "the daemon has not answered for 3.0s");
}

TEST(TopRender, HeaderCountsBusyCoresGpusAndQueue) {
  Json r = reply_with({0, 7, 7, 0}, 2);
  r["resources"]["gpus"][1]["holder"] = 7;
  r["running"].push_back(running_job(7, {1, 2}, 3.2, "sleep 30"));
  r["queued"].push_back(
      {{"job", 8}, {"ntasks", 4}, {"position", 0}, {"age_s", 2.0}, {"command", "x"}});
  std::vector<std::string> lines = render(r);
  EXPECT_NE(lines[0].find("pid 4242"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("up 1:02:05"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("cores 2/4"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("gpus 1/2"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("queued 1"), std::string::npos) << lines[0];
}

TEST(TopRender, TodaysReplyShowsEachJobOnItsCore) {
  Json r = reply_with({0, 7});
  r["running"].push_back(running_job(7, {1}, 3.25, "sleep 30"));
  std::vector<std::string> lines = render(r);
  EXPECT_TRUE(has_line(lines, "core 0  -")) << joined(lines);
  EXPECT_TRUE(has_line(lines, "core 1  job 7  3.2s  sleep 30")) << joined(lines);
  EXPECT_TRUE(has_line(lines, "running 1")) << joined(lines);
  EXPECT_TRUE(has_line(lines, "job 7  -n 1  cores 1  3.2s  sleep 30")) << joined(lines);
  EXPECT_TRUE(has_line(lines, "queued 0")) << joined(lines);
  // No history in today's reply: no section for it, no totals.
  EXPECT_FALSE(has_line(lines, "finished")) << joined(lines);
  EXPECT_FALSE(has_line(lines, "since start")) << joined(lines);
}

TEST(TopRender, NewFieldsGiveLabelAndRunTimeFromStart) {
  Json r = reply_with({7, 0});
  Json j = running_job(7, {0}, 0.0, "./app -x");
  j["label"] = "mylabel";
  j["start"] = kNow - 65;
  j["cores"] = Json::array({Json::array({0})});  // per rank
  r["running"].push_back(j);
  std::vector<std::string> lines = render(r);
  EXPECT_TRUE(has_line(lines, "core 0  job 7  1:05  mylabel  ./app -x")) << joined(lines);
}

TEST(TopRender, AZeroStartIsNotAStart) {
  Json r = reply_with({7});
  Json j = running_job(7, {0}, 2.5, "app");
  j["start"] = 0.0;  // granted, ranks not spawned yet
  r["running"].push_back(j);
  EXPECT_TRUE(has_line(render(r), "core 0  job 7  2.5s  app")) << joined(render(r));
}

TEST(TopRender, PerRankCoresAndGpuNamesAreMerged) {
  Json r = reply_with({7, 7, 7, 7});
  Json j = running_job(7, {}, 1.0, "app");
  j["cores"] = Json::array({Json::array({0, 1}), Json::array({2, 3})});
  j["gpus"] = Json::array({Json::array({"GPU-a"}), Json::array({"GPU-b"})});
  j["ntasks"] = 2;
  r["running"].push_back(j);
  std::vector<std::string> lines = render(r);
  EXPECT_TRUE(has_line(lines, "job 7  -n 2  cores 0-3  gpus GPU-a,GPU-b")) << joined(lines);
}

TEST(TopRender, QueueShowsEachRequestsWait) {
  Json r = reply_with({0});
  r["queued"].push_back(
      {{"job", 8}, {"ntasks", 4}, {"position", 0}, {"age_s", 75.0}, {"start_by_s", 42.0}, {"command", "big"}});
  r["queued"].push_back({{"job", 9},
                         {"ntasks", 1},
                         {"position", 1},
                         {"submit", kNow - 5},
                         {"command", "b"},
                         {"gpus_requested", 1}});
  r["queued"].push_back({{"job", 10},
                         {"ntasks", 1},
                         {"position", 2},
                         {"wait_s", 12.0},
                         {"age_s", 99.0},
                         {"command", "c"}});
  std::vector<std::string> lines = render(r);
  EXPECT_TRUE(has_line(lines, "queued 3")) << joined(lines);
  // The head's deadline (backfill keeps to it), where the daemon timed one.
  EXPECT_TRUE(has_line(lines, "#0  job 8   -n 4          waiting 1:15  start by 42s  big")) << joined(lines);
  EXPECT_TRUE(has_line(lines, "#1  job 9   -n 1  gpus 1  waiting 5.0s                b")) << joined(lines);
  EXPECT_TRUE(has_line(lines, "#2  job 10  -n 1          waiting 12s                 c")) << joined(lines);
}

// A spawn's cores (docs/protocol.md, "Spawned ranks") say whose they are.
TEST(TopRender, ASpawnsCoresNameTheirJob) {
  Json r = reply_with({7, 8});
  r["running"].push_back(running_job(7, {0}, 1.0, "parent"));
  Json spawn = running_job(8, {1}, 0.5, "worker");
  spawn["parent"] = 7;
  r["running"].push_back(spawn);
  r["running"][0]["parent"] = 0;
  r["queued"].push_back({{"job", 9}, {"ntasks", 1}, {"position", 0}, {"wait_s", 1.0}, {"command", "w2"},
                         {"parent", 7}});
  std::vector<std::string> lines = render(r);
  EXPECT_TRUE(has_line(lines, "job 8  -n 1  cores 1  0.5s  [spawn of job 7] worker")) << joined(lines);
  EXPECT_TRUE(has_line(lines, "job 7  -n 1  cores 0  1.0s  parent")) << joined(lines);
  EXPECT_TRUE(has_line(lines, "[spawn of job 7] w2")) << joined(lines);
}

TEST(TopRender, RecentAndTotalsWhenTheDaemonSendsThem) {
  Json r = reply_with({0});
  r["recent"] = Json::array();
  r["recent"].push_back({{"job", 3},
                         {"outcome", "failed"},
                         {"exit_code", 3},
                         {"signal", 0},
                         {"run_s", 2.5},
                         {"end", kNow - 30},
                         {"label", "runex1_2"},
                         {"command", "./ex1"}});
  r["recent"].push_back({{"job", 4},
                         {"outcome", "signaled"},
                         {"exit_code", 137},
                         {"signal", 9},
                         {"run_s", 61.0},
                         {"end", kNow - 10},
                         {"label", ""},
                         {"command", "./crash"}});
  r["recent"].push_back({{"job", 5},
                         {"outcome", "lost"},
                         {"exit_code", nullptr},
                         {"run_s", nullptr},
                         {"end", kNow - 50},
                         {"command", "./gone"}});
  r["totals"] = {{"since", kNow - 3600},
                 {"jobs", 120},
                 {"failed", 3},
                 {"timed_out", 1},
                 {"core_seconds", 7384.0}};
  std::vector<std::string> lines = render(r);
  std::string all = joined(lines);
  EXPECT_TRUE(has_line(lines, "since start: 120 jobs, 3 failed, 1 timed out, 2:03:04 core time"))
      << all;
  EXPECT_TRUE(has_line(lines, "finished (last 3)")) << all;
  // Newest first.
  EXPECT_LT(all.find("job 4"), all.find("job 3")) << all;
  EXPECT_LT(all.find("job 3"), all.find("job 5")) << all;
  EXPECT_TRUE(has_line(lines, "job 4  signal 9  1:01  10s ago  ./crash")) << all;
  EXPECT_TRUE(has_line(lines, "job 3  failed 3  2.5s  30s ago  runex1_2  ./ex1")) << all;
  EXPECT_TRUE(has_line(lines, "job 5  lost         -  50s ago  ./gone")) << all;
}

TEST(TopRender, ForwardedLaunchesShowTheirStep) {
  Json r = reply_with({0, 0});
  EXPECT_EQ(joined(render(r)).find("forwarded"), std::string::npos);  // none: no section
  r["forwarded"].push_back(forwarded_launch(7, 4, "312.4", "n[1-2]", "./ex19 -da"));
  r["forwarded"].push_back(forwarded_launch(8, 1, "", "", "./ex5"));
  const std::string all = joined(render(r));
  EXPECT_NE(all.find("forwarded 2\n"), std::string::npos) << all;
  EXPECT_NE(all.find("job 7  -n 4  slurm step 312.4 on n[1-2]  3.2s  ./ex19 -da"), std::string::npos)
      << all;
  EXPECT_NE(all.find("job 8  -n 1  slurm step (starting)"), std::string::npos) << all;
  // The cores here stay free: a forwarded launch holds none.
  EXPECT_NE(all.find("cores 0/2"), std::string::npos) << all;
}

TEST(TopRender, HistoryProblemIsShown) {
  Json r = reply_with({0});
  r["history"] = {{"db", "/x/history.db"}, {"error", "database is locked"}, {"pending", 3}};
  EXPECT_TRUE(has_line(render(r), "history: database is locked"));
}

TEST(TopRender, SixtyFourBusyCoresFitEightyByTwentyFour) {
  std::vector<unsigned> holders;
  for (unsigned i = 0; i < 64; ++i) holders.push_back(100 + i / 2);  // 32 jobs of 2 cores
  Json r = reply_with(holders, 8);
  for (unsigned j = 0; j < 32; ++j) {
    r["running"].push_back(
        running_job(100 + j, {static_cast<int>(2 * j), static_cast<int>(2 * j + 1)}, j,
                    "a rather long command line that will not fit --with --many args"));
  }
  for (unsigned q = 0; q < 10; ++q) {
    r["queued"].push_back(
        {{"job", 200 + q}, {"ntasks", 8}, {"position", q}, {"age_s", 1.0}, {"command", "q"}});
  }
  r["recent"] = Json::array();
  for (unsigned f = 0; f < 20; ++f) {
    r["recent"].push_back(
        {{"job", f}, {"outcome", "ok"}, {"exit_code", 0}, {"run_s", 1.0}, {"end", kNow - f}});
  }
  r["totals"] = {{"jobs", 20}, {"failed", 0}, {"timed_out", 0}, {"core_seconds", 20.0}};
  TermSize size{80, 24};
  std::vector<std::string> lines = render(r, size);
  expect_fits(lines, size);
  EXPECT_EQ(lines.size(), 24u) << joined(lines);
  // A grid of cells: core 0 and 1 hold job 100 (A), core 63 job 131 (f).
  EXPECT_TRUE(has_line(lines, " 0A  1A  2B")) << joined(lines);
  EXPECT_TRUE(has_line(lines, "63f")) << joined(lines);
  EXPECT_TRUE(has_line(lines, "gpus 0. 1.")) << joined(lines);
  // Every section has its title, and what is cut says so.
  for (const char* title : {"running 32", "queued 10", "finished (last 20)", "more"}) {
    EXPECT_TRUE(has_line(lines, title)) << title << "\n" << joined(lines);
  }
}

TEST(TopRender, CoresWithSeveralSlotsShowEachSlot) {
  std::vector<unsigned> holders(16, 0);
  Json r = reply_with(holders);
  r["resources"]["cores"][0]["holders"] = {5, 6};
  r["resources"]["cores"][1]["holders"] = {5, nullptr};
  r["running"].push_back(running_job(5, {0, 1}, 1, "a"));
  r["running"].push_back(running_job(6, {0}, 1, "b"));
  std::vector<std::string> lines = render(r);
  EXPECT_TRUE(has_line(lines, " 0AB  1A.   2.")) << joined(lines);
}

TEST(TopRender, BatchFramesHaveNoRowLimit) {
  std::vector<unsigned> holders(64, 0);
  Json r = reply_with(holders);
  for (unsigned q = 0; q < 50; ++q) {
    r["queued"].push_back(
        {{"job", 200 + q}, {"ntasks", 1}, {"position", q}, {"age_s", 1.0}, {"command", "q"}});
  }
  std::vector<std::string> lines = render(r, {80, 0});
  EXPECT_TRUE(has_line(lines, "job 249")) << joined(lines);
  EXPECT_FALSE(has_line(lines, "more")) << joined(lines);
}

TEST(TopRender, EveryLineFitsEverySize) {
  Json r = reply_with({7, 7, 0, 8, 0, 0, 0, 0, 0, 0}, 3);
  r["running"].push_back(running_job(7, {0, 1}, 100000, "x"));
  r["running"].push_back(running_job(8, {3}, 1, "日本語のコマンド with wide characters"));
  r["queued"].push_back(
      {{"job", 9}, {"ntasks", 64}, {"position", 0}, {"age_s", 1.0}, {"command", "y"}});
  r["recent"] = Json::array({{{"job", 1}, {"outcome", "ok"}}});
  r["totals"] = {{"jobs", 1}};
  for (int cols = 1; cols <= 100; cols += 3) {
    for (int rows : {0, 1, 2, 3, 5, 8, 24}) {
      TermSize size{cols, rows};
      expect_fits(render(r, size), size);
      expect_fits(render_top({nullptr, ""}, size, kNow), size);
    }
  }
}

TEST(TopRender, MalformedRepliesAreReadAsFarAsTheyGo) {
  for (
      const char* text : {
          R"({"type":"status_reply"})",
          R"({"type":"status_reply","daemon":5,"resources":{"cores":"x","gpus":[1,{"holder":"y"}]}})",
          R"({"type":"status_reply","running":[{"job":"a","cores":[[-1,"x",null],2.5],"gpus":{},"age_s":"z"}]})",
          R"({"type":"status_reply","queued":3,"recent":{},"totals":[],"history":"h"})",
          R"({"type":"status_reply","recent":[1,null,{"job":-4,"end":"then"}],"totals":{"jobs":-1}})",
          R"({"type":"status_reply","resources":{"cores":[{"id":-3,"holders":[1e300,-5,{}]}]}})",
      }) {
    Json r = Json::parse(text);
    std::vector<std::string> lines;
    ASSERT_NO_THROW(lines = render(r)) << text;
    ASSERT_FALSE(lines.empty()) << text;
    EXPECT_EQ(lines[0].rfind("jiffy top", 0), 0u) << text;
    expect_fits(lines, {80, 24});
  }
}

// Every value of a full reply, in turn and in random pairs, replaced by a
// value of another type: the screen is still drawn, and still fits.
TEST(TopRender, AnyFieldOfAnyTypeIsSurvived) {
  Json full = reply_with({7, 0, 8, 8}, 2);
  full["resources"]["gpus"][0]["holder"] = 7;
  Json j = running_job(7, {0}, 3, "a");
  j["label"] = "l";
  j["start"] = kNow - 3;
  j["rank_cores"] = Json::array({Json::array({0})});
  full["running"].push_back(j);
  full["running"].push_back(running_job(8, {2, 3}, 1, "b"));
  full["queued"].push_back(
      {{"job", 9}, {"ntasks", 1}, {"position", 0}, {"wait_s", 1.0}, {"submit", kNow}});
  full["recent"] = Json::array({{{"job", 1},
                                 {"outcome", "failed"},
                                 {"exit_code", 2},
                                 {"run_s", 1.0},
                                 {"end", kNow - 1},
                                 {"signal", 0},
                                 {"label", "x"}}});
  full["totals"] = {
      {"since", kNow}, {"jobs", 1}, {"failed", 1}, {"timed_out", 0}, {"core_seconds", 1.0}};
  full["history"] = {{"db", "d"}, {"error", ""}, {"pending", 0}};
  full["forwarded"] = Json::array({forwarded_launch(10, 4, "312.4", "n[1-2]", "c")});
  const Json replacements[] = {nullptr,
                               -1,
                               0,
                               1e300,
                               -1e300,
                               4294967296ull,
                               18446744073709551615ull,
                               "",
                               "x\x1b",
                               true,
                               Json::array(),
                               Json::array({nullptr, -5}),
                               Json::object()};
  std::vector<Json::json_pointer> paths;
  Json flat = full.flatten();
  for (auto it = flat.begin(); it != flat.end(); ++it) paths.emplace_back(it.key());
  // Also whole objects and arrays: every prefix of every leaf's path.
  std::vector<Json::json_pointer> all = paths;
  for (const auto& p : paths) {
    for (Json::json_pointer q = p; !q.empty(); q = q.parent_pointer()) all.push_back(q);
  }
  std::uint32_t seed = 12345;
  auto rnd = [&](std::size_t n) {
    seed = seed * 1103515245u + 12345u;
    return static_cast<std::size_t>((seed >> 8) % n);
  };
  for (int round = 0; round < 3000; ++round) {
    Json r = full;
    int edits = round < static_cast<int>(all.size()) ? 1 : 2;
    for (int e = 0; e < edits; ++e) {
      const Json::json_pointer& at = round < static_cast<int>(all.size()) && e == 0
                                         ? all[static_cast<std::size_t>(round)]
                                         : all[rnd(all.size())];
      if (r.contains(at)) r[at] = replacements[rnd(std::size(replacements))];
    }
    TermSize size{static_cast<int>(1 + rnd(100)), static_cast<int>(rnd(30))};
    std::vector<std::string> lines;
    ASSERT_NO_THROW(lines = render(r, size)) << r.dump();
    ASSERT_FALSE(lines.empty());
    if (size.rows > 0) {
      ASSERT_LE(lines.size(), static_cast<std::size_t>(size.rows)) << r.dump();
    }
    for (const std::string& l : lines) ASSERT_LE(display_width(l), size.cols) << r.dump();
  }
}

TEST(TopRender, ControlCharactersCannotReachTheTerminal) {
  Json r = reply_with({7});
  r["running"].push_back(running_job(7, {0}, 1,
                                     "evil\x1b]0;owned\x07\r\nnext\xc2\x9b"
                                     "2J"));
  std::string all = joined(render(r));
  EXPECT_EQ(all.find('\x1b'), std::string::npos);
  EXPECT_EQ(all.find('\x07'), std::string::npos);
  EXPECT_EQ(all.find('\r'), std::string::npos);
  EXPECT_EQ(all.find("\xc2\x9b"), std::string::npos);
  EXPECT_NE(all.find("evil?]0;owned???next?2J"), std::string::npos) << all;
}

TEST(TopRender, FitToWidthCutsAtCharacterBoundaries) {
  EXPECT_EQ(fit_to_width("hello", 3), "hel");
  EXPECT_EQ(fit_to_width("hello", 0), "");
  EXPECT_EQ(fit_to_width("héllo", 2), "hé");
  EXPECT_EQ(display_width("héllo"), 5);
  EXPECT_EQ(display_width("日本"), 4);
  EXPECT_EQ(fit_to_width("日本", 3), "日");
  EXPECT_EQ(fit_to_width("a\tb", 10), "a?b");
  EXPECT_EQ(fit_to_width("\xff\xfe", 10), "??");
  EXPECT_EQ(fit_to_width("\xe6\x97", 10), "??");       // truncated sequence
  EXPECT_EQ(fit_to_width("\xc0\xaf", 10), "??");       // overlong '/'
  EXPECT_EQ(fit_to_width("\xed\xa0\x80", 10), "???");  // a surrogate
}

TEST(TopRender, DurationsReadLikeTop) {
  EXPECT_EQ(format_duration(0), "0.0s");
  EXPECT_EQ(format_duration(4.26), "4.2s");
  EXPECT_EQ(format_duration(42.9), "42s");
  EXPECT_EQ(format_duration(725), "12:05");
  EXPECT_EQ(format_duration(3 * 3600 + 125), "3:02:05");
  EXPECT_EQ(format_duration(2 * 86400 + 3 * 3600 + 5), "2d03h");
  EXPECT_EQ(format_duration(-5), "0.0s");
}

}  // namespace
}  // namespace jiffy
