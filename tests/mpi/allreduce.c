/* Sums the ranks with MPI_Allreduce and checks the result on every rank. */
#include <mpi.h>
#include <stdio.h>

int main(int argc, char** argv) {
  int rank, size, sum = 0;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  int ok = sum == size * (size - 1) / 2;
  if (!ok) fprintf(stderr, "allreduce: rank %d got %d\n", rank, sum);
  if (rank == 0 && ok) printf("allreduce ok %d\n", sum);
  MPI_Finalize();
  return ok ? 0 : 1;
}
