/* work: one test of the generated suite (bench/suite_bench.py).
 *
 * Usage: work ID WIDTH BURN_MS LINES EXIT_CODE
 *
 * Built three ways from this one file: plain gcc, mpicc.mpich -DUSE_MPI and
 * mpicc.openmpi -DUSE_MPI. Every rank burns BURN_MS of its own thread's CPU
 * time (not a sleep: the suite's CPU floor is made of this), rank 0 prints
 * LINES lines and "ID done", and every rank exits with EXIT_CODE (the suite's
 * expected failures). MPI builds do MPI_Init, the burn, an MPI_Allreduce and
 * MPI_Finalize, and fail loudly (MPI_Abort 99) when the world is not WIDTH
 * ranks: a launcher that splits a job into singletons cannot pass.
 *
 * When $SUITE_LOG names a file, each rank appends one line to it with one
 * write() (O_APPEND, so concurrent ranks never tear each other's lines):
 *
 *   id=ID rank=R size=S pid=P start=NS end=NS cpus=0,1 cpu=C cputime=NS burn=NS rc=CODE
 *
 * start: CLOCK_REALTIME taken in a constructor, i.e. after exec and dynamic
 * loading (what the launcher and the loader cost is before it); end: taken
 * just before exit, after MPI_Finalize; cpus: sched_getaffinity; cpu: the
 * CPU it ran on at the end; cputime: its own user+sys (getrusage
 * RUSAGE_SELF, MPI start-up included); burn: the thread CPU time the burn
 * itself took.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#ifdef USE_MPI
#include <mpi.h>
#endif

static long long g_start_ns;

static long long clock_ns(clockid_t c) {
  struct timespec ts;
  clock_gettime(c, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Runs after the dynamic loader and the libraries' own constructors: the
 * earliest moment the program itself exists. */
__attribute__((constructor)) static void at_start(void) { g_start_ns = clock_ns(CLOCK_REALTIME); }

/* Spins until this thread has used ms of CPU time; returns what it used. */
static long long burn(long ms) {
  long long t0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
  long long until = t0 + ms * 1000000LL;
  volatile unsigned long x = 1;
  long long now;
  do {
    for (int i = 0; i < 2000; i++) x = x * 6364136223846793005UL + 1442695040888963407UL;
    now = clock_ns(CLOCK_THREAD_CPUTIME_ID);
  } while (now < until);
  return now - t0;
}

#ifndef USE_MPI
/* Rank and size of a plain program: from whichever launcher started it. */
static int env_int(const char* const* names, int fallback) {
  for (; *names; names++) {
    const char* v = getenv(*names);
    if (v && *v) return atoi(v);
  }
  return fallback;
}
#endif

static void cpu_list(char* buf, size_t len) {
  cpu_set_t set;
  buf[0] = '\0';
  if (sched_getaffinity(0, sizeof set, &set) != 0) {
    snprintf(buf, len, "?");
    return;
  }
  size_t used = 0;
  for (int c = 0; c < CPU_SETSIZE && used + 8 < len; c++) {
    if (CPU_ISSET(c, &set)) used += (size_t)snprintf(buf + used, len - used, used ? ",%d" : "%d", c);
  }
}

static void log_rank(const char* id, int rank, int size, long long burned, int rc) {
  const char* path = getenv("SUITE_LOG");
  if (!path || !*path) return;
  long long end_ns = clock_ns(CLOCK_REALTIME);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  long long cpu_ns = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL +
                     (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
  char cpus[512];
  cpu_list(cpus, sizeof cpus);
  char line[1024];
  int n = snprintf(line, sizeof line,
                   "id=%s rank=%d size=%d pid=%d start=%lld end=%lld cpus=%s cpu=%d cputime=%lld burn=%lld rc=%d\n",
                   id, rank, size, (int)getpid(), g_start_ns, end_ns, cpus, sched_getcpu(), cpu_ns, burned, rc);
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    perror(path);
    exit(97);
  }
  /* one write of the whole line: O_APPEND makes it atomic against the others */
  if (n <= 0 || write(fd, line, (size_t)n) != n) {
    perror("write SUITE_LOG");
    exit(97);
  }
  close(fd);
}

int main(int argc, char** argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: work ID WIDTH BURN_MS LINES EXIT_CODE\n");
    return 2;
  }
  const char* id = argv[1];
  int width = atoi(argv[2]);
  long ms = atol(argv[3]);
  int lines = atoi(argv[4]);
  int code = atoi(argv[5]);
  int rank, size;
  long expect = (long)width * (width + 1) / 2;
  long sum;
#ifdef USE_MPI
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size != width) {
    fprintf(stderr, "work %s: MPI_COMM_WORLD has %d ranks, expected %d (a split world?)\n", id, size, width);
    MPI_Abort(MPI_COMM_WORLD, 99);
  }
  long long burned = burn(ms);
  long mine = rank + 1;
  MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
#else
  static const char* const rank_vars[] = {"JIFFY_RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", NULL};
  static const char* const size_vars[] = {"JIFFY_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", NULL};
  rank = env_int(rank_vars, 0);
  size = env_int(size_vars, width);
  if (size != width) {
    fprintf(stderr, "work %s: the launcher says %d ranks, expected %d\n", id, size, width);
    return 99;
  }
  long long burned = burn(ms);
  sum = expect; /* no communication: the same output as the MPI builds */
#endif
  if (sum != expect) {
    fprintf(stderr, "work %s: rank %d: allreduce gave %ld, expected %ld\n", id, rank, sum, expect);
    code = 98;
  }
  if (rank == 0) {
    for (int i = 1; i <= lines; i++) printf("%s line %d of %d: sum %ld\n", id, i, lines, sum);
    printf("%s done\n", id);
    fflush(stdout);
  }
#ifdef USE_MPI
  MPI_Finalize();
#endif
  log_rank(id, rank, size, burned, code);
  return code;
}
