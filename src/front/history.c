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

/* 16777619^k mod 2^32: FNV-1a's step over k zero bytes. */
static uint32_t fnv_zeros(size_t k) {
  uint32_t result = 1, base = 16777619u;
  for (; k; k >>= 1, base *= base) {
    if (k & 1) result *= base;
  }
  return result;
}

/* jiffy_history_checksum() of r (its checksum field 0), in a fraction of
 * the time: the record is mostly zeros, and FNV-1a over a run of k zero
 * bytes is one multiplication by the prime's k-th power. (Byte by byte,
 * 4096 dependent multiplications cost 6 us, a measurable part of a 1 ms
 * launch.) */
static uint32_t record_checksum(const struct jiffy_history_record* r) {
  const unsigned char* p = (const unsigned char*)r;
  uint32_t h = 2166136261u;
  size_t zeros = 0;
  for (size_t i = 0; i < sizeof *r; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    if (w == 0) {
      zeros += 8;
      continue;
    }
    if (zeros) h *= fnv_zeros(zeros);
    zeros = 0;
    for (size_t j = i; j < i + 8; ++j) h = (h ^ p[j]) * 16777619u;
  }
  if (zeros) h *= fnv_zeros(zeros);
  return h;
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
  r.end_ns = job->end_ns ? job->end_ns : realtime_ns();
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
  r.checksum = record_checksum(&r);

  /* base is "/proc/self/fd/<dir fd>/<key>" (daemon_base): opened relative
   * to the directory's descriptor, the name costs no walk through /proc
   * (5 us). */
  static const char prefix[] = "/proc/self/fd/";
  char* end = NULL;
  long dir = strncmp(job->base, prefix, sizeof prefix - 1) == 0 ? strtol(job->base + sizeof prefix - 1, &end, 10) : -1;
  if (dir < 0 || !end || *end != '/') return;
  char name[256];
  int len = snprintf(name, sizeof name, "%s%s", end + 1, JIFFY_HISTORY_SUFFIX);
  if (len <= 0 || (size_t)len >= sizeof name) return;
  int fd = openat((int)dir, name, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return;
  /* Shared with other writers; the daemon's exclusive lock keeps appends
   * out while it moves the journal aside. One write: one whole record. */
  jiffy_history_lock(fd);
  if (write(fd, &r, sizeof r) < 0) {
    /* nothing to do: the history is never worth failing a launch */
  }
  close(fd);
}
