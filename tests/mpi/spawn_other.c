/* The second program of spawn's "multiple" mode (tests/mpi/spawn.c): a
 * worker that reports (rank, size, appnum, pid) to its parent's rank 0. */
#define _GNU_SOURCE
#include <mpi.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm parent;
  MPI_Comm_get_parent(&parent);
  if (parent == MPI_COMM_NULL) {
    printf("spawn_other: not spawned\n");
    MPI_Finalize();
    return 2;
  }
  int rank, size, flag, *appnum;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_APPNUM, &appnum, &flag);
  int r[4] = {rank, size, flag ? *appnum : -1, (int)getpid()};
  MPI_Send(r, 4, MPI_INT, 0, 0, parent);
  MPI_Comm_disconnect(&parent);
  MPI_Finalize();
  return 0;
}
