/* The history journal: one fixed-size record per launch, appended by the
 * launcher that ran it (the front or jiffy-launch) and ingested into the
 * history database (src/history/db.h) by the daemon.
 *
 * Why a journal and not a message: the launch path must never wait for the
 * database, nor link SQLite, nor wake the daemon (a lane launch never talks
 * to it). Appending one record to a file in the runtime directory costs a
 * few system calls and no disk wait (page cache; nobody fsyncs it), and the
 * daemon reads the file on its own schedule, off its event loop.
 *
 * The file is <dir>/<key>.history (mode 0600, in the daemon's private
 * runtime directory, beside <key>.lane). A writer opens it O_APPEND|O_CREAT,
 * takes flock(LOCK_SH) (jiffy_history_lock), writes one whole record with
 * one write(), and closes it. The daemon takes flock(LOCK_EX|LOCK_NB) only
 * to copy the file to <key>.history.ingest and truncate it to 0 (so no
 * append falls between copying and truncating); it stores the copied
 * records in one transaction later, without the lock, and then empties
 * the copy. A crash between two steps makes the next ingestion read the
 * same records again: rows are keyed by the job's tag (128 random bits),
 * and a second copy changes nothing. So ingestion neither loses nor
 * duplicates a record, however it is interrupted.
 *
 * The file is not trusted (anyone who can open it can write it): a record
 * counts only if its magic, size, version and checksum are right and its
 * strings are NUL-terminated; after anything else (a write torn by a full
 * disk, which may end at any byte) the reader looks for the next magic.
 *
 * Plain C so that the front (C, musl) and the daemon (C++) share one
 * definition. Times are CLOCK_REALTIME in nanoseconds; 0 means "did not
 * happen" (start_ns 0: the job never ran). docs/history.md has the fields
 * as the database and `jiffy history --json` give them.
 */
#ifndef JIFFY_PROTO_HISTORY_H
#define JIFFY_PROTO_HISTORY_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/file.h>
#include <time.h>

#define JIFFY_HISTORY_MAGIC 0x31747369686a7966ULL /* "fyjhist1" */
#define JIFFY_HISTORY_VERSION 1
#define JIFFY_HISTORY_SUFFIX ".history"

/* Who wrote the record. A launcher's record says more than the daemon's,
 * so it wins when both exist for one tag. */
enum jiffy_history_source {
  JIFFY_HISTORY_FROM_DAEMON = 1,   /* the daemon saw the launcher vanish */
  JIFFY_HISTORY_FROM_LAUNCHER = 2, /* the front or jiffy-launch, at its end */
};

/* How the launch ended. */
enum jiffy_history_outcome {
  JIFFY_OUTCOME_EXITED = 1,    /* every rank exited; exit_code 0 or the first failure's */
  JIFFY_OUTCOME_SIGNALED = 2,  /* a rank (signal) or the launcher (Ctrl-C: signal) was signalled */
  JIFFY_OUTCOME_TIMED_OUT = 3, /* -timeout / MPIEXEC_TIMEOUT ran out (exit_code 255) */
  JIFFY_OUTCOME_REFUSED = 4,   /* never ran: reason says why (no such program, too large...) */
  JIFFY_OUTCOME_LOST = 5,      /* the launcher vanished (SIGKILL); the daemon's record */
  JIFFY_OUTCOME_CANCELLED = 6, /* the launcher went away while queued; the daemon's record */
};

/* flags */
#define JIFFY_HISTORY_LANE 0x1           /* ran on lane slots (never asked the daemon) */
#define JIFFY_HISTORY_HANDED_OVER 0x2    /* the front handed the job to jiffy-launch */
#define JIFFY_HISTORY_OVERSUBSCRIBED 0x4 /* ranks shared cores (wider than the machine) */
#define JIFFY_HISTORY_TRUNCATED 0x8      /* some text field was cut short */
#define JIFFY_HISTORY_SLURM 0x10         /* ran as a Slurm step (docs/slurm.md) */

#define JIFFY_HISTORY_RECORD_SIZE 4096

struct jiffy_history_record {
  uint64_t magic;    /* JIFFY_HISTORY_MAGIC */
  uint32_t size;     /* JIFFY_HISTORY_RECORD_SIZE */
  uint32_t checksum; /* jiffy_history_checksum() of the record with this field 0 */
  uint32_t version;  /* JIFFY_HISTORY_VERSION */
  int32_t source;    /* jiffy_history_source */
  int32_t outcome;   /* jiffy_history_outcome */
  int32_t exit_code; /* what jiffy exited with (REFUSED: its error exit, 127 no program) */
  int32_t signal;    /* the signal that ended the job (rank or launcher), else 0 */
  int32_t pid;       /* the launcher */
  int32_t ntasks;    /* ranks */
  int32_t ngroups;   /* MPMD groups (": "-separated), 1 for a plain launch */
  uint32_t flags;    /* JIFFY_HISTORY_* flags */
  int32_t reserved0;
  uint64_t job;      /* the daemon's job id; 0 when it never had one */
  int64_t submit_ns; /* the launcher started (queue wait = start - submit) */
  int64_t start_ns;  /* the ranks were spawned; 0: never ran */
  int64_t end_ns;    /* the last rank was reaped (or the launcher gave up) */
  int64_t user_us;   /* the ranks' summed user CPU (wait4 / RUSAGE_CHILDREN) */
  int64_t sys_us;    /* ... and system CPU */
  int64_t maxrss_kb; /* the largest rank's peak RSS */
  int64_t reserved1[4];
  char tag[40];       /* JIFFY_JOB_TAG: 32 hex digits, the row's key */
  char label[128];    /* JIFFY_LABEL, or derived (docs/history.md) */
  char command[256];  /* as `jiffy status` shows it (first 200 characters, "...") */
  char cwd[1024];     /* the launcher's working directory */
  /* Cores per rank, in the daemon's numbering: "0;1" (rank 0 on core 0,
   * rank 1 on core 1), "0-1;2-3" (two cores each). Empty: none granted. */
  char cores[1536];
  char gpus[256];     /* GPUs per rank, the same way ("" none) */
  char reason[256];   /* REFUSED / LOST: one line saying why */
  /* A launch the slurm backend ran (JIFFY_HISTORY_SLURM): its step
   * "JOBID.STEPID" and the step's nodes (a Slurm host list), "" when not
   * known. Records of older launchers have zeros here: "". */
  char step[40];
  char nodes[256];
  char pad[160];      /* zeros: to JIFFY_HISTORY_RECORD_SIZE */
};

#ifdef __cplusplus
static_assert(sizeof(struct jiffy_history_record) == JIFFY_HISTORY_RECORD_SIZE,
              "a history record is one fixed size");
#else
_Static_assert(sizeof(struct jiffy_history_record) == JIFFY_HISTORY_RECORD_SIZE,
               "a history record is one fixed size");
#endif

/* FNV-1a (32 bits) of the record, its checksum field taken as 0. */
static inline uint32_t jiffy_history_checksum(const struct jiffy_history_record* r) {
  const unsigned char* p = (const unsigned char*)r;
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < sizeof *r; ++i) {
    unsigned char c = p[i];
    if (i >= offsetof(struct jiffy_history_record, checksum) &&
        i < offsetof(struct jiffy_history_record, checksum) + sizeof r->checksum)
      c = 0;
    h = (h ^ c) * 16777619u;
  }
  return h;
}

/* Takes a writer's shared lock on the journal fd. The daemon holds the
 * lock exclusively only while it copies the journal aside (milliseconds);
 * but a daemon stopped meanwhile (SIGSTOP, a debugger) must not stop
 * launches: past about 50 ms of waiting the record is appended without the
 * lock (it could then be lost only if the stopped daemon resumes to
 * truncate at that very moment). */
static inline void jiffy_history_lock(int fd) {
  for (int i = 0; i < 250; ++i) {
    if (flock(fd, LOCK_SH | LOCK_NB) == 0 || (errno != EWOULDBLOCK && errno != EINTR)) return;
    struct timespec ts = {0, 200000}; /* 0.2 ms */
    nanosleep(&ts, NULL);
  }
}

#endif
