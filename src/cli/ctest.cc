#include "cli/ctest.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "util/error.h"

namespace jiffy {

namespace {

constexpr int kMaxGroups = 1 << 16;

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string::size_type from = 0;
  for (;;) {
    auto at = s.find(sep, from);
    out.push_back(s.substr(from, at - from));
    if (at == std::string::npos) return out;
    from = at + 1;
  }
}

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

int group_count(const std::string& v) {
  char* end = nullptr;
  long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || n < 0 || n > kMaxGroups || !std::isdigit(static_cast<unsigned char>(v[0]))) {
    throw Error("CTEST_RESOURCE_GROUP_COUNT: not a number of groups: '" + v.substr(0, 64) + "'");
  }
  return static_cast<int>(n);
}

// "id:1,slots:1;id:3,slots:2" -> {"1", "3"}
std::vector<std::string> ids_of(const std::string& name, const std::string& v) {
  std::vector<std::string> ids;
  for (const std::string& entry : split(v, ';')) {
    std::string id;
    bool slots = false;
    for (const std::string& field : split(entry, ',')) {
      if (field.rfind("id:", 0) == 0) {
        id = field.substr(3);
      } else if (field.rfind("slots:", 0) == 0) {
        slots = true;
      } else {
        throw Error(name + ": expected id:ID,slots:N, not '" + entry.substr(0, 64) + "'");
      }
    }
    if (id.empty() || !slots) throw Error(name + ": expected id:ID,slots:N, not '" + entry.substr(0, 64) + "'");
    ids.push_back(id);
  }
  return ids;
}

}  // namespace

CtestGpus ctest_gpus(EnvLookup env) {
  CtestGpus out;
  std::optional<std::string> count = env("CTEST_RESOURCE_GROUP_COUNT");
  if (!count) return out;
  const int n = group_count(*count);
  for (int g = 0; g < n; ++g) {
    const std::string group = "CTEST_RESOURCE_GROUP_" + std::to_string(g);
    std::optional<std::string> types = env(group.c_str());
    if (!types) throw Error(group + " is not set (CTEST_RESOURCE_GROUP_COUNT is " + *count + ")");
    std::vector<std::string> names = split(*types, ',');
    if (std::find(names.begin(), names.end(), "gpus") == names.end()) continue;
    const std::string var = group + "_" + upper("gpus");
    std::optional<std::string> list = env(var.c_str());
    if (!list) throw Error(var + " is not set (" + group + " lists gpus)");
    int added = 0;
    for (std::string& id : ids_of(var, *list)) {
      if (std::find(out.ids.begin(), out.ids.end(), id) != out.ids.end()) continue;
      out.ids.push_back(std::move(id));
      ++added;
    }
    out.per_group.push_back(added);
  }
  return out;
}

void apply_ctest_gpus(LaunchOptions& opt, const CtestGpus& ctest) {
  if (ctest.ids.empty()) return;
  const int have = static_cast<int>(ctest.ids.size());
  const int ranks = opt.total_tasks();
  auto mismatch = [&](const std::string& asked, int need) {
    return Error("CTest gave this test " + std::to_string(have) + " GPU(s) (CTEST_RESOURCE_GROUP_*_GPUS) but " +
                 asked + " asks for " + std::to_string(need) + "; make the test's RESOURCE_GROUPS and its -g/-G agree");
  };
  if (opt.gpus_per_task > 0 || opt.gpus_per_job > 0) {
    const long long need = static_cast<long long>(ranks) * opt.gpus_per_task + opt.gpus_per_job;
    if (need != have) {
      std::string asked = "-n " + std::to_string(ranks);
      if (opt.gpus_per_task > 0) asked += " -g " + std::to_string(opt.gpus_per_task);
      if (opt.gpus_per_job > 0) asked += " -G " + std::to_string(opt.gpus_per_job);
      throw mismatch(asked, static_cast<int>(std::min<long long>(need, 1 << 30)));
    }
  } else {
    const auto& pg = ctest.per_group;
    const bool per_rank = static_cast<int>(pg.size()) == ranks &&
                          std::all_of(pg.begin(), pg.end(), [&](int k) { return k == pg.front(); });
    if (per_rank) {
      opt.gpus_per_task = pg.front();
    } else {
      opt.gpus_per_job = have;
    }
  }
  opt.gpu_names = ctest.ids;
}

}  // namespace jiffy
