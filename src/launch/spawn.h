// Starting one rank the way posix_spawn does: clone(CLONE_VM|CLONE_VFORK)
// onto a small private stack, so no page table is copied and the parent
// resumes only once the child has exec'd (or failed to, which it reports in
// shared memory). In the child, before exec: the process group, the
// parent-death signal, the signal mask, the CPU affinity, stdio, the working
// directory.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>


namespace jiffy {

struct RankSpawn {
  std::string path;                 // resolved executable
  std::vector<std::string> argv;    // argv[0] as the user typed it
  std::vector<char*> envp;          // NULL-terminated, owned by the caller
  std::vector<int> cpus;            // affinity; empty = inherit the launcher's
  std::optional<std::string> wdir;  // chdir before exec
  int stdin_fd = 0;                 // become the rank's 0, 1, 2
  int stdout_fd = 1;
  int stderr_fd = 2;
  pid_t pgid = 0;  // process group to join; 0 = lead a new one
  int inherit_fd = -1;  // a close-on-exec fd the rank keeps (its PMI_FD)
};

struct Spawned {
  pid_t pid = -1;
  int exec_errno = 0;  // 0: the rank runs; else why it could not start (the pid is a zombie to reap)
};

// Starts the rank. Throws Error when no process can be created.
Spawned spawn_rank(const RankSpawn& spec);

// Resolves a program the way execvp would (PATH search unless it contains a
// '/', relative to wdir when given). Throws Error with errno ENOENT/EACCES
// and a user-facing message when there is nothing executable.
std::string resolve_program(const std::string& name, const std::string& path_var,
                            const std::optional<std::string>& wdir);

}  // namespace jiffy
