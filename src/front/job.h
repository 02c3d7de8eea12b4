/* The front's job: ranks spawned as jiffy-launch's Job spawns them (one
 * process group led by rank 0, bound, PMI-1 channel inherited), watched
 * until each exits 0, or handed to jiffy-launch the moment anything else
 * happens. */
#ifndef JIFFY_FRONT_JOB_H
#define JIFFY_FRONT_JOB_H

#include <sched.h>
#include <signal.h>
#include <sys/types.h>

#include "front/front.h"

struct rank {
  pid_t pid;
  int pmi_fd;  /* our end of its PMI-1 channel; -1 once it hung up */
  int done;    /* exited 0 (reaped, except rank 0 whose zombie pins the group id) */
  cpu_set_t cpus;
  int bound;   /* cpus is non-empty */
  char* cores; /* "0,1": JIFFY_CORES */
};

struct job {
  int daemon_fd;
  int signal_fd;
  char cpus[1024];  /* the caller's allowed CPUs: names its daemon */
  char* grant_text; /* the daemon's grant, handed over verbatim */
  unsigned long long id;
  int n;
  struct rank* ranks;
  pid_t pgid;
  char tag[33];
  enum program_kind kind;
  const char* argv0;
};

/* The signals a launcher takes over (jiffy-launch's block_signals()). */
void launcher_signals(sigset_t* mask);
/* Reads the grant for n ranks. 0, or -1 when it is not one. */
int job_from_grant(struct job* job, int n);
/* Spawns the ranks and tells the daemon. 0, or -1 after reporting a rank
 * that could not be executed (the caller exits 127). */
int job_start(struct job* job, const char* program, char** argv);
/* Watches the job to its end; returns the exit code (0) or hands over. */
int job_wait(struct job* job);

#endif
