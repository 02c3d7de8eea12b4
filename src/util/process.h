// What /proc says about processes: identity over time (pid + start time)
// and the process groups of jobs, which the daemon kills when a launcher
// dies. A pid or group id alone is never trusted: numbers get reused.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>
#include <string_view>

namespace jiffy {

struct ProcStat {
  char state = 0;  // R, S, Z, ...
  pid_t ppid = 0;
  pid_t pgrp = 0;
  pid_t session = 0;
  unsigned long flags = 0;       // PF_* (include/linux/sched.h)
  unsigned long long start = 0;  // clock ticks since boot
};

// /proc/<pid>/stat, or nullopt when there is no such process.
std::optional<ProcStat> read_proc_stat(pid_t pid);

// When pid started; 0 when it does not exist. (pid, start) names a process
// for good.
unsigned long long process_start_time(pid_t pid);
// Whether (pid, start) still names a live process (zombies count as dead).
bool process_alive(pid_t pid, unsigned long long start);

// A job's processes as the daemon knows them: the ranks' process group,
// checked when the launcher reported it, and the random tag every rank has
// in its environment (JIFFY_JOB_TAG), which reaches helpers that left the
// group (setsid daemons).
struct JobGroup {
  pid_t pgid = 0;
  pid_t sid = 0;                     // the leader's session when checked
  unsigned long long leader_start = 0;
  std::string tag;
};

// The group pgid if its leader is a child of parent (the launcher that
// names it), else nullopt: a client cannot make the daemon kill a group
// that is not its job's.
std::optional<JobGroup> job_group_of_child(pid_t pgid, pid_t parent);
// The group pgid if its leader carries tag (JIFFY_JOB_TAG=tag in its
// environment: a process of that job, whoever its parent is now), else
// nullopt: for a job whose launcher died, the group it recorded is killed
// only while it provably is still the job's.
std::optional<JobGroup> job_group_with_tag(pid_t pgid, const std::string& tag);
// A new random job tag (32 hex digits), for JIFFY_JOB_TAG.
std::string new_job_tag();
// Whether tag is one: 16 to 64 lower-case hex digits, so that it can only
// ever match that variable's whole value. The one check every tag from a
// message or a file goes through; a JobGroup's tag that fails it names
// nothing (nothing is killed or waited for by it).
bool is_job_tag(std::string_view tag);

// Whether any process of g, zombies aside, still runs (of a group known by
// its tag only: any process carrying the tag).
bool job_group_alive(const JobGroup& g);
// SIGKILLs every process of g: the group itself while its leader is still
// the one checked (then the group id cannot have been reused), and every
// process carrying g's tag. A group whose leader is gone or not the one
// recorded is not killed by its number: nothing proves that its members
// are the job's (the number may be reused); they are found by the tag.
void kill_job_group(const JobGroup& g);

// Runs argv[0] (looked up in PATH) with argv, detached: nobody's child to
// reap (a double fork), signal mask cleared, stdin /dev/null. Returns false
// when it cannot be found or started. Safe in a threaded process (nothing
// but fork, execve and _exit between the forks).
bool spawn_detached(const std::vector<std::string>& argv);

}  // namespace jiffy
