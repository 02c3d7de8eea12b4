// The report's outputs, laid out from a ReportModel (views/report_model.h):
// the HTML page, the timeline as SVG, Chrome Trace Event JSON and a plain
// text summary. Pure but for the local time zone (axis labels, times).
//
// Scale: the timeline is a fixed 1200 px wide; lanes shrink to fit about
// 640 px; the queue plot has one column per pixel, so its size does not grow
// with the number of jobs. Each bar is one <rect> (about 150 bytes), its
// job's <title> shared by the job's bars (a <g> per job).
#pragma once

#include <string>

#include "views/report_model.h"

namespace jiffy::views {

// Text for XML (element content and attribute values): escapes markup,
// drops characters XML 1.0 forbids, replaces invalid UTF-8 with U+FFFD.
std::string xml_escape(const std::string& text);

// The timeline (lanes, bars, time axis, queue length). standalone: a whole
// SVG document (XML declaration, namespace, its own style); otherwise the
// <svg> element to inline in HTML.
std::string render_svg(const ReportModel& m, bool standalone);
// One self-contained page: no external resource of any kind.
std::string render_html(const ReportModel& m);
// {"traceEvents": [...]}: "M" metadata naming pid 1 and each lane's tid
// (tid = core number; GPUs follow the cores), an "X" event per bar (ts and
// dur in microseconds), a "C" counter for the queue length.
std::string render_trace(const ReportModel& m);
// The summary `jiffy report` prints without -o.
std::string render_text(const ReportModel& m);

}  // namespace jiffy::views
