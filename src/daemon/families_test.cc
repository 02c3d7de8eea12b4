#include "daemon/families.h"

#include <gtest/gtest.h>

namespace jiffy {
namespace {

Request spawn(int ntasks, int cores = 1, int gpus = 0) {
  Request r;
  r.ntasks = ntasks;
  r.cores_per_task = cores;
  r.gpus_per_task = gpus;
  return r;
}

TEST(Families, ASpawnThatFitsBesideTheFamilyMayWait) {
  EXPECT_EQ(spawn_refusal(spawn(2), 7, {2, 0}, 4, 0), "");
  EXPECT_EQ(spawn_refusal(spawn(1, 1, 1), 7, {1, 1}, 4, 2), "");
}

TEST(Families, ASpawnThatCanNeverFitIsRefusedWithTheFigures) {
  EXPECT_EQ(spawn_refusal(spawn(3), 12, {2, 0}, 4, 0),
            "spawn of 3 ranks needs 3 more core slots; job 12 and the ranks waiting for this spawn hold 2 of the 4 slots "
            "(the spawning ranks wait holding theirs)");
  EXPECT_NE(spawn_refusal(spawn(1, 2), 12, {3, 0}, 4, 0), "");  // -c 2
  // An oversubscribed parent holds the whole machine.
  EXPECT_NE(spawn_refusal(spawn(1), 3, {2, 0}, 2, 0), "");
}

TEST(Families, GpusCountToo) {
  EXPECT_EQ(spawn_refusal(spawn(1, 1, 1), 5, {1, 2}, 8, 2),
            "spawn of 1 rank needs 1 more GPU; job 5 and the ranks waiting for this spawn hold 2 of the 2 GPUs "
            "(the spawning ranks wait holding theirs)");
}

}  // namespace
}  // namespace jiffy
