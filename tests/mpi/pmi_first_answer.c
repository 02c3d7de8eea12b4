/* An MPICH rank reduced to its first PMI-1 exchange (bench/front_bench.py,
 * tests/e2e/test_front_timeout.py): linked with libmpich (so that launchers
 * treat it as an MPICH program, and it pays libmpich's loading before main,
 * as hello.mpich does), it writes PMI-1's "init" on PMI_FD at once in main
 * and prints how long the answer took, in microseconds, then finalizes as
 * MPI_Finalize would: how long a rank waits in MPI_Init for its launcher,
 * the rest of MPI_Init left out.
 *
 * `pmi_first_answer parent`: speaks no PMI; prints the base name of its
 * parent's executable once it is no longer "jiffy" (the front), or after
 * 5 s: which launcher serves an MPICH rank before its first PMI write. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libgen.h>
#include <limits.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

/* Sends one command and reads its one-line answer. */
static int exchange(int fd, const char* cmd, char* reply, size_t size) {
  if (write(fd, cmd, strlen(cmd)) != (ssize_t)strlen(cmd)) return -1;
  size_t n = 0;
  while (n + 1 < size) {
    ssize_t k = read(fd, reply + n, 1);
    if (k <= 0) return -1;
    if (reply[n++] == '\n') break;
  }
  reply[n] = '\0';
  return 0;
}

static int print_parent(void) {
  char path[64], exe[PATH_MAX];
  snprintf(path, sizeof path, "/proc/%d/exe", (int)getppid());
  for (double t0 = now_us();;) {
    ssize_t n = readlink(path, exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    if (strcmp(basename(exe), "jiffy") != 0 || now_us() - t0 > 5e6) break;
    usleep(1000);
  }
  printf("%s\n", basename(exe));
  return 0;
}

int main(int argc, char** argv) {
  if (argc > 1 && strcmp(argv[1], "parent") == 0) return print_parent();
  const char* v = getenv("PMI_FD");
  if (!v) {
    int flag; /* keeps libmpich linked */
    MPI_Initialized(&flag);
    return 2;
  }
  int fd = atoi(v);
  char reply[1024];
  double t0 = now_us();
  if (exchange(fd, "cmd=init pmi_version=1 pmi_subversion=1\n", reply, sizeof reply) != 0) return 1;
  double waited = now_us() - t0;
  if (exchange(fd, "cmd=finalize\n", reply, sizeof reply) != 0) return 1;
  printf("%.1f\n", waited);
  return 0;
}
