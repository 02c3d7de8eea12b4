#include "views/report_render.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>

#include "proto/message.h"
#include "views/history_table.h"

namespace jiffy::views {

namespace {

// Timeline geometry (px).
constexpr double kWidth = 1200, kLeft = 90, kRight = 20, kTop = 28, kQueueGap = 36,
                 kQueueHeight = 80, kBottom = 24, kTimelineTarget = 640;

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  std::string s = buf;
  if (s.ends_with(".0")) s.resize(s.size() - 2);
  return s == "-0" ? "0" : s;
}

std::string percent(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", v * 100);
  return buf;
}

std::string seconds_text(const std::optional<double>& s) { return s ? format_duration(*s) : "-"; }

std::string local_time(std::int64_t ns, const char* format) {
  std::time_t t = static_cast<std::time_t>(ns / 1'000'000'000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, format, &tm);
  return buf;
}

double span_s(const ReportModel& m) {
  return std::max(static_cast<double>(m.until_ns - m.since_ns) / 1e9, 1e-3);
}

struct Layout {
  double lane_h, timeline_h, queue_top, height, plot_w;
};

Layout layout(const ReportModel& m) {
  Layout l;
  std::size_t lanes = std::max<std::size_t>(m.lanes.size(), 1);
  l.lane_h = std::clamp(kTimelineTarget / static_cast<double>(lanes), 1.0, 18.0);
  l.timeline_h = l.lane_h * static_cast<double>(lanes);
  l.queue_top = kTop + l.timeline_h + kQueueGap;
  l.height = l.queue_top + kQueueHeight + kBottom;
  l.plot_w = kWidth - kLeft - kRight;
  return l;
}

double x_of(const ReportModel& m, const Layout& l, std::int64_t t) {
  return kLeft + static_cast<double>(t - m.since_ns) / 1e9 / span_s(m) * l.plot_w;
}

// A tick step giving at most 10 ticks over the window.
double tick_step(double span) {
  static const double kSteps[] = {0.001, 0.002, 0.005, 0.01,   0.02,  0.05, 0.1,  0.2,
                                  0.5,   1,     2,     5,      10,    15,   30,   60,
                                  120,   300,   600,   900,    1800,  3600, 7200, 10800,
                                  21600, 43200, 86400, 172800, 604800};
  for (double s : kSteps) {
    if (span / s <= 10) return s;
  }
  return std::ceil(span / 10 / 604800) * 604800;
}

std::string job_title(const history::Row& r) {
  bool ran = r.start_ns != 0;
  std::string t = "job " + std::to_string(r.job) + ": " + r.command;
  if (!r.label.empty()) t += "\nlabel: " + r.label;
  t += "\nexit: " + outcome_text(r);
  if (ran) {
    t += "\nwait " + format_duration(static_cast<double>(r.start_ns - r.submit_ns) / 1e9) +
         ", run " + format_duration(static_cast<double>(r.end_ns - r.start_ns) / 1e9);
  }
  t +=
      "\n" + std::to_string(r.ntasks) + (r.ntasks == 1 ? " rank" : " ranks") + ", cores " + r.cores;
  if (!r.gpus.empty()) t += ", gpus " + r.gpus;
  return t;
}

const char* kStyle = R"(
.job.ok{fill:#43a047}.job.failed{fill:#e53935}.job.signaled{fill:#8e24aa}.job.timeout{fill:#fb8c00}
.job.lost{fill:#757575}.job.refused,.job.cancelled{fill:#bdbdbd}
.job:hover{stroke:#000;stroke-width:1}
.lane-label,.tick{font:11px sans-serif;fill:#444}.grid{stroke:#e0e0e0;stroke-width:1}
.lane-bg{fill:#fafafa}.queue{fill:#90caf9;stroke:none}.queue-peak{fill:none;stroke:#1e88e5;stroke-width:1}
)";

// The queue plot, one pixel column at a time: the time-weighted mean of
// the queue length over the column (filled: its area is queue-seconds) and
// its peak (a line), so that a long window shows both how much and how
// high requests waited.
struct QueuePaths {
  std::string mean, peak;
};

QueuePaths queue_paths(const ReportModel& m, const Layout& l) {
  int columns = static_cast<int>(l.plot_w);
  std::vector<double> sum(static_cast<std::size_t>(columns), 0);
  std::vector<int> peak(static_cast<std::size_t>(columns), 0);
  double ns_per_col = span_s(m) * 1e9 / columns;
  for (std::size_t k = 0; k < m.queue.size(); ++k) {
    double from = static_cast<double>(m.queue[k].first - m.since_ns) / ns_per_col;
    double to = static_cast<double>((k + 1 < m.queue.size() ? m.queue[k + 1].first : m.until_ns) -
                                    m.since_ns) /
                ns_per_col;
    int value = m.queue[k].second;
    if (value == 0) continue;
    from = std::clamp(from, 0.0, static_cast<double>(columns));
    to = std::clamp(to, from, static_cast<double>(columns));
    for (int c = std::min(static_cast<int>(from), columns - 1); c < columns && c < to; ++c) {
      double overlap = std::min(to, c + 1.0) - std::max(from, static_cast<double>(c));
      sum[static_cast<std::size_t>(c)] += value * std::max(overlap, 0.0);
      peak[static_cast<std::size_t>(c)] = std::max(peak[static_cast<std::size_t>(c)], value);
    }
  }
  double base = l.queue_top + kQueueHeight, scale = kQueueHeight / std::max(m.queue_max, 1);
  auto path = [&](auto value_at, bool closed) {
    std::string d = "M" + num(kLeft) + " " + num(base);
    std::string last;
    for (int c = 0; c < columns; ++c) {
      std::string y = num(base - value_at(c) * scale);
      if (y == last) continue;
      if (!last.empty()) d += "H" + num(kLeft + c);
      d += "V" + y;
      last = y;
    }
    d += "H" + num(kLeft + columns);
    if (closed) d += "V" + num(base) + "Z";
    return d;
  };
  return {
      path([&](int c) { return sum[static_cast<std::size_t>(c)]; }, true),
      path([&](int c) { return static_cast<double>(peak[static_cast<std::size_t>(c)]); }, false)};
}

}  // namespace

std::string xml_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  std::size_t n = text.size();
  for (std::size_t i = 0; i < n;) {
    unsigned char c = s[i];
    if (c < 0x80) {
      switch (c) {
        case '&':
          out += "&amp;";
          break;
        case '<':
          out += "&lt;";
          break;
        case '>':
          out += "&gt;";
          break;
        case '"':
          out += "&quot;";
          break;
        case '\'':
          out += "&#39;";
          break;
        case '\n':
          out += "&#10;";
          break;
        case '\t':
          out += ' ';
          break;
        default:
          if (c >= 0x20 && c != 0x7f) out += static_cast<char>(c);
      }
      ++i;
      continue;
    }
    // A whole, shortest-form UTF-8 sequence, or U+FFFD for the lead byte.
    std::size_t len = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 0;
    bool ok = len > 0 && i + len <= n;
    for (std::size_t k = 1; ok && k < len; ++k) ok = (s[i + k] & 0xC0) == 0x80;
    if (ok && len == 3) {
      unsigned cp = ((c & 0x0Fu) << 12) | ((s[i + 1] & 0x3Fu) << 6) | (s[i + 2] & 0x3Fu);
      ok = cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF) && cp != 0xFFFE && cp != 0xFFFF;
    }
    if (ok && len == 4) {
      unsigned cp = ((c & 0x07u) << 18) | ((s[i + 1] & 0x3Fu) << 12) | ((s[i + 2] & 0x3Fu) << 6) |
                    (s[i + 3] & 0x3Fu);
      ok = cp >= 0x10000 && cp <= 0x10FFFF;
    }
    if (ok) {
      out.append(text, i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

std::string render_svg(const ReportModel& m, bool standalone) {
  Layout l = layout(m);
  std::string o;
  o.reserve(256 + m.bars.size() * 160 + m.jobs.size() * 200);
  if (standalone) o += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  o += "<svg";
  if (standalone) o += " xmlns=\"http://www.w3.org/2000/svg\"";
  o += " class=\"timeline\" width=\"" + num(kWidth) + "\" height=\"" + num(l.height) +
       "\" viewBox=\"0 0 " + num(kWidth) + " " + num(l.height) + "\">\n";
  if (standalone) o += std::string("<style>") + kStyle + "</style>\n";
  // Lanes: a background band, a label where there is room.
  std::size_t label_every = static_cast<std::size_t>(std::ceil(12.0 / l.lane_h));
  o += "<g class=\"lanes\">\n";
  for (std::size_t i = 0; i < m.lanes.size(); ++i) {
    double y = kTop + static_cast<double>(i) * l.lane_h;
    if (i % 2 == 0) {
      o += "<rect class=\"lane-bg\" x=\"" + num(kLeft) + "\" y=\"" + num(y) + "\" width=\"" +
           num(l.plot_w) + "\" height=\"" + num(l.lane_h) + "\"/>\n";
    }
    if (i % label_every == 0) {
      o += "<text class=\"lane-label\" x=\"" + num(kLeft - 6) + "\" y=\"" +
           num(y + l.lane_h / 2 + 4) + "\" text-anchor=\"end\">" + xml_escape(m.lanes[i]) +
           "</text>\n";
    }
  }
  o += "</g>\n";
  // Time axis: grid lines through both panels, labels on top.
  double span = span_s(m), step = tick_step(span);
  const char* format = span < 86400 ? "%H:%M:%S" : "%m-%d %H:%M";
  double first = std::ceil(static_cast<double>(m.since_ns) / 1e9 / step) * step;
  o += "<g class=\"axis\">\n";
  for (double t = first; t <= static_cast<double>(m.until_ns) / 1e9 + 1e-9; t += step) {
    auto ns = static_cast<std::int64_t>(std::llround(t * 1e9));
    double x = x_of(m, l, ns);
    o += "<line class=\"grid\" x1=\"" + num(x) + "\" x2=\"" + num(x) + "\" y1=\"" + num(kTop - 4) +
         "\" y2=\"" + num(l.queue_top + kQueueHeight) + "\"/>";
    std::string label =
        step < 1 ? local_time(ns, "%H:%M:%S") + "." + std::to_string((ns / 1'000'000) % 1000)
                 : local_time(ns, format);
    o += "<text class=\"tick\" x=\"" + num(x) + "\" y=\"" + num(kTop - 8) +
         "\" text-anchor=\"middle\">" + xml_escape(label) + "</text>\n";
  }
  o += "</g>\n<g class=\"jobs\">\n";
  // Bars, a group per job: the <title> is the job's, for each of its bars.
  for (std::size_t b = 0; b < m.bars.size();) {
    const history::Row& r = m.jobs[m.bars[b].job];
    std::string outcome = history::outcome_name(r), tag = xml_escape(r.tag);
    o += "<g class=\"jobgroup\" data-tag=\"" + tag + "\"><title>" + xml_escape(job_title(r)) +
         "</title>";
    std::size_t job = m.bars[b].job;
    for (; b < m.bars.size() && m.bars[b].job == job; ++b) {
      const Bar& bar = m.bars[b];
      double x0 = x_of(m, l, bar.from_ns), x1 = std::max(x_of(m, l, bar.to_ns), x0 + 0.5);
      double y = kTop + bar.lane * l.lane_h + (l.lane_h >= 4 ? 1 : 0);
      double h = std::max(l.lane_h - (l.lane_h >= 4 ? 2 : 0), 0.5);
      o += "<rect class=\"job " + outcome + "\" data-tag=\"" + tag + "\" data-job=\"" +
           std::to_string(r.job) + "\" data-lane=\"" +
           xml_escape(m.lanes[static_cast<std::size_t>(bar.lane)]) + "\" x=\"" + num(x0) +
           "\" y=\"" + num(y) + "\" width=\"" + num(x1 - x0) + "\" height=\"" + num(h) + "\"/>";
    }
    o += "</g>\n";
  }
  o += "</g>\n";
  // Queue length.
  o += "<g class=\"queue-plot\"><text class=\"lane-label\" x=\"" + num(kLeft - 6) + "\" y=\"" +
       num(l.queue_top + kQueueHeight / 2) + "\" text-anchor=\"end\">queue</text>";
  o += "<text class=\"tick\" x=\"" + num(kLeft - 6) + "\" y=\"" + num(l.queue_top + 10) +
       "\" text-anchor=\"end\">" + std::to_string(m.queue_max) + "</text>";
  QueuePaths q = queue_paths(m, l);
  o += "<path class=\"queue\" d=\"" + q.mean +
       "\"><title>queue length: mean per pixel</title></path>";
  o += "<path class=\"queue-peak\" d=\"" + q.peak +
       "\"><title>queue length: peak per pixel</title></path></g>\n";
  o += "</svg>\n";
  return o;
}

std::string render_html(const ReportModel& m) {
  const Summary& s = m.summary;
  std::string window = local_time(m.since_ns, "%Y-%m-%d %H:%M:%S") + " to " +
                       local_time(m.until_ns, "%Y-%m-%d %H:%M:%S") + " (" +
                       format_duration(span_s(m)) + ")";
  std::string o =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>jiffy report: " +
      xml_escape(window) + "</title>\n<style>\n";
  o += "body{font:14px "
       "sans-serif;margin:16px;color:#222}h1{font-size:20px}h2{font-size:16px;margin-top:24px}"
       "table{border-collapse:collapse}td,th{padding:2px 10px;text-align:left;border-bottom:1px "
       "solid #eee}"
       "td.num{text-align:right}.figures td:first-child{color:#666}code{font-size:12px}"
       "#tip{position:absolute;display:none;background:#fff;border:1px solid #888;padding:4px 8px;"
       "font:12px monospace;white-space:pre;pointer-events:none;box-shadow:2px 2px 4px #0003}"
       ".legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 "
       "12px;vertical-align:middle}";
  o += kStyle;
  o += "</style></head><body>\n<h1>jiffy report</h1>\n<p class=\"window\">" + xml_escape(window) +
       "</p>\n";
  // Summary figures.
  std::string outcomes;
  for (auto& [name, n] : s.outcomes)
    outcomes += (outcomes.empty() ? "" : ", ") + std::to_string(n) + " " + name;
  auto row = [](const std::string& k, const std::string& v) {
    return "<tr><td>" + k + "</td><td>" + v + "</td></tr>\n";
  };
  o += "<section id=\"summary\"><h2>Summary</h2><table class=\"figures\">\n";
  o += row("jobs", "<span id=\"jobs\">" + std::to_string(s.jobs) + "</span>" +
                       (outcomes.empty() ? "" : " (" + xml_escape(outcomes) + ")"));
  o += row("failures", "<span id=\"failures\">" + std::to_string(s.failures) + "</span>");
  o += row("timeouts", "<span id=\"timeouts\">" + std::to_string(s.timeouts) + "</span>");
  o += row("core utilisation", "<span id=\"utilisation\">" + percent(s.utilisation) +
                                   "</span> of " + std::to_string(m.cores) + " cores (" +
                                   num(s.busy_core_s) + " busy core-seconds)");
  o += row("queue wait",
           "median " + seconds_text(s.wait_median_s) + ", p95 " + seconds_text(s.wait_p95_s));
  o += "</table></section>\n";
  // Timeline.
  o += "<section id=\"timeline\"><h2>Timeline</h2><p class=\"legend\">one row per core";
  if (static_cast<int>(m.lanes.size()) > m.core_lanes) o += " and GPU";
  o += ", one bar per job on each of its rows:";
  for (auto [name, colour] : {std::pair{"ok", "#43a047"},
                              {"failed", "#e53935"},
                              {"signaled", "#8e24aa"},
                              {"timeout", "#fb8c00"},
                              {"lost", "#757575"}}) {
    o += std::string("<span style=\"background:") + colour + "\"></span>" + name;
  }
  o += "</p>\n";
  if (m.drawn < static_cast<std::size_t>(m.summary.ran)) {
    o += "<p class=\"note\">The timeline shows the " + std::to_string(m.drawn) +
         " longest of the " + std::to_string(m.summary.ran) +
         " jobs that ran; choose a shorter window to see them all.</p>\n";
  }
  o += render_svg(m, false) + "</section>\n";
  // Tables of jobs.
  auto job_table = [&](const char* id, const std::string& heading,
                       const std::vector<std::size_t>& which, std::size_t cap) {
    std::string t = std::string("<section id=\"") + id + "\"><h2>" + heading + " (" +
                    std::to_string(which.size()) + ")</h2>";
    if (which.empty()) return t + "<p>none</p></section>\n";
    t += "<table><tr><th>end</th><th>job</th><th>ranks</th><th>wait</th><th>run</th><th>exit</"
         "th><th>label</th>"
         "<th>command</th><th>reason</th></tr>\n";
    for (std::size_t k = 0; k < which.size() && k < cap; ++k) {
      const history::Row& r = m.jobs[which[k]];
      bool ran = r.start_ns != 0;
      t += "<tr data-tag=\"" + xml_escape(r.tag) + "\"><td>" + xml_escape(format_clock(r.end_ns)) +
           "</td><td class=\"num\">" + std::to_string(r.job) + "</td><td class=\"num\">" +
           std::to_string(r.ntasks) + "</td><td class=\"num\">" +
           (ran ? format_duration(static_cast<double>(r.start_ns - r.submit_ns) / 1e9) : "-") +
           "</td><td class=\"num\">" +
           (ran ? format_duration(static_cast<double>(r.end_ns - r.start_ns) / 1e9) : "-") +
           "</td><td>" + xml_escape(outcome_text(r)) + "</td><td>" + xml_escape(r.label) +
           "</td><td><code>" + xml_escape(r.command) + "</code></td><td>" + xml_escape(r.reason) +
           "</td></tr>\n";
    }
    t += "</table>";
    if (which.size() > cap) t += "<p>and " + std::to_string(which.size() - cap) + " more</p>";
    return t + "</section>\n";
  };
  o += job_table("longest", "Longest jobs", s.longest, 20);
  o += job_table("wide", "Jobs wider than the machine", s.wide, 200);
  o += job_table("never-ran", "Jobs that never ran", s.never_ran, 200);
  // The tooltip: the hovered bar's job title, beside the pointer.
  o += "<div id=\"tip\"></div>\n<script>\n"
       "(function(){var tip=document.getElementById('tip');\n"
       "document.querySelectorAll('svg.timeline').forEach(function(svg){\n"
       " svg.addEventListener('mousemove',function(e){\n"
       "  var bar=e.target.closest?e.target.closest('.job'):null;\n"
       "  if(!bar){tip.style.display='none';return;}\n"
       "  var title=bar.parentNode.querySelector('title');\n"
       "  tip.textContent=(title?title.textContent:'')+'\\n'+bar.getAttribute('data-lane');\n"
       "  "
       "tip.style.left=(e.pageX+14)+'px';tip.style.top=(e.pageY+14)+'px';tip.style.display='block';"
       "});\n"
       " svg.addEventListener('mouseleave',function(){tip.style.display='none';});});})();\n"
       "</script>\n</body></html>\n";
  return o;
}

std::string render_trace(const ReportModel& m) {
  using proto::Json;
  Json events = Json::array();
  events.push_back({{"ph", "M"},
                    {"pid", 1},
                    {"tid", 0},
                    {"name", "process_name"},
                    {"args", {{"name", "jiffy"}}}});
  for (std::size_t i = 0; i < m.lanes.size(); ++i) {
    events.push_back({{"ph", "M"},
                      {"pid", 1},
                      {"tid", i},
                      {"name", "thread_name"},
                      {"args", {{"name", m.lanes[i]}}}});
    events.push_back({{"ph", "M"},
                      {"pid", 1},
                      {"tid", i},
                      {"name", "thread_sort_index"},
                      {"args", {{"sort_index", i}}}});
  }
  for (const Bar& bar : m.bars) {
    const history::Row& r = m.jobs[bar.job];
    Json args = {{"job", r.job},
                 {"tag", r.tag},
                 {"command", r.command},
                 {"label", r.label},
                 {"exit", outcome_text(r)},
                 {"wait_s", static_cast<double>(r.start_ns - r.submit_ns) / 1e9},
                 {"run_s", static_cast<double>(r.end_ns - r.start_ns) / 1e9},
                 {"ntasks", r.ntasks},
                 {"cores", r.cores}};
    if (!r.gpus.empty()) args["gpus"] = r.gpus;
    events.push_back({{"name", fit(r.command, 80)},
                      {"cat", history::outcome_name(r)},
                      {"ph", "X"},
                      {"ts", static_cast<double>(bar.from_ns) / 1e3},
                      {"dur", static_cast<double>(bar.to_ns - bar.from_ns) / 1e3},
                      {"pid", 1},
                      {"tid", bar.lane},
                      {"args", std::move(args)}});
  }
  for (auto& [t, len] : m.queue) {
    events.push_back({{"name", "queue"},
                      {"ph", "C"},
                      {"ts", static_cast<double>(t) / 1e3},
                      {"pid", 1},
                      {"args", {{"waiting", len}}}});
  }
  Json doc = {{"traceEvents", std::move(events)}, {"displayTimeUnit", "ms"}};
  return doc.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
}

std::string render_text(const ReportModel& m) {
  const Summary& s = m.summary;
  std::string o = "window       " + local_time(m.since_ns, "%Y-%m-%d %H:%M:%S") + " to " +
                  local_time(m.until_ns, "%Y-%m-%d %H:%M:%S") + " (" + format_duration(span_s(m)) +
                  ")\n";
  std::string outcomes;
  for (auto& [name, n] : s.outcomes)
    outcomes += (outcomes.empty() ? "" : ", ") + std::to_string(n) + " " + name;
  o += "jobs         " + std::to_string(s.jobs) + (outcomes.empty() ? "" : " (" + outcomes + ")") +
       "\n";
  o += "failures     " + std::to_string(s.failures) + ", of which " + std::to_string(s.timeouts) +
       " timed out\n";
  o += "utilisation  " + percent(s.utilisation) + " of " + std::to_string(m.cores) + " cores\n";
  o += "queue wait   median " + seconds_text(s.wait_median_s) + ", p95 " +
       seconds_text(s.wait_p95_s) + "\n";
  if (!s.wide.empty()) o += "wider than the machine: " + std::to_string(s.wide.size()) + "\n";
  if (!s.never_ran.empty()) o += "never ran    " + std::to_string(s.never_ran.size()) + "\n";
  if (!s.longest.empty()) {
    o += "longest:\n";
    for (std::size_t k = 0; k < s.longest.size() && k < 5; ++k) {
      const history::Row& r = m.jobs[s.longest[k]];
      o += "  " + format_duration(static_cast<double>(r.end_ns - r.start_ns) / 1e9) + "  job " +
           std::to_string(r.job) + "  " + fit(r.command, 70) + "\n";
    }
  }
  return o;
}

}  // namespace jiffy::views
