// The resource set a daemon manages: cores (each with slots and the CPUs a
// rank bound to it may use) and GPUs.
//
// Cores are listed in topology order (hwloc's logical order: package, NUMA
// node, core), so neighbours in the vector are neighbours on the machine and
// "compact" placement means "contiguous indices". A core's `slots` is how many
// ranks may share it at once: 1 by default, 2 for a hyperthreaded core when
// hyperthreads are scheduled, more for deliberate oversubscription. Slot k of
// a core runs on pus[k % pus.size()] when ranks are bound per hardware thread.
//
// Pure data: discovery (hwloc, /dev/nvidia*) lives in topology.h.
#pragma once

#include <string>
#include <vector>

namespace jiffy {

struct Core {
  int numa = 0;          // NUMA domain, for "one domain first" placement
  std::vector<int> pus;  // OS indices of its hardware threads (what affinity uses)
  int slots = 1;         // ranks that may run on it at once
};

struct Gpu {
  std::string name;  // what a rank sees in CUDA_VISIBLE_DEVICES ("0", "2", a UUID)
  int numa = -1;     // NUMA domain it hangs off, -1 when unknown
};

struct ResourceSet {
  std::vector<Core> cores;
  std::vector<Gpu> gpus;

  int total_slots() const {
    int n = 0;
    for (const Core& c : cores) n += c.slots;
    return n;
  }
};

}  // namespace jiffy
