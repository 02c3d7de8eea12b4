// Helpers shared by the fuzz targets.
#pragma once

#include <cstdio>

#include "core/resources.h"

// An invariant of the code under test: a failure is a finding, reported
// like a crash (libFuzzer saves the input).
#define FUZZ_CHECK(cond)                                                                      \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      std::fprintf(stderr, "fuzz check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      __builtin_trap();                                                                       \
    }                                                                                         \
  } while (0)

namespace jiffy::fuzz {

// A small fake machine: 6 cores in two NUMA domains (CPUs i and i+6), the
// middle two with 2 slots; 3 GPUs (NUMA 0, 1, unknown).
inline ResourceSet machine() {
  ResourceSet rs;
  for (int i = 0; i < 6; ++i) {
    Core c;
    c.numa = i < 3 ? 0 : 1;
    c.pus = {i, i + 6};
    c.slots = (i == 2 || i == 3) ? 2 : 1;
    rs.cores.push_back(c);
  }
  rs.gpus = {{"0", 0}, {"GPU-1b2c", 1}, {"2", -1}};
  return rs;
}

}  // namespace jiffy::fuzz
