#include "views/report_model.h"

#include <gtest/gtest.h>

#include "views/report_render.h"

namespace jiffy::views {
namespace {

constexpr std::int64_t kS = 1'000'000'000;
constexpr std::int64_t kT0 = 1'800'000'000 * kS;

history::Row job(std::uint64_t id, double submit, double start, double end,
                 const std::string& cores) {
  history::Row r;
  r.id = static_cast<std::int64_t>(id);
  r.job = id;
  r.tag = std::string(31, 'a') + static_cast<char>('0' + id % 10);
  r.submit_ns = kT0 + static_cast<std::int64_t>(submit * 1e9);
  r.start_ns = start == -1 ? 0 : kT0 + static_cast<std::int64_t>(start * 1e9);
  r.end_ns = kT0 + static_cast<std::int64_t>(end * 1e9);
  r.cores = cores;
  r.ntasks = static_cast<int>(history::parse_core_lists(cores).size());
  r.command = "./job" + std::to_string(id);
  return r;
}

TEST(ReportModel, NearestRankPercentiles) {
  EXPECT_FALSE(nearest_rank({}, 0.5));
  EXPECT_EQ(*nearest_rank({3, 1, 2}, 0.5), 2);
  EXPECT_EQ(*nearest_rank({1, 2, 3, 4}, 0.5), 2);
  std::vector<double> hundred;
  for (int i = 1; i <= 100; ++i) hundred.push_back(i);
  EXPECT_EQ(*nearest_rank(hundred, 0.95), 95);
  EXPECT_EQ(*nearest_rank({7}, 0.95), 7);
}

TEST(ReportModel, AJobOnSeveralCoresIsABarOnEach) {
  ReportModel m = build_report({job(1, 0, 0, 10, "0-1;2-3"), job(2, 0, 1, 5, "1")}, kT0,
                               kT0 + 10 * kS, history::Machine{0, 4, {}});
  ASSERT_EQ(m.lanes.size(), 4u);
  EXPECT_EQ(m.bars.size(), 5u);
  EXPECT_EQ(m.summary.jobs, 2);
  // busy: 4 cores x 10 s + 1 core x 4 s over 4 cores x 10 s
  EXPECT_DOUBLE_EQ(m.summary.busy_core_s, 44);
  EXPECT_DOUBLE_EQ(m.summary.utilisation, 1.1);
  EXPECT_EQ(*m.summary.wait_median_s, 0);
  EXPECT_EQ(*m.summary.wait_p95_s, 1);
  ASSERT_EQ(m.summary.longest.size(), 2u);
  EXPECT_EQ(m.jobs[m.summary.longest[0]].job, 1u);
}

TEST(ReportModel, BarsAreClippedToTheWindow) {
  ReportModel m = build_report({job(1, -20, -19, 5, "0")}, kT0, kT0 + 10 * kS, std::nullopt);
  ASSERT_EQ(m.bars.size(), 1u);
  EXPECT_EQ(m.bars[0].from_ns, kT0);
  EXPECT_EQ(m.bars[0].to_ns, kT0 + 5 * kS);
  EXPECT_EQ(m.cores, 1);  // no machine row: the largest core seen + 1
  EXPECT_DOUBLE_EQ(m.summary.busy_core_s, 5);
}

TEST(ReportModel, JobsThatNeverRanAreSummarisedNotDrawn) {
  history::Row refused = job(2, 1, -1, 1, "");
  refused.outcome = JIFFY_OUTCOME_REFUSED;
  refused.exit_code = 127;
  history::Row timeout = job(3, 2, 2, 8, "1");
  timeout.outcome = JIFFY_OUTCOME_TIMED_OUT;
  ReportModel m = build_report({job(1, 0, 0, 4, "0"), refused, timeout}, kT0, kT0 + 10 * kS,
                               history::Machine{0, 2, {}});
  EXPECT_EQ(m.bars.size(), 2u);
  EXPECT_EQ(m.summary.never_ran, (std::vector<std::size_t>{1}));
  EXPECT_EQ(m.summary.failures, 2);
  EXPECT_EQ(m.summary.timeouts, 1);
  EXPECT_EQ(m.summary.outcomes.at("refused"), 1);
}

TEST(ReportModel, WideJobsAreFlagged) {
  history::Row wide = job(1, 0, 0, 1, "0;1;0;1");
  wide.flags = JIFFY_HISTORY_OVERSUBSCRIBED;
  history::Row many = job(2, 0, 1, 2, "0;1;0;1");  // not flagged, but 4 ranks on 2 cores
  ReportModel m = build_report({wide, many, job(3, 0, 0, 1, "0")}, kT0, kT0 + 2 * kS,
                               history::Machine{0, 2, {}});
  EXPECT_EQ(m.summary.wide, (std::vector<std::size_t>{0, 1}));
  EXPECT_EQ(m.bars.size(), 5u);  // distinct cores per job
}

TEST(ReportModel, OnlyTheLongestAreDrawnPastTheCap) {
  ReportModel m = build_report({job(1, 0, 0, 1, "0"), job(2, 0, 0, 5, "0-1"), job(3, 0, 0, 3, "0")},
                               kT0, kT0 + 10 * kS, history::Machine{0, 2, {}}, 2);
  EXPECT_EQ(m.drawn, 2u);
  ASSERT_EQ(m.bars.size(), 3u);
  for (const Bar& b : m.bars) EXPECT_NE(m.jobs[b.job].job, 1u);
  EXPECT_EQ(m.summary.jobs, 3);
  EXPECT_DOUBLE_EQ(m.summary.busy_core_s, 14);
}

TEST(ReportModel, GpusGetLanesAfterTheCores) {
  history::Row g = job(1, 0, 0, 1, "0;1");
  g.gpus = "b;a";
  ReportModel m = build_report({g}, kT0, kT0 + kS, history::Machine{0, 2, {"a", "b"}});
  EXPECT_EQ(m.lanes, (std::vector<std::string>{"core 0", "core 1", "gpu a", "gpu b"}));
  EXPECT_EQ(m.bars.size(), 4u);
}

TEST(ReportModel, QueueLengthSteps) {
  // Two jobs wait from 1 s (one until 3 s, one until 5 s); one waited before the window.
  ReportModel m =
      build_report({job(1, 1, 3, 4, "0"), job(2, 1, 5, 6, "0"), job(3, -5, 0.5, 6, "1")}, kT0,
                   kT0 + 10 * kS, history::Machine{0, 2, {}});
  std::vector<std::pair<std::int64_t, int>> want = {
      {kT0, 1}, {kT0 + kS / 2, 0}, {kT0 + kS, 2}, {kT0 + 3 * kS, 1}, {kT0 + 5 * kS, 0}};
  EXPECT_EQ(m.queue, want);
  EXPECT_EQ(m.queue_max, 2);
}

TEST(ReportRender, XmlEscapingKeepsDocumentsWellFormed) {
  EXPECT_EQ(xml_escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
  EXPECT_EQ(xml_escape(std::string("x\x01y")), "xy");
  EXPECT_EQ(xml_escape("\xC3\xA9"), "\xC3\xA9");
  EXPECT_EQ(xml_escape("\xFF"), "\xEF\xBF\xBD");
  EXPECT_EQ(xml_escape("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // a surrogate
}

TEST(ReportRender, EveryBarIsAJobRect) {
  history::Row odd = job(1, 0, 0, 10, "0-1");
  odd.command = "./a </svg> & \xFF";
  ReportModel m =
      build_report({odd, job(2, 0, 0, 1, "2")}, kT0, kT0 + 10 * kS, history::Machine{0, 4, {}});
  for (const std::string& doc : {render_svg(m, true), render_html(m)}) {
    std::size_t bars = 0;
    for (std::size_t at = 0; (at = doc.find("<rect class=\"job ", at)) != std::string::npos; ++at)
      ++bars;
    EXPECT_EQ(bars, 3u);
    EXPECT_EQ(doc.find("</svg> &"), std::string::npos);
  }
  EXPECT_EQ(render_html(m).find("http"), std::string::npos);  // inline svg: no namespace URL either
  std::string trace = render_trace(m);
  EXPECT_NE(trace.find("\"traceEvents\""), std::string::npos);
  EXPECT_NE(trace.find("\"core 3\""), std::string::npos);
}

TEST(ReportRender, ThousandsOfJobsStayCompact) {
  std::vector<history::Row> rows;
  for (int i = 0; i < 10000; ++i)
    rows.push_back(job(static_cast<std::uint64_t>(i + 1), i, i + 0.5, i + 3, "0-3"));
  ReportModel m = build_report(std::move(rows), kT0, kT0 + 10003 * kS, history::Machine{0, 64, {}});
  std::string html = render_html(m);
  EXPECT_LT(html.size(), 16u << 20);
}

}  // namespace
}  // namespace jiffy::views
