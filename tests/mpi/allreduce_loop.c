/* allreduce_loop [N]: N MPI_Allreduce calls (default 2000), then rank 0
 * prints "allreduce_loop N calls S s" (the loop's wall time between two
 * barriers). The measure of ranks that share a core: spinning ranks wait
 * for each other's time slices. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char** argv) {
  int rank, size;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int n = argc > 1 ? atoi(argv[1]) : 2000;
  MPI_Barrier(MPI_COMM_WORLD);
  double t0 = MPI_Wtime();
  int bad = 0;
  for (int i = 0; i < n; ++i) {
    int sum = 0;
    MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    bad |= sum != size * (size - 1) / 2;
  }
  MPI_Barrier(MPI_COMM_WORLD);
  double t = MPI_Wtime() - t0;
  if (rank == 0) printf("allreduce_loop %d calls %.3f s\n", n, t);
  if (bad) fprintf(stderr, "allreduce_loop: rank %d got a wrong sum\n", rank);
  MPI_Finalize();
  return bad;
}
