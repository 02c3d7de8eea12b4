/* features DIR: the parts of MPI whose components jiffy leaves Open MPI to
 * choose (osc, io, coll, non-blocking collectives), used once each so that
 * a default that narrows Open MPI's frameworks cannot break them unseen:
 * one-sided put over MPI_Win_create, a shared-memory window, collective
 * MPI-IO to DIR/features.<pid of rank 0>, an MPI_Iallreduce and a
 * communicator split. Rank 0 prints "features ok", or "features BAD: what";
 * exit status 0 only if every rank saw every part work. */
#include <mpi.h>
#include <stdio.h>
#include <unistd.h>

static int one_sided(int rank, int size) {
  int got = -1, mine = rank;
  MPI_Win win;
  MPI_Win_create(&got, sizeof got, sizeof got, MPI_INFO_NULL, MPI_COMM_WORLD, &win);
  MPI_Win_fence(0, win);
  MPI_Put(&mine, 1, MPI_INT, (rank + 1) % size, 0, 1, MPI_INT, win);
  MPI_Win_fence(0, win);
  MPI_Win_free(&win);
  return got == (rank + size - 1) % size;
}

static int shared_window(int rank, int size) {
  int* mine;
  MPI_Win win;
  MPI_Win_allocate_shared(sizeof(int), sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD, &mine, &win);
  *mine = rank;
  MPI_Win_fence(0, win);
  MPI_Aint bytes;
  int unit, *next;
  MPI_Win_shared_query(win, (rank + 1) % size, &bytes, &unit, &next);
  int ok = *next == (rank + 1) % size;
  MPI_Win_fence(0, win);
  MPI_Win_free(&win);
  return ok;
}

static int file_io(const char* dir, int rank, int size) {
  int tag = (int)getpid();
  MPI_Bcast(&tag, 1, MPI_INT, 0, MPI_COMM_WORLD);
  char path[4096];
  snprintf(path, sizeof path, "%s/features.%d", dir, tag);
  MPI_File f;
  if (MPI_File_open(MPI_COMM_WORLD, path, MPI_MODE_CREATE | MPI_MODE_RDWR | MPI_MODE_DELETE_ON_CLOSE,
                    MPI_INFO_NULL, &f) != MPI_SUCCESS) {
    return 0;
  }
  int back = -1;
  MPI_File_write_at_all(f, rank * (MPI_Offset)sizeof(int), &rank, 1, MPI_INT, MPI_STATUS_IGNORE);
  MPI_File_sync(f);
  MPI_Barrier(MPI_COMM_WORLD);
  MPI_File_read_at_all(f, ((rank + 1) % size) * (MPI_Offset)sizeof(int), &back, 1, MPI_INT, MPI_STATUS_IGNORE);
  MPI_File_close(&f);
  return back == (rank + 1) % size;
}

static int collectives(int rank, int size) {
  int sum = 0;
  MPI_Request req;
  MPI_Iallreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD, &req);
  MPI_Wait(&req, MPI_STATUS_IGNORE);
  MPI_Comm half;
  MPI_Comm_split(MPI_COMM_WORLD, rank % 2, rank, &half);
  int half_size;
  MPI_Comm_size(half, &half_size);
  MPI_Comm_free(&half);
  return sum == size * (size - 1) / 2 && half_size == (size + 1 - rank % 2) / 2;
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const char* dir = argc > 1 ? argv[1] : ".";
  /* One statement each: every rank must make the collective calls in the
   * same order, which an initialiser list's evaluation does not promise. */
  struct {
    const char* name;
    int ok;
  } parts[] = {{"one-sided", 0}, {"shared window", 0}, {"MPI-IO", 0}, {"collectives", 0}};
  parts[0].ok = one_sided(rank, size);
  parts[1].ok = shared_window(rank, size);
  parts[2].ok = file_io(dir, rank, size);
  parts[3].ok = collectives(rank, size);
  int all = 1;
  for (unsigned i = 0; i < sizeof parts / sizeof parts[0]; ++i) {
    int everywhere;
    MPI_Allreduce(&parts[i].ok, &everywhere, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    if (!everywhere && rank == 0) printf("features BAD: %s\n", parts[i].name);
    all = all && everywhere;
  }
  if (all && rank == 0) printf("features ok\n");
  MPI_Finalize();
  return all ? 0 : 1;
}
