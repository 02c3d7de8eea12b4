#include "daemon/families.h"

namespace jiffy {

namespace {

std::string plural(int n, const char* what) { return std::to_string(n) + " " + what + (n == 1 ? "" : "s"); }

}  // namespace

std::string spawn_refusal(const Request& r, JobId parent, FamilyUse held, int total_slots, int total_gpus) {
  const std::string who = "job " + std::to_string(parent) + " and the ranks waiting for this spawn hold ";
  const std::string what = "spawn of " + plural(r.ntasks, "rank") + " needs ";
  if (static_cast<long long>(held.slots) + r.slots() > total_slots) {
    return what + plural(r.slots(), "more core slot") + "; " + who + std::to_string(held.slots) + " of the " +
           plural(total_slots, "slot") + " (the spawning ranks wait holding theirs)";
  }
  if (r.gpus() > 0 && static_cast<long long>(held.gpus) + r.gpus() > total_gpus) {
    return what + plural(r.gpus(), "more GPU") + "; " + who + std::to_string(held.gpus) + " of the " +
           plural(total_gpus, "GPU") + " (the spawning ranks wait holding theirs)";
  }
  return "";
}

}  // namespace jiffy
