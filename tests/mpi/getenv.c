/* Prints "<rank> NAME=value" (or "<rank> NAME unset") for each NAME given,
 * as the rank's environment had it when it started: what a launcher gave
 * an MPI program (tests/e2e/test_mpi.py). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char** argv) {
  int rank;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  for (int i = 1; i < argc; ++i) {
    const char* v = getenv(argv[i]);
    if (v) printf("%d %s=%s\n", rank, argv[i], v);
    else printf("%d %s unset\n", rank, argv[i]);
  }
  MPI_Finalize();
  return 0;
}
