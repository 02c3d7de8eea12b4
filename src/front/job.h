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
  int pmi_fd;   /* our end of its PMI-1 channel; -1 once it hung up */
  int child_fd; /* the rank's end, until it is spawned */
  int done;     /* exited 0 (reaped, except rank 0 whose zombie pins the group id) */
  cpu_set_t cpus;
  int bound;    /* cpus is non-empty */
  char** env;   /* its environment, complete once the grant is in */
  int env_job;  /* where JIFFY_JOB_ID and JIFFY_CORES sit in env */
  int env_cores;
};

struct job {
  int daemon_fd;
  int signal_fd;
  struct lane_claim lane; /* slots taken from the lane (lane.fd -1: granted by the daemon,
                             and daemon_fd is our connection; else daemon_fd is -1) */
  const char* base;    /* the daemon's file names (daemon_base) */
  const char* command; /* the command summary, JSON-escaped */
  const char* cwd_json;   /* the working directory, JSON-escaped */
  const char* label_json; /* the history label (docs/history.md), JSON-escaped */
  /* For the history record (history.c): */
  const char* summary;  /* the command summary */
  const char* cwd;      /* the working directory */
  const char* label;    /* the label */
  long long submit_ns;  /* CLOCK_REALTIME: the front started */
  long long start_ns;   /* CLOCK_REALTIME: the ranks were spawned; 0: not (yet) */
  long long end_ns;     /* CLOCK_REALTIME: every process of the job gone; 0: not (yet) */
  int laned;            /* the slots came from the lane */
  int oversubscribed;   /* ranks share cores */
  char cores[1536];     /* per rank, ';'-separated (proto/history.h) */
  int cores_cut;        /* cores was too short for them all */
  char reason[256];     /* why the ranks could not be executed */
  int devnull;      /* stdin of ranks 1.. */
  char cpus[16384]; /* the caller's allowed CPUs: names its daemon */
  char* grant_text; /* the daemon's grant, handed over verbatim */
  unsigned long long id;
  int n;
  struct rank* ranks;
  pid_t pgid;
  char tag[33];         /* JIFFY_JOB_TAG, sent with "submit" */
  long long spawned_ns; /* CLOCK_MONOTONIC when the ranks started */
  long long timeout_ns;  /* -timeout / MPIEXEC_TIMEOUT, 0: none */
  long long deadline_ns; /* CLOCK_MONOTONIC: spawned_ns + timeout_ns, 0: none. At it
                            the front hands over and jiffy-launch times the job out;
                            every hand-over carries it (launch/handoff.h) */
  int started_sent;
  enum program_kind kind;
  char** owned; /* the environment entries we made */
  int nowned;
  const char* topology; /* the daemon's hwloc XML for HWLOC_XMLFILE; NULL: none */
  int ucx_shm;          /* MPICH ranks get UCX_TLS=self,sm (the front's jobs have no GPUs) */
  int single_node_ompi; /* Open MPI ranks (behind the rendezvous) use shared memory only */
  int rendezvous_fd;   /* the PMIx rendezvous of a plain program (rendezvous.c), */
  int rendezvous_port; /* when rendezvous_port is not 0 */
};

/* The signals a launcher takes over (jiffy-launch's block_signals()). */
void launcher_signals(sigset_t* mask);
/* A new random job tag (util/process.h new_job_tag). */
void random_tag(char out[33]);
/* Prepares n ranks before the grant is known: tag, PMI channels,
 * environments. 0 or -1. */
int job_prepare(struct job* job, int n);
/* Reads the grant (grant_text, parsed into nodes). 0, or -1 when it is not
 * one for this job. */
int job_from_grant(struct job* job, const struct json* nodes);
/* Spawns the ranks and tells the daemon. 0, or -1 after reporting a rank
 * that could not be executed (the caller exits 127). */
int job_start(struct job* job, const char* program, char** argv);
/* Watches the job to its end or its deadline; returns the exit code (0) or
 * hands over. */
int job_wait(struct job* job);
/* Frees what the job allocated. */
void job_free(struct job* job);

/* ---- history.c: the job's record in the history journal ---------------- */

/* CLOCK_REALTIME in nanoseconds (vDSO: no system call). */
long long realtime_ns(void);
/* Appends the job's one record (src/proto/history.h) to <base>.history:
 * outcome (jiffy_history_outcome), the exit code, the signal that ended
 * it, reason ("" or NULL unless refused). Errors are ignored;
 * JIFFY_HISTORY=0 writes nothing. */
void history_write(const struct job* job, int outcome, int exit_code, int signo, const char* reason);

#endif
