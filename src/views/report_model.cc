#include "views/report_model.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace jiffy::views {

std::optional<double> nearest_rank(std::vector<double> values, double p) {
  if (values.empty()) return std::nullopt;
  std::sort(values.begin(), values.end());
  auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(values.size())));
  return values[std::clamp<std::size_t>(rank, 1, values.size()) - 1];
}

ReportModel build_report(std::vector<history::Row> rows, std::int64_t since_ns,
                         std::int64_t until_ns, const std::optional<history::Machine>& machine,
                         std::size_t max_drawn) {
  ReportModel m;
  m.since_ns = since_ns;
  m.until_ns = std::max(until_ns, since_ns);
  m.jobs = std::move(rows);

  // Lanes: the machine's cores (and any core a job names beyond them),
  // then its GPUs and any other GPU a job names, in order of appearance.
  std::vector<std::vector<std::vector<int>>> cores(m.jobs.size());
  std::vector<std::vector<std::string>> gpus(m.jobs.size());
  int max_core = -1;
  std::vector<std::string> gpu_names = machine ? machine->gpus : std::vector<std::string>{};
  for (std::size_t i = 0; i < m.jobs.size(); ++i) {
    cores[i] = history::parse_core_lists(m.jobs[i].cores);
    for (auto& rank : cores[i]) {
      for (int c : rank) max_core = std::max(max_core, c);
    }
    std::set<std::string> seen;
    for (auto& rank : history::parse_name_lists(m.jobs[i].gpus)) {
      for (auto& g : rank) {
        if (!seen.insert(g).second) continue;
        gpus[i].push_back(g);
        if (std::find(gpu_names.begin(), gpu_names.end(), g) == gpu_names.end())
          gpu_names.push_back(g);
      }
    }
  }
  m.cores = machine && machine->cores > 0 ? machine->cores : max_core + 1;
  m.core_lanes = std::max(m.cores, max_core + 1);
  for (int c = 0; c < m.core_lanes; ++c) m.lanes.push_back("core " + std::to_string(c));
  for (auto& g : gpu_names) m.lanes.push_back("gpu " + g);

  // Which jobs get bars: all that ran, or the longest max_drawn of them.
  std::vector<bool> draw(m.jobs.size(), true);
  {
    std::vector<std::size_t> ran;
    for (std::size_t i = 0; i < m.jobs.size(); ++i) {
      if (m.jobs[i].start_ns != 0) ran.push_back(i);
    }
    if (ran.size() > max_drawn) {
      auto longer = [&](std::size_t a, std::size_t b) {
        return m.jobs[a].end_ns - m.jobs[a].start_ns > m.jobs[b].end_ns - m.jobs[b].start_ns;
      };
      std::nth_element(ran.begin(), ran.begin() + static_cast<std::ptrdiff_t>(max_drawn), ran.end(),
                       longer);
      std::fill(draw.begin(), draw.end(), false);
      for (std::size_t k = 0; k < max_drawn; ++k) draw[ran[k]] = true;
    }
    m.drawn = std::min(ran.size(), max_drawn);
  }

  Summary& s = m.summary;
  std::vector<double> waits;
  std::vector<std::pair<std::int64_t, int>> queue_events;  // (time, +1 or -1)
  for (std::size_t i = 0; i < m.jobs.size(); ++i) {
    const history::Row& r = m.jobs[i];
    std::string outcome = history::outcome_name(r);
    ++s.jobs;
    ++s.outcomes[outcome];
    if (outcome != "ok") ++s.failures;
    if (r.outcome == JIFFY_OUTCOME_TIMED_OUT) ++s.timeouts;
    bool ran = r.start_ns != 0;
    queue_events.emplace_back(r.submit_ns, +1);
    queue_events.emplace_back(ran ? r.start_ns : r.end_ns, -1);
    std::set<int> distinct;
    for (auto& rank : cores[i]) distinct.insert(rank.begin(), rank.end());
    if ((r.flags & JIFFY_HISTORY_OVERSUBSCRIBED) != 0 || (m.cores > 0 && r.ntasks > m.cores))
      s.wide.push_back(i);
    if (!ran) {
      s.never_ran.push_back(i);
      continue;
    }
    ++s.ran;
    waits.push_back(static_cast<double>(r.start_ns - r.submit_ns) / 1e9);
    std::int64_t from = std::max(r.start_ns, m.since_ns), to = std::min(r.end_ns, m.until_ns);
    if (to < from) continue;  // ran wholly outside the window (waited inside it)
    s.busy_core_s += static_cast<double>(distinct.size()) * static_cast<double>(to - from) / 1e9;
    if (!draw[i]) continue;
    for (int c : distinct) m.bars.push_back({i, c, from, to});
    for (auto& g : gpus[i]) {
      int lane = m.core_lanes + static_cast<int>(std::find(gpu_names.begin(), gpu_names.end(), g) -
                                                 gpu_names.begin());
      m.bars.push_back({i, lane, from, to});
    }
  }
  double window_s = static_cast<double>(m.until_ns - m.since_ns) / 1e9;
  if (m.cores > 0 && window_s > 0) s.utilisation = s.busy_core_s / (m.cores * window_s);
  s.wait_median_s = nearest_rank(waits, 0.5);
  s.wait_p95_s = nearest_rank(waits, 0.95);

  std::vector<std::size_t> ran_jobs;
  for (std::size_t i = 0; i < m.jobs.size(); ++i) {
    if (m.jobs[i].start_ns != 0) ran_jobs.push_back(i);
  }
  auto run_ns = [&](std::size_t i) { return m.jobs[i].end_ns - m.jobs[i].start_ns; };
  std::size_t n = std::min<std::size_t>(20, ran_jobs.size());
  std::partial_sort(ran_jobs.begin(), ran_jobs.begin() + static_cast<std::ptrdiff_t>(n),
                    ran_jobs.end(), [&](std::size_t a, std::size_t b) {
                      return run_ns(a) != run_ns(b) ? run_ns(a) > run_ns(b) : a < b;
                    });
  s.longest.assign(ran_jobs.begin(), ran_jobs.begin() + static_cast<std::ptrdiff_t>(n));

  // Queue length: waiting at since_ns, then each change inside the window.
  std::sort(queue_events.begin(), queue_events.end());
  int q = 0;
  std::size_t k = 0;
  for (; k < queue_events.size() && queue_events[k].first <= m.since_ns; ++k)
    q += queue_events[k].second;
  m.queue.emplace_back(m.since_ns, std::max(q, 0));
  for (; k < queue_events.size() && queue_events[k].first <= m.until_ns; ++k) {
    q += queue_events[k].second;
    if (m.queue.back().first == queue_events[k].first) {
      m.queue.back().second = std::max(q, 0);
    } else {
      m.queue.emplace_back(queue_events[k].first, std::max(q, 0));
    }
  }
  for (auto& [t, len] : m.queue) m.queue_max = std::max(m.queue_max, len);
  return m;
}

}  // namespace jiffy::views
