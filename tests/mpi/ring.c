/* Passes a token around all ranks; checks the world size against argv[1]
   (when given) and that the token visited every rank. Exit 0 on success. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char** argv) {
  int rank, size, token = 0;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (argc > 1 && size != atoi(argv[1])) {
    fprintf(stderr, "ring: world size %d, expected %s\n", size, argv[1]);
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  int next = (rank + 1) % size, prev = (rank + size - 1) % size;
  if (size == 1) {
    token = 1;
  } else if (rank == 0) {
    token = 1;
    MPI_Send(&token, 1, MPI_INT, next, 0, MPI_COMM_WORLD);
    MPI_Recv(&token, 1, MPI_INT, prev, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  } else {
    MPI_Recv(&token, 1, MPI_INT, prev, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    token++;
    MPI_Send(&token, 1, MPI_INT, next, 0, MPI_COMM_WORLD);
  }
  if (rank == 0) {
    if (token != size) {
      fprintf(stderr, "ring: token %d, expected %d\n", token, size);
      MPI_Abort(MPI_COMM_WORLD, 3);
    }
    printf("ring ok %d\n", size);
  }
  MPI_Finalize();
  return 0;
}
