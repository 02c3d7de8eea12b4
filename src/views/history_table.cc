#include "views/history_table.h"

#include <algorithm>
#include <cstdio>
#include <ctime>

namespace jiffy::views {

namespace {

std::size_t utf8_length(const std::string& s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

std::string pad(const std::string& s, std::size_t width, bool right = false) {
  std::size_t n = utf8_length(s);
  if (n >= width) return s;
  std::string spaces(width - n, ' ');
  return right ? spaces + s : s + spaces;
}

// Column widths, before COMMAND takes what is left.
constexpr std::size_t kEnd = 14, kN = 4, kWait = 6, kRun = 7, kExit = 9, kLabel = 14;

}  // namespace

std::string format_duration(double s) {
  if (!(s >= 0)) return "-";
  char buf[32];
  if (s < 10) {
    std::snprintf(buf, sizeof buf, "%.2fs", s);
  } else if (s < 60) {
    std::snprintf(buf, sizeof buf, "%.0fs", s);
  } else if (s < 3600) {
    long t = static_cast<long>(s);
    std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  } else if (s < 86400) {
    long t = static_cast<long>(s) / 60;
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 60, t % 60);
  } else {
    long t = static_cast<long>(s) / 3600;
    std::snprintf(buf, sizeof buf, "%ldd%02ldh", t / 24, t % 24);
  }
  return buf;
}

std::string format_clock(std::int64_t ns) {
  std::time_t t = static_cast<std::time_t>(ns / 1'000'000'000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%m-%d %H:%M:%S", &tm);
  return buf;
}

std::string outcome_text(const history::Row& row) {
  switch (row.outcome) {
    case JIFFY_OUTCOME_EXITED:
      return row.exit_code == 0 ? "ok" : "exit " + std::to_string(row.exit_code);
    case JIFFY_OUTCOME_SIGNALED:
      return "signal " + std::to_string(row.signal);
    default:
      return history::outcome_name(row);
  }
}

std::string fit(const std::string& text, std::size_t width) {
  std::string clean;
  for (char c : text) clean += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? ' ' : c;
  if (utf8_length(clean) <= width) return clean;
  if (width == 0) return "";
  std::string out;
  std::size_t n = 0;
  for (std::size_t i = 0; i < clean.size(); ++i) {
    bool starts = (static_cast<unsigned char>(clean[i]) & 0xC0) != 0x80;
    if (starts && ++n > width - 1) break;
    out += clean[i];
  }
  return out + "\u2026";
}

std::string render_table(const std::vector<history::Row>& rows, int width) {
  // JOB: the daemon's id, or a Slurm step's ("312.4", the slurm backend);
  // as wide as the widest (at least 5), so ids never push the line out.
  // (fit() only cleans it: a step's text came from the journal file.)
  auto job_text = [](const history::Row& r) {
    return !r.step.empty() ? r.step : r.job ? std::to_string(r.job) : "-";
  };
  std::size_t kJob = 5;
  for (const history::Row& r : rows) kJob = std::max(kJob, job_text(r).size());
  std::size_t fixed = kEnd + kJob + kN + kWait + kRun + kExit + kLabel + 7;  // 7 separating spaces
  auto total = static_cast<std::size_t>(std::max(width, 60));
  std::size_t command_width = total > fixed + 10 ? total - fixed : 10;
  auto line = [&](const std::string& end, const std::string& job, const std::string& n,
                  const std::string& wait, const std::string& run, const std::string& exit,
                  const std::string& label, const std::string& command) {
    std::string l = pad(end, kEnd) + ' ' + pad(fit(job, kJob), kJob, true) + ' ' + pad(n, kN, true) + ' ' +
                    pad(wait, kWait, true) + ' ' + pad(run, kRun, true) + ' ' +
                    pad(fit(exit, kExit), kExit) + ' ' + pad(fit(label, kLabel), kLabel) + ' ' +
                    fit(command, command_width);
    while (!l.empty() && l.back() == ' ') l.pop_back();
    return l + '\n';
  };
  std::string out = line("END", "JOB", "N", "WAIT", "RUN", "EXIT", "LABEL", "COMMAND");
  for (const history::Row& r : rows) {
    bool ran = r.start_ns != 0;
    out +=
        line(format_clock(r.end_ns), job_text(r), std::to_string(r.ntasks),
             ran ? format_duration(static_cast<double>(r.start_ns - r.submit_ns) / 1e9) : "-",
             ran ? format_duration(static_cast<double>(r.end_ns - r.start_ns) / 1e9) : "-",
             outcome_text(r), r.label.empty() ? "-" : r.label, r.command);
  }
  return out;
}

}  // namespace jiffy::views
