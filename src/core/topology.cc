#include "core/topology.h"

#include <dirent.h>
#include <hwloc.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "util/error.h"
#include "util/sys.h"

namespace jiffy {

namespace {

struct TopologyDeleter {
  void operator()(hwloc_topology* t) const { hwloc_topology_destroy(t); }
};
using Topology = std::unique_ptr<hwloc_topology, TopologyDeleter>;

Topology load_topology() {
  hwloc_topology_t t;
  if (hwloc_topology_init(&t) != 0) throw Error("hwloc: cannot initialise topology");
  Topology topo(t);
  if (hwloc_topology_load(t) != 0) throw Error("hwloc: cannot load topology");
  return topo;
}

int numa_of(hwloc_topology_t t, hwloc_const_cpuset_t cpus) {
  int n = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE);
  for (int i = 0; i < n; ++i) {
    hwloc_obj_t node = hwloc_get_obj_by_type(t, HWLOC_OBJ_NUMANODE, i);
    if (node->cpuset && hwloc_bitmap_intersects(node->cpuset, cpus)) return i;
  }
  return 0;
}

std::vector<Core> hwloc_cores(const std::vector<int>& allowed) {
  Topology topo = load_topology();
  hwloc_topology_t t = topo.get();
  std::vector<Core> cores;
  int ncores = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE);
  for (int i = 0; i < ncores; ++i) {
    hwloc_obj_t core = hwloc_get_obj_by_type(t, HWLOC_OBJ_CORE, i);
    Core c;
    unsigned pu;
    hwloc_bitmap_foreach_begin(pu, core->cpuset) {
      if (std::binary_search(allowed.begin(), allowed.end(), static_cast<int>(pu))) {
        c.pus.push_back(static_cast<int>(pu));
      }
    }
    hwloc_bitmap_foreach_end();
    if (c.pus.empty()) continue;  // outside our cpuset
    c.numa = numa_of(t, core->cpuset);
    cores.push_back(std::move(c));
  }
  return cores;
}

std::vector<std::string> device_node_gpus() {
  std::vector<int> ids;
  if (DIR* d = ::opendir("/dev")) {
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name.rfind("nvidia", 0) != 0 || name.size() == 6) continue;
      std::string num = name.substr(6);
      if (std::all_of(num.begin(), num.end(), ::isdigit)) ids.push_back(std::stoi(num));
    }
    ::closedir(d);
  }
  std::sort(ids.begin(), ids.end());
  std::vector<std::string> names;
  for (int id : ids) names.push_back(std::to_string(id));
  return names;
}

std::vector<std::string> discover_gpu_names(const ResourceSpec& spec) {
  if (!spec.gpu_names.empty()) return spec.gpu_names;
  if (spec.gpus) {
    std::vector<std::string> names;
    for (int i = 0; i < *spec.gpus; ++i) names.push_back(std::to_string(i));
    return names;
  }
  if (const char* g = std::getenv("JIFFY_GPUS")) {
    std::string s = g;
    if (!s.empty() && std::all_of(s.begin(), s.end(), ::isdigit) && s.size() < 6) {
      ResourceSpec counted;
      counted.gpus = std::stoi(s);
      return discover_gpu_names(counted);
    }
    return parse_gpu_list(s);
  }
  if (const char* cvd = std::getenv("CUDA_VISIBLE_DEVICES")) return parse_gpu_list(cvd);
  return device_node_gpus();
}

}  // namespace

void export_topology_xml(const std::string& path) {
  // Not restricted to our CPUs, and everything kept: each rank's hwloc
  // applies its own flags and filters to the XML as it would to /sys
  // (tests/programs/hwloc_view.c checks the views are equal). Disallowed
  // objects (outside the cgroup cpuset) stay in, with the allowed sets:
  // MPICH's default load drops them, Open MPI's INCLUDE_DISALLOWED keeps
  // them. I/O objects stay in: MPICH keeps PCI devices for NIC and GPU
  // locality. An affinity mask (taskset) is not hwloc's "allowed": a rank
  // discovering by itself sees the whole machine and its own binding, and
  // so it does from the XML.
  hwloc_topology_t t;
  if (hwloc_topology_init(&t) != 0) throw Error("hwloc: cannot initialise topology");
  Topology topo(t);
  hwloc_topology_set_flags(t, HWLOC_TOPOLOGY_FLAG_INCLUDE_DISALLOWED);
  hwloc_topology_set_io_types_filter(t, HWLOC_TYPE_FILTER_KEEP_ALL);
  if (hwloc_topology_load(t) != 0) throw Error("hwloc: cannot load topology");
  std::string tmp = path + ".tmp";
  if (hwloc_topology_export_xml(t, tmp.c_str(), 0) != 0) {
    throw Error("hwloc: cannot write " + tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) throw_errno("rename " + tmp);
}

std::vector<std::string> parse_gpu_list(const std::string& list) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= list.size()) {
    std::size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    std::string item = list.substr(start, end - start);
    // CUDA stops at the first invalid entry; "-1" is the usual way to hide all.
    if (item.empty() || item[0] == '-' || item == "NoDevFiles") break;
    out.push_back(item);
    start = end + 1;
  }
  return out;
}

ResourceSet discover_resources(const ResourceSpec& spec) {
  ResourceSet set;
  std::vector<int> allowed = allowed_cpus();
  if (spec.fake_cores) {
    for (int i = 0; i < *spec.fake_cores; ++i) {
      Core c;
      c.pus = {allowed[static_cast<std::size_t>(i) % allowed.size()]};
      set.cores.push_back(std::move(c));
    }
  } else {
    set.cores = hwloc_cores(allowed);
  }
  if (set.cores.empty()) throw Error("no usable core found in the allowed CPU set");
  for (Core& c : set.cores) {
    c.slots = spec.hyperthreads ? static_cast<int>(c.pus.size()) : spec.slots_per_core;
  }
  for (std::string& name : discover_gpu_names(spec)) set.gpus.push_back(Gpu{std::move(name), -1});
  return set;
}

}  // namespace jiffy
