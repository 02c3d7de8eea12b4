// The request lifecycle, written down in one place.
//
//   submitted -> queued -> granted -> running -> exited -> released
//                queued -> cancelled    (launcher gone or Ctrl-C while waiting)
//                granted/running -> lost (connection dropped without "finished")
//
// A lost job's process group is killed by the daemon before its resources
// are released, so a crashed launcher can never leave ranks on cores that
// are being granted again.
#pragma once

namespace jiffy {

enum class JobState { Submitted, Queued, Granted, Running, Exited, Released, Cancelled, Lost };

constexpr const char* to_string(JobState s) {
  switch (s) {
    case JobState::Submitted: return "submitted";
    case JobState::Queued: return "queued";
    case JobState::Granted: return "granted";
    case JobState::Running: return "running";
    case JobState::Exited: return "exited";
    case JobState::Released: return "released";
    case JobState::Cancelled: return "cancelled";
    case JobState::Lost: return "lost";
  }
  return "?";
}

// Whether the lifecycle allows going from `from` to `to`.
constexpr bool transition_allowed(JobState from, JobState to) {
  using S = JobState;
  switch (from) {
    case S::Submitted: return to == S::Queued || to == S::Cancelled;
    case S::Queued: return to == S::Granted || to == S::Cancelled;
    case S::Granted: return to == S::Running || to == S::Exited || to == S::Lost;
    case S::Running: return to == S::Exited || to == S::Lost;
    case S::Exited: return to == S::Released;
    case S::Lost: return to == S::Released;
    case S::Released:
    case S::Cancelled: return false;
  }
  return false;
}

}  // namespace jiffy
