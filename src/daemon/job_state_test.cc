#include "daemon/job_state.h"

#include <gtest/gtest.h>

namespace jiffy {
namespace {

using S = JobState;

TEST(JobState, NormalLifeIsAllowed) {
  EXPECT_TRUE(transition_allowed(S::Submitted, S::Queued));
  EXPECT_TRUE(transition_allowed(S::Queued, S::Granted));
  EXPECT_TRUE(transition_allowed(S::Granted, S::Running));
  EXPECT_TRUE(transition_allowed(S::Running, S::Exited));
  EXPECT_TRUE(transition_allowed(S::Exited, S::Released));
}

TEST(JobState, WaitingRequestsAreCancelledAndRunningOnesLost) {
  EXPECT_TRUE(transition_allowed(S::Queued, S::Cancelled));
  EXPECT_TRUE(transition_allowed(S::Running, S::Lost));
  EXPECT_TRUE(transition_allowed(S::Lost, S::Released));
  EXPECT_FALSE(transition_allowed(S::Queued, S::Lost));        // nothing to kill yet
  EXPECT_FALSE(transition_allowed(S::Running, S::Cancelled));  // resources are held
}

TEST(JobState, EndsAreFinal) {
  for (S to : {S::Submitted, S::Queued, S::Granted, S::Running, S::Exited, S::Released,
               S::Cancelled, S::Lost}) {
    EXPECT_FALSE(transition_allowed(S::Released, to));
    EXPECT_FALSE(transition_allowed(S::Cancelled, to));
  }
}

}  // namespace
}  // namespace jiffy
