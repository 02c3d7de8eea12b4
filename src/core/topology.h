// Discovery of the resource set a daemon manages (daemon only: this is the
// one place that loads hwloc, so launchers never pay for topology).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/resources.h"

namespace jiffy {

struct ResourceSpec {
  std::optional<int> fake_cores;       // N fake cores mapped round-robin onto the allowed CPUs
  std::optional<int> gpus;             // declare N GPUs named 0..N-1
  std::vector<std::string> gpu_names;  // declare GPUs by name
  int slots_per_core = 1;
  bool hyperthreads = false;  // one slot per hardware thread instead of slots_per_core
};

// Cores: hwloc's physical cores within this process's allowed CPUs
// (sched_getaffinity, so taskset/CTest/Slurm restrictions count), in logical
// order, each with its hardware threads; or spec.fake_cores fakes.
// GPUs: declared ones if any, else $JIFFY_GPUS (count or comma-separated
// names), else $CUDA_VISIBLE_DEVICES when set, else /dev/nvidiaN device nodes.
// Throws Error when no usable core is found.
ResourceSet discover_resources(const ResourceSpec& spec);

// Writes the machine's topology as hwloc discovers it in this process's
// cgroup (disallowed and I/O objects included, so that every loader's own
// flags and filters give what its own discovery would), as hwloc XML to
// path (atomically: a temporary file, then rename). Ranks and libpmix load
// it instead of rediscovering the machine. Throws Error.
void export_topology_xml(const std::string& path);

// Parses a GPU visibility list ("0,2", "GPU-uuid,...", "" or "-1" for none).
std::vector<std::string> parse_gpu_list(const std::string& list);

}  // namespace jiffy
