/* The front's record of a launch it ran to the end, in the history journal
 * (src/proto/history.h, docs/history.md): what jiffy-launch's
 * launch/history_journal writes for the launches it ends. A few system
 * calls at the end of the launch (getrusage, open, flock, write, close),
 * no disk wait, errors ignored: the launch never fails or waits for it. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "front/job.h"
#include "proto/history.h"

long long realtime_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Copies s into field (size n), cut short (and said in *flags) if needed. */
static void put(char* field, size_t n, const char* s, uint32_t* flags) {
  size_t len = s ? strlen(s) : 0;
  if (len >= n) {
    len = n - 1;
    *flags |= JIFFY_HISTORY_TRUNCATED;
  }
  memcpy(field, s ? s : "", len);
  field[len] = '\0';
}

void history_write(const struct job* job, int outcome, int exit_code, int signo, const char* reason) {
  const char* off = getenv("JIFFY_HISTORY");
  if (off && strcmp(off, "0") == 0) return;
  static struct jiffy_history_record r; /* zeros; written once per process */
  r.magic = JIFFY_HISTORY_MAGIC;
  r.size = sizeof r;
  r.version = JIFFY_HISTORY_VERSION;
  r.source = JIFFY_HISTORY_FROM_LAUNCHER;
  r.outcome = outcome;
  r.exit_code = exit_code;
  r.signal = signo;
  r.pid = (int32_t)getpid();
  r.ntasks = job->n;
  r.ngroups = 1;
  r.flags = (job->laned ? JIFFY_HISTORY_LANE : 0) | (job->oversubscribed ? JIFFY_HISTORY_OVERSUBSCRIBED : 0) |
            (job->cores_cut ? JIFFY_HISTORY_TRUNCATED : 0);
  r.job = job->id;
  r.submit_ns = job->submit_ns;
  r.start_ns = job->start_ns;
  r.end_ns = realtime_ns();
  if (job->start_ns) {
    /* The ranks: every child we reaped (ranks, and what they left). */
    struct rusage ru;
    if (getrusage(RUSAGE_CHILDREN, &ru) == 0) {
      r.user_us = (int64_t)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec;
      r.sys_us = (int64_t)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec;
      r.maxrss_kb = ru.ru_maxrss;
    }
  }
  put(r.tag, sizeof r.tag, job->tag, &r.flags);
  put(r.label, sizeof r.label, job->label, &r.flags);
  put(r.command, sizeof r.command, job->summary, &r.flags);
  put(r.cwd, sizeof r.cwd, job->cwd, &r.flags);
  put(r.cores, sizeof r.cores, job->cores, &r.flags);
  put(r.reason, sizeof r.reason, reason, &r.flags);
  r.checksum = jiffy_history_checksum(&r);

  char path[4200];
  int len = snprintf(path, sizeof path, "%s%s", job->base, JIFFY_HISTORY_SUFFIX);
  if (len <= 0 || (size_t)len >= sizeof path) return;
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return;
  /* Shared with other writers; the daemon's exclusive lock keeps appends
   * out while it ingests and truncates. One write: one whole record. */
  flock(fd, LOCK_SH);
  if (write(fd, &r, sizeof r) < 0) {
    /* nothing to do: the history is never worth failing a launch */
  }
  close(fd);
}
