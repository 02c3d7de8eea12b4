/* Taking slots from the daemon's lane (src/proto/lane.h) without waiting
 * for the daemon: the lock on a slot's byte is the grant. The daemon is told
 * afterwards (main.c sends "lane"), and the grant text made here is the one
 * the daemon would have sent, so everything after it (job.c, a hand-over to
 * jiffy-launch) is the same as for a granted request. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "front/front.h"
#include "proto/lane.h"

/* Positions tried before giving up (each try is one fcntl). */
enum { kMaxTries = 64 };

/* The file is mapped, and anyone who can open it can truncate it: an
 * access beyond its end is then a SIGBUS. We keep the map (the job-id
 * counter is an atomic in it, shared with the daemon; pread/pwrite would
 * need a lock round it, two more system calls on every launch) and guard
 * it: a SIGBUS inside the map replaces the whole map by zeroed private
 * memory (the faulting access then completes there) and marks the lane
 * damaged. Zeros read as "no lane" (wrong magic, closed), lane_take then
 * gives up (we ask the daemon), and what a running job writes later goes
 * nowhere. A SIGBUS anywhere else kills as before. The handler costs one
 * sigaction per launch that maps the lane. */
static void* g_map;
static size_t g_map_size;
static volatile sig_atomic_t g_damaged;

static void on_sigbus(int sig, siginfo_t* si, void* ctx) {
  (void)ctx;
  char* at = si->si_addr;
  if (g_map && at >= (char*)g_map && at < (char*)g_map + g_map_size &&
      mmap(g_map, g_map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) !=
          MAP_FAILED) {
    g_damaged = 1;
    return;
  }
  signal(sig, SIG_DFL); /* not ours: the access faults again, and kills */
}

static void guard(void* map, size_t size) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO;
  g_map = map;
  g_map_size = size;
  g_damaged = 0;
  sigaction(SIGBUS, &sa, NULL);
}

static void unmap(void* map, size_t size) {
  g_map = NULL;
  munmap(map, size);
}

static int lock_range(int fd, short type, int first, int count) {
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = first;
  fl.l_len = count;
  return fcntl(fd, F_OFD_SETLK, &fl);
}

/* The first of n slots starting at the one whose CPUs include the CPU we
 * run on; -1 when none does. */
static int home_slot(const struct jiffy_lane_slot* t, int slots, int n) {
  int cpu = sched_getcpu();
  for (int u = 0; cpu >= 0 && u < slots; ++u) {
    for (int i = 0; i < t[u].ncpus && i < JIFFY_LANE_MAX_CPUS; ++i) {
      if (t[u].cpus[i] == cpu) return u + n <= slots ? u : slots - n;
    }
  }
  return -1;
}

static int lane_open(const struct jiffy_lane_header* h) {
  return __atomic_load_n(&h->open, __ATOMIC_SEQ_CST) == 1;
}

/* The grant for slots [first, first + count), in the daemon's words. */
static char* grant_text(const struct jiffy_lane_slot* t, int count, unsigned long long job) {
  size_t cap = 160 + (size_t)count * (48 + JIFFY_LANE_MAX_CPUS * 7);
  char* s = malloc(cap);
  if (!s) return NULL;
  size_t used = (size_t)snprintf(
      s, cap, "{\"type\":\"grant\",\"job\":%llu,\"exclusive\":false,\"gpu_ids\":[],\"slots\":[", job);
  for (int r = 0; r < count; ++r) {
    used += (size_t)snprintf(s + used, cap - used, "%s[%d,%d]", r ? "," : "", t[r].core, t[r].slot);
  }
  used += (size_t)snprintf(s + used, cap - used, "],\"ranks\":[");
  for (int r = 0; r < count; ++r) {
    const struct jiffy_lane_slot* e = &t[r];
    used += (size_t)snprintf(s + used, cap - used, "%s{\"cores\":[%d],\"cpus\":[", r ? "," : "", e->core);
    for (int i = 0; i < e->ncpus; ++i) {
      used += (size_t)snprintf(s + used, cap - used, "%s%u", i ? "," : "", (unsigned)e->cpus[i]);
    }
    used += (size_t)snprintf(s + used, cap - used, "],\"gpus\":[]}");
  }
  snprintf(s + used, cap - used, "]}");
  return s;
}

/* Whether the file's slots [first, first + count) are ones we can use. */
static int slots_sane(const struct jiffy_lane_slot* t, int count) {
  for (int r = 0; r < count; ++r) {
    if (t[r].core < 0 || t[r].slot < 0 || t[r].ncpus > JIFFY_LANE_MAX_CPUS) return 0;
    for (int i = 0; i < t[r].ncpus; ++i) {
      if (t[r].cpus[i] >= CPU_SETSIZE) return 0;
    }
  }
  return 1;
}

/* Whether the records of slots [first, first + count) name no job: a
 * record left behind is the proof that a dead launcher's job may still
 * have processes there, and only the daemon clears it (once they are gone;
 * proto/lane.h). Read while we hold the slots' locks. */
static int records_free(const struct jiffy_lane_job* r, int first, int count) {
  for (int u = first; u < first + count; ++u) {
    if (__atomic_load_n(&r[u].job, __ATOMIC_ACQUIRE) != 0) return 0;
  }
  return 1;
}

/* Whether the daemon that lent the slots still lives (proto/lane.h). */
static int daemon_alive(int fd) {
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = JIFFY_LANE_DAEMON_BYTE;
  fl.l_len = 1;
  return fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
}

static void write_records(struct lane_claim* c, const char* tag, const char* command) {
  struct jiffy_lane_job* r = c->records;
  struct timespec t;
  clock_gettime(CLOCK_BOOTTIME, &t);
  for (int u = c->first; u < c->first + c->count; ++u) {
    __atomic_store_n(&r[u].job, 0, __ATOMIC_SEQ_CST);
    r[u].pid = (int32_t)getpid();
    r[u].pgid = 0;
    r[u].first = c->first;
    r[u].count = c->count;
    r[u].claimed_ns = (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
    snprintf(r[u].tag, sizeof r[u].tag, "%s", tag);
    snprintf(r[u].command, sizeof r[u].command, "%s", command);
    __atomic_store_n(&r[u].job, c->job, __ATOMIC_RELEASE);
  }
}

int lane_take(const char* base, int n, const char* tag, const char* command,
              struct lane_claim* claim) {
  claim->fd = -1;
  if (n < 1 || n > JIFFY_LANE_MAX_TASKS) return -1;
  char path[4200];
  if (snprintf(path, sizeof path, "%s.lane", base) >= (int)sizeof path) return -1;
  int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return -1;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
      (st.st_mode & 077) != 0 || st.st_size < (off_t)sizeof(struct jiffy_lane_header)) {
    close(fd);
    return -1;
  }
  size_t size = (size_t)st.st_size;
  void* map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) {
    close(fd);
    return -1;
  }
  guard(map, size);
  struct jiffy_lane_header* h = map;
  const struct jiffy_lane_slot* table = (const struct jiffy_lane_slot*)(h + 1);
  /* Read once: everything below is sized from this copy, never the file. */
  const uint32_t nslots = __atomic_load_n(&h->nslots, __ATOMIC_RELAXED);
  const int slots = nslots <= JIFFY_LANE_MAX_SLOTS ? (int)nslots : 0;
  struct jiffy_lane_job* rec =
      (struct jiffy_lane_job*)((char*)map + sizeof *h + (size_t)slots * sizeof(struct jiffy_lane_slot));
  struct jiffy_lane_slot mine[JIFFY_LANE_MAX_TASKS];
  int first = -1;
  if (__atomic_load_n(&h->magic, __ATOMIC_SEQ_CST) == JIFFY_LANE_MAGIC && slots > 0 &&
      size >= sizeof *h + (size_t)slots * (sizeof(struct jiffy_lane_slot) + sizeof(struct jiffy_lane_job)) &&
      n <= slots && lane_open(h)) {
    /* From where we run: the ranks start without moving us to another
     * CPU (a migration costs more than the rest of taking the slots); then
     * onwards, round the lane. A position whose records name a job is
     * another's still (its launcher died and the daemon has not yet seen
     * its processes gone): let go, try the next. */
    int here = home_slot(table, slots, n);
    int positions = slots - n + 1;
    for (int k = 0; k < positions && k < kMaxTries; ++k) {
      int u = ((here < 0 ? 0 : here) + k) % positions;
      if (lock_range(fd, F_WRLCK, u, n) == 0) {
        if (records_free(rec, u, n)) {
          first = u;
          break;
        }
        lock_range(fd, F_UNLCK, u, n);
        continue;
      }
      if (errno != EAGAIN && errno != EACCES) break; /* no OFD locks here: ask the daemon */
    }
  }
  /* Ours only if lent by a live daemon, and the lane still open: it closes
   * when a request waits, which then goes first. The placements are copied
   * once and checked in the copy, which the grant is made from. */
  if (first >= 0) memcpy(mine, table + first, (size_t)n * sizeof *mine);
  if (first >= 0 && (!lane_open(h) || !daemon_alive(fd) || !slots_sane(mine, n) || g_damaged)) {
    lock_range(fd, F_UNLCK, first, n);
    first = -1;
  }
  if (first < 0) {
    unmap(map, size);
    close(fd);
    return -1;
  }
  unsigned long long job = __atomic_fetch_add(&h->next_job, 1, __ATOMIC_SEQ_CST);
  if (job == 0) job = __atomic_fetch_add(&h->next_job, 1, __ATOMIC_SEQ_CST);
  claim->fd = fd;
  claim->first = first;
  claim->count = n;
  claim->job = job;
  claim->map = map;
  claim->map_size = size;
  claim->records = rec;
  write_records(claim, tag, command);
  claim->grant = g_damaged ? NULL : grant_text(mine, n, job);
  if (!claim->grant) { /* out of memory, or the file cut short under us */
    lane_release(claim);
    return -1;
  }
  return 0;
}

void lane_set_pgid(struct lane_claim* claim, pid_t pgid) {
  if (claim->fd < 0) return;
  struct jiffy_lane_job* r = claim->records;
  for (int u = claim->first; u < claim->first + claim->count; ++u) {
    __atomic_store_n(&r[u].pgid, (int32_t)pgid, __ATOMIC_RELEASE);
  }
}

int lane_release(struct lane_claim* claim) {
  if (claim->fd < 0) return 0;
  struct jiffy_lane_job* r = claim->records;
  for (int u = claim->first; u < claim->first + claim->count; ++u) {
    __atomic_store_n(&r[u].job, 0, __ATOMIC_SEQ_CST);
  }
  close(claim->fd); /* the locks go with the only descriptor */
  claim->fd = -1;
  int waiting = !lane_open(claim->map);
  unmap(claim->map, claim->map_size);
  return waiting;
}
