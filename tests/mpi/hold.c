/* hold FILE: MPI_Init, rank 0 prints "up", then every rank waits until FILE
 * exists (the test's signal to finish), then MPI_Finalize. A job that stays
 * up, with its PMIx server serving, for as long as a test needs. */
#include <mpi.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char** argv) {
  int rank;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0) {
    printf("up\n");
    fflush(stdout);
  }
  const struct timespec tick = {0, 10 * 1000 * 1000};
  while (argc > 1 && access(argv[1], F_OK) != 0) nanosleep(&tick, NULL);
  MPI_Finalize();
  return 0;
}
