/* Prints where each rank runs, one line per rank:
 * "rank R of N host H cpus C" (C: the rank's CPU affinity, "0,1"), after an
 * allreduce over the world, so that every rank must have reached the others
 * (ranks on two Slurm nodes included). */
#define _GNU_SOURCE
#include <mpi.h>
#include <sched.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char** argv) {
  int rank, size, one = 1, sum = 0;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  char host[256] = "?";
  gethostname(host, sizeof host);
  char cpus[1024] = "";
  int n = 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    for (int c = 0; c < CPU_SETSIZE && n < (int)sizeof cpus - 8; c++) {
      if (CPU_ISSET(c, &set)) n += snprintf(cpus + n, sizeof cpus - n, n ? ",%d" : "%d", c);
    }
  }
  printf("rank %d of %d host %s cpus %s sum %d\n", rank, size, host, cpus, sum);
  MPI_Finalize();
  return 0;
}
