/* Prints "<rank> finalize_us=N": how long this rank's MPI_Finalize took, in
 * microseconds (tests/e2e/test_mpi.py: Open MPI's finalize must not wait on
 * a delayed TCP ACK of our PMIx server, src/pmi/quick_ack.cc). */
#include <mpi.h>
#include <stdio.h>
#include <time.h>

static long long now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

int main(int argc, char** argv) {
  int rank;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Barrier(MPI_COMM_WORLD);
  long long t0 = now_us();
  MPI_Finalize();
  printf("%d finalize_us=%lld\n", rank, now_us() - t0);
  return 0;
}
