/* For MPMD launches: prints "mpmd <argv[1]> rank <r> of <n> appnum <a>",
   where appnum is MPI_APPNUM of MPI_COMM_WORLD. */
#include <mpi.h>
#include <stdio.h>

int main(int argc, char** argv) {
  int rank, size, flag, *appnum;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_APPNUM, &appnum, &flag);
  printf("mpmd %s rank %d of %d appnum %d\n", argc > 1 ? argv[1] : "-", rank, size,
         flag ? *appnum : -1);
  MPI_Finalize();
  return 0;
}
