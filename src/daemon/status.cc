#include "daemon/status.h"

#include <cstdio>
#include <set>

#include "util/sys.h"

namespace jiffy {

namespace {

std::string fmt(const char* f, double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, x);
  return buf;
}

std::string ids(const proto::Json& list) {
  std::vector<int> v;
  for (const auto& x : list) v.push_back(x.get<int>());
  return v.empty() ? "-" : format_cpu_list(v);
}

// The head of the queue's deadline (start_by_s: backfill keeps to it,
// docs/scheduling.md), where the daemon has timed one.
std::string start_by(const proto::Json& queued) {
  if (!queued.contains("start_by_s") || !queued["start_by_s"].is_number()) return "";
  return fmt("  start by %.1f s", queued["start_by_s"].get<double>());
}

std::string cores_line(const proto::Json& cores) {
  int total = 0, busy = 0;
  for (const auto& c : cores) {
    for (const auto& h : c["holders"]) {
      ++total;
      if (!h.is_null()) ++busy;
    }
  }
  return std::to_string(cores.size()) + " cores, " + std::to_string(busy) + "/" +
         std::to_string(total) + " slots busy";
}

}  // namespace

std::string render_status(const proto::Json& r) {
  const auto& d = r["daemon"];
  std::string out;
  out += "daemon  pid " + std::to_string(d["pid"].get<int>()) + ", up " +
         fmt("%.0f s", d["uptime_s"].get<double>()) + ", socket " +
         d["socket"].get<std::string>() + "\n";
  // The set's shared PMIx server (launch/pmix_shared.h), when one runs:
  // `jiffy status` adds what it says of itself.
  if (r.contains("pmix_server") && r["pmix_server"].is_object()) {
    const auto& p = r["pmix_server"];
    out += "pmix    pid " + std::to_string(p.value("pid", 0)) + ", serving " + std::to_string(p.value("jobs", 0)) +
           " job" + (p.value("jobs", 0) == 1 ? "" : "s") + " (" + std::to_string(p.value("served", 0L)) +
           " since it started)" + (p.value("stopping", false) ? ", taking no more" : "") + "\n";
  }
  // The history's problem, if any (docs/history.md): one line.
  if (r.contains("history") && r["history"].contains("error") && r["history"]["error"].is_string() &&
      !r["history"]["error"].get<std::string>().empty()) {
    out += "history " + r["history"]["error"].get<std::string>() + "\n";
  }
  const auto& res = r["resources"];
  out += "cores   " + cores_line(res["cores"]) + "\n";
  for (const auto& c : res["cores"]) {
    std::string holders;
    for (const auto& h : c["holders"]) {
      if (!holders.empty()) holders += ",";
      holders += h.is_null() ? "free" : "job " + std::to_string(h.get<unsigned long long>());
    }
    out += "  core " + std::to_string(c["id"].get<int>()) + " (cpu " + ids(c["cpus"]) +
           ", numa " + std::to_string(c["numa"].get<int>()) + "): " + holders + "\n";
  }
  out += "gpus    " + std::to_string(res["gpus"].size()) + "\n";
  for (const auto& g : res["gpus"]) {
    out += "  gpu " + std::to_string(g["id"].get<int>()) + " (" + g["name"].get<std::string>() +
           "): " +
           (g["holder"].is_null() ? std::string("free")
                                  : "job " + std::to_string(g["holder"].get<unsigned long long>())) +
           "\n";
  }
  out += "running " + std::to_string(r["running"].size()) + "\n";
  // A spawn's cores (a row with a parent) right under the job that asked.
  auto parent_of = [](const proto::Json& j) {
    return j.contains("parent") && j["parent"].is_number_unsigned() ? j["parent"].get<unsigned long long>() : 0ULL;
  };
  std::set<unsigned long long> running_ids;
  for (const auto& j : r["running"]) running_ids.insert(j["job"].get<unsigned long long>());
  auto row = [&](const proto::Json& j, const char* indent) {
    out += std::string(indent) + "job " + std::to_string(j["job"].get<unsigned long long>()) + "  -n " +
           std::to_string(j["ntasks"].get<int>()) + "  cores " + ids(j["cores"]) + "  gpus " +
           ids(j["gpus"]) + "  " + fmt("%.1f s", j["age_s"].get<double>()) + "  pid " +
           std::to_string(j["pid"].get<int>()) + "  " + j["command"].get<std::string>() + "\n";
  };
  for (const auto& j : r["running"]) {
    if (running_ids.count(parent_of(j))) continue;  // shown under its parent
    row(j, "  ");
    for (const auto& k : r["running"]) {
      if (parent_of(k) == j["job"].get<unsigned long long>()) row(k, "    spawned: ");
    }
  }
  out += "queued  " + std::to_string(r["queued"].size()) + "\n";
  for (const auto& j : r["queued"]) {
    out += "  #" + std::to_string(j["position"].get<int>()) + " job " +
           std::to_string(j["job"].get<unsigned long long>()) + "  -n " +
           std::to_string(j["ntasks"].get<int>()) + "  slots " +
           std::to_string(j["slots"].get<int>()) + "  gpus " +
           std::to_string(j["gpus_requested"].get<int>()) + "  waiting " +
           fmt("%.1f s", j["age_s"].get<double>()) + start_by(j) + "  pid " +
           std::to_string(j["pid"].get<int>()) + "  " + j["command"].get<std::string>() +
           (parent_of(j) ? "  (spawn of job " + std::to_string(parent_of(j)) + ")" : "") + "\n";
  }
  // Launches run as Slurm steps (launch/slurm_step.h): no cores here.
  if (r.contains("forwarded") && !r["forwarded"].empty()) {
    out += "forwarded " + std::to_string(r["forwarded"].size()) + "\n";
    for (const auto& j : r["forwarded"]) {
      const std::string step = j["step"].get<std::string>();
      out += "  job " + std::to_string(j["job"].get<unsigned long long>()) + "  -n " +
             std::to_string(j["ntasks"].get<int>()) + "  " + j["backend"].get<std::string>() +
             " step " + (step.empty() ? std::string("(starting)") : step) +
             (j.contains("nodes") && !j["nodes"].get<std::string>().empty()
                  ? " on " + j["nodes"].get<std::string>()
                  : std::string()) +
             "  " +
             fmt("%.1f s", j["age_s"].get<double>()) + "  pid " + std::to_string(j["pid"].get<int>()) +
             "  " + j["command"].get<std::string>() + "\n";
    }
  }
  return out;
}

}  // namespace jiffy
