// What `jiffy report` shows, computed from the rows of a window: the
// timeline's rows (a lane per core, then per GPU) and bars (one per job per
// lane it held), the queue length over time, and the summary figures.
// Pure: the renderers (views/report_render.h) only lay this out.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "history/query.h"
#include "history/row.h"

namespace jiffy::views {

// A job drawn on one lane, clipped to the window.
struct Bar {
  std::size_t job = 0;  // index into ReportModel::jobs
  int lane = 0;         // index into ReportModel::lanes
  std::int64_t from_ns = 0, to_ns = 0;
};

struct Summary {
  int jobs = 0;      // in the window
  int ran = 0;       // of which ran (have a start)
  int failures = 0;  // outcome other than ok
  int timeouts = 0;
  std::map<std::string, int> outcomes;  // "ok" -> n, "failed" -> n, ...
  double busy_core_s = 0;               // core-seconds held by running jobs, inside the window
  double utilisation = 0;               // busy_core_s / (cores x window)
  std::optional<double> wait_median_s, wait_p95_s;  // nearest rank, over jobs that ran
  std::vector<std::size_t> longest;                 // up to 20 longest runs, longest first
  std::vector<std::size_t> wide;                    // oversubscribed or ntasks > cores
  std::vector<std::size_t> never_ran;               // refused, cancelled, ... (no start)
};

struct ReportModel {
  std::int64_t since_ns = 0, until_ns = 0;
  std::vector<history::Row> jobs;  // end order
  int cores = 0;                   // the machine's cores (lanes 0..cores-1)
  std::vector<std::string> lanes;  // "core 0", ..., "gpu A", ...
  int core_lanes = 0;              // lanes[0..core_lanes) are cores
  std::vector<Bar> bars;           // in job order, then lane order
  // The queue length as a step function: from .first on, .second requests
  // wait. The first step is at since_ns.
  std::vector<std::pair<std::int64_t, int>> queue;
  int queue_max = 0;
  std::size_t drawn = 0;  // jobs with bars: at most kMaxDrawnJobs, the longest runs
  Summary summary;
};

// Past this many jobs that ran, the timeline draws only the longest-running
// ones (the others are under a pixel wide at that scale) and says so; the
// summary still counts every job. Keeps a report of a long busy window a
// few tens of MB.
constexpr std::size_t kMaxDrawnJobs = 50'000;

// Builds the model of the window [since, until] from the rows overlapping
// it (Filter::overlapping) and the machine serving it (nullopt: cores are
// the largest core seen + 1).
ReportModel build_report(std::vector<history::Row> rows, std::int64_t since_ns,
                         std::int64_t until_ns, const std::optional<history::Machine>& machine,
                         std::size_t max_drawn = kMaxDrawnJobs);

// The value at rank ceil(p * n) of the sorted values (nearest rank);
// nullopt when empty. REQUIRES: 0 < p <= 1.
std::optional<double> nearest_rank(std::vector<double> values, double p);

}  // namespace jiffy::views
