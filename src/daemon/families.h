// A job's family: the job and the sub-jobs its MPI_Comm_spawn asked for
// (docs/spawn.md). A launcher asks for a spawn's cores on a second
// connection with a `submit` naming its running job as `parent`
// (docs/protocol.md, "Spawned ranks"), and `asker`, the spawn whose ranks
// ask (none: the job's own). The asking ranks wait in MPI_Comm_spawn
// holding their cores, and so do the job's and those of the worlds that
// spawned the asker, so a spawn that needs more than the machine has
// beside those could only wait for ever: it is refused at once. Other
// spawned worlds may end while it waits (a world whose ranks finished and
// are exiting, a sibling), so they do not count. Pure.
#pragma once

#include <string>

#include "sched/request.h"

namespace jiffy {

// What stays held while a spawn waits: slots and GPUs.
struct FamilyUse {
  int slots = 0;
  int gpus = 0;
};

// Why request r (a spawn of job parent's family, which keeps `held`) can
// never be granted on a set of total_slots and total_gpus; "" when it can.
std::string spawn_refusal(const Request& r, JobId parent, FamilyUse held, int total_slots, int total_gpus);

}  // namespace jiffy
