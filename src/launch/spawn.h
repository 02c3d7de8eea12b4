// Starting one rank: fork, then in the child set the process group, the
// parent-death signal, the signal mask, the CPU affinity, stdio and the
// working directory, and exec. The child reports a failed exec through a
// close-on-exec pipe, so the parent learns "exec worked" from EOF alone.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "util/fd.h"

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
  Fd exec_status;  // read end: EOF once exec succeeded, an errno if it failed
};

// Forks and execs. Throws Error when fork fails; exec failures surface
// through check_exec().
Spawned spawn_rank(const RankSpawn& spec);

// Blocks until the child has exec'd or failed; returns 0 or the exec errno.
int check_exec(Spawned& s);

// Resolves a program the way execvp would (PATH search unless it contains a
// '/', relative to wdir when given). Throws Error with errno ENOENT/EACCES
// and a user-facing message when there is nothing executable.
std::string resolve_program(const std::string& name, const std::string& path_var,
                            const std::optional<std::string>& wdir);

}  // namespace jiffy
