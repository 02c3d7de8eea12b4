/* MPI_Comm_spawn, parent and worker in one program (tests/e2e/test_spawn.py).
 *
 *   spawn parent N    the world spawns N workers of this program (root 0);
 *                     rank 0 prints one line per worker, then "spawned N ok"
 *   spawn self N      every rank spawns N workers on MPI_COMM_SELF at once
 *   spawn multiple    spawn_multiple: 1 worker of this program, 2 of
 *                     spawn_other.<flavour> beside it; prints their appnums
 *   spawn nested      a worker that spawns a worker; prints "nested ok"
 *   spawn missing     spawns programs that are not there (MPI_ERRORS_RETURN);
 *                     prints "spawn failed: class C", exit 3 if one started
 *   spawn hold S N    N workers print "worker pid P" and sleep S s, then reply
 *                     (S a path: until that file exists)
 *   spawn fail C      1 worker exits with code C after MPI_Finalize
 *   spawn loop K      spawns 1 worker K times in a row (each after the last
 *                     one disconnected); prints "spawned K in turn ok"
 *   spawn abort C     1 worker calls MPI_Abort(its world, C)
 *   spawn nofinalize  1 worker replies, then exits 0 without MPI_Finalize
 *   spawn nonmpi P    spawns program P (default /bin/true), which never
 *                     connects (MPI_ERRORS_RETURN); prints "spawn failed:
 *                     class C", exit 3 if it succeeded
 *
 *   spawn prog P N [W] spawns N workers of program P exactly as given (a bare
 *                     name is looked up in PATH, a relative one in the
 *                     working directory; W: the "wdir" info); rank 0 prints
 *                     one line per worker, then "spawned N ok"
 *
 * Every process prints "<who> pid P cpus LIST" (its affinity), so a test can
 * check that no two processes of any job share a CPU. A worker sends back
 * (world rank, world size, appnum, pid). */
#define _GNU_SOURCE
#include <mpi.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void cpus(char* out, size_t n) {
  cpu_set_t set;
  out[0] = 0;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return;
  size_t len = 0;
  for (int c = 0; c < CPU_SETSIZE && len + 8 < n; ++c) {
    if (CPU_ISSET(c, &set)) len += (size_t)snprintf(out + len, n - len, len ? ",%d" : "%d", c);
  }
}

static void whoami(const char* who, int rank) {
  char list[1024];
  cpus(list, sizeof list);
  printf("%s %d pid %d cpus %s\n", who, rank, (int)getpid(), list);
  fflush(stdout);
}

static void self_path(char* out, size_t n) {
  ssize_t len = readlink("/proc/self/exe", out, n - 1);
  out[len > 0 ? len : 0] = 0;
}

/* Rank 0 of the parents collects one report per worker. */
static void collect(MPI_Comm inter, int n) {
  for (int i = 0; i < n; ++i) {
    int r[4];
    MPI_Recv(r, 4, MPI_INT, i, 0, inter, MPI_STATUS_IGNORE);
    printf("worker %d/%d appnum %d pid %d\n", r[0], r[1], r[2], r[3]);
  }
  fflush(stdout);
}

static MPI_Comm spawn_self(int n, const char* mode, MPI_Comm comm) {
  char path[4096];
  self_path(path, sizeof path);
  char* args[] = {(char*)mode, NULL};
  MPI_Comm inter;
  MPI_Comm_spawn(path, args, n, MPI_INFO_NULL, 0, comm, &inter, MPI_ERRCODES_IGNORE);
  return inter;
}

static int worker(MPI_Comm parent, const char* mode, char** argv) {
  int rank, size, flag, *appnum;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_APPNUM, &appnum, &flag);
  whoami("worker", rank);
  if (strcmp(mode, "worker-abort") == 0) MPI_Abort(MPI_COMM_WORLD, atoi(argv[2]));
  if (strcmp(mode, "worker-hold") == 0) {
    printf("worker pid %d\n", (int)getpid());
    fflush(stdout);
    if (argv[2][0] == '/') {
      while (access(argv[2], F_OK) != 0) usleep(20000); /* until the test releases it */
    } else {
      sleep((unsigned)atoi(argv[2]));
    }
  }
  if (strcmp(mode, "worker-nested") == 0) {
    MPI_Comm inter = spawn_self(1, "worker", MPI_COMM_SELF);
    collect(inter, 1);
    MPI_Comm_disconnect(&inter);
  }
  int r[4] = {rank, size, flag ? *appnum : -1, (int)getpid()};
  MPI_Send(r, 4, MPI_INT, 0, 0, parent);
  MPI_Comm_disconnect(&parent);
  if (strcmp(mode, "worker-nofinalize") == 0) _exit(0);
  MPI_Finalize();
  if (strcmp(mode, "worker-fail") == 0) return atoi(argv[2]);
  return 0;
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm parent;
  MPI_Comm_get_parent(&parent);
  const char* mode = argc > 1 ? argv[1] : "parent";
  if (parent != MPI_COMM_NULL) return worker(parent, mode, argv);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  whoami("parent", rank);
  int n = argc > 2 ? atoi(argv[2]) : 1;
  if (strcmp(mode, "parent") == 0) {
    MPI_Comm inter = spawn_self(n, "worker", MPI_COMM_WORLD);
    if (rank == 0) collect(inter, n);
    MPI_Comm_disconnect(&inter);
    if (rank == 0) printf("spawned %d ok\n", n);
  } else if (strcmp(mode, "self") == 0) {
    MPI_Comm inter = spawn_self(n, "worker", MPI_COMM_SELF);
    collect(inter, n);
    MPI_Comm_disconnect(&inter);
    printf("rank %d spawned %d ok\n", rank, n);
  } else if (strcmp(mode, "hold") == 0) {
    char path[4096];
    self_path(path, sizeof path);
    int workers = argc > 3 ? atoi(argv[3]) : 1;
    char* args[] = {"worker-hold", argv[2], NULL};
    MPI_Comm inter;
    MPI_Comm_spawn(path, args, workers, MPI_INFO_NULL, 0, MPI_COMM_WORLD, &inter, MPI_ERRCODES_IGNORE);
    if (rank == 0) collect(inter, workers);
    MPI_Comm_disconnect(&inter);
    if (rank == 0) printf("spawned %d ok\n", workers);
  } else if (strcmp(mode, "fail") == 0 || strcmp(mode, "abort") == 0 || strcmp(mode, "nofinalize") == 0) {
    char path[4096], worker_mode[32];
    self_path(path, sizeof path);
    snprintf(worker_mode, sizeof worker_mode, "worker-%s", mode);
    char* args[] = {worker_mode, argc > 2 ? argv[2] : "0", NULL};
    MPI_Comm inter;
    MPI_Comm_spawn(path, args, 1, MPI_INFO_NULL, 0, MPI_COMM_WORLD, &inter, MPI_ERRCODES_IGNORE);
    if (rank == 0) collect(inter, 1);
    MPI_Comm_disconnect(&inter);
  } else if (strcmp(mode, "nested") == 0) {
    MPI_Comm inter = spawn_self(1, "worker-nested", MPI_COMM_WORLD);
    if (rank == 0) collect(inter, 1);
    MPI_Comm_disconnect(&inter);
    if (rank == 0) printf("nested ok\n");
  } else if (strcmp(mode, "multiple") == 0) {
    char self[4096], other[4096];
    self_path(self, sizeof self);
    /* spawn_other.<flavour> beside spawn.<flavour> */
    char* slash = strrchr(self, '/');
    char* dot = strrchr(self, '.');
    snprintf(other, sizeof other, "%.*s/spawn_other%s", (int)(slash - self), self, dot && dot > slash ? dot : "");
    char* cmds[2] = {self, other};
    char* args0[] = {"worker", NULL};
    char* args1[] = {NULL};
    char** argvs[2] = {args0, args1};
    int procs[2] = {1, 2};
    MPI_Info infos[2] = {MPI_INFO_NULL, MPI_INFO_NULL};
    MPI_Comm inter;
    MPI_Comm_spawn_multiple(2, cmds, argvs, procs, infos, 0, MPI_COMM_WORLD, &inter, MPI_ERRCODES_IGNORE);
    if (rank == 0) collect(inter, 3);
    MPI_Comm_disconnect(&inter);
    if (rank == 0) printf("multiple ok\n");
  } else if (strcmp(mode, "prog") == 0) {
    int workers = argc > 3 ? atoi(argv[3]) : 1;
    char* args[] = {"worker", NULL};
    MPI_Info info = MPI_INFO_NULL;
    if (argc > 4) {
      MPI_Info_create(&info);
      MPI_Info_set(info, "wdir", argv[4]);
    }
    MPI_Comm inter;
    MPI_Comm_spawn(argv[2], args, workers, info, 0, MPI_COMM_WORLD, &inter, MPI_ERRCODES_IGNORE);
    if (info != MPI_INFO_NULL) MPI_Info_free(&info);
    if (rank == 0) collect(inter, workers);
    MPI_Comm_disconnect(&inter);
    if (rank == 0) printf("spawned %d ok\n", workers);
  } else if (strcmp(mode, "loop") == 0) {
    for (int i = 0; i < n; ++i) {
      MPI_Comm inter = spawn_self(1, "worker", MPI_COMM_WORLD);
      if (rank == 0) collect(inter, 1);
      MPI_Comm_disconnect(&inter);
    }
    if (rank == 0) printf("spawned %d in turn ok\n", n);
  } else if (strcmp(mode, "nonmpi") == 0) {
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
    char* prog = argc > 2 ? argv[2] : "/bin/true";
    MPI_Comm inter;
    int rc = MPI_Comm_spawn(prog, MPI_ARGV_NULL, 1, MPI_INFO_NULL, 0, MPI_COMM_SELF, &inter, MPI_ERRCODES_IGNORE);
    if (rc == MPI_SUCCESS) {
      printf("spawn of %s succeeded\n", prog);
      MPI_Finalize();
      return 3;
    }
    int cls;
    MPI_Error_class(rc, &cls);
    printf("spawn failed: class %d\n", cls);
  } else if (strcmp(mode, "missing") == 0) {
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
    const char* names[] = {"/nonexistent/program", "no-such-program-on-path"};
    for (int i = 0; i < 2; ++i) {
      MPI_Comm inter;
      int rc = MPI_Comm_spawn((char*)names[i], MPI_ARGV_NULL, 1, MPI_INFO_NULL, 0, MPI_COMM_SELF, &inter,
                              MPI_ERRCODES_IGNORE);
      if (rc == MPI_SUCCESS) {
        printf("spawn of %s succeeded\n", names[i]);
        MPI_Finalize();
        return 3;
      }
      int cls;
      MPI_Error_class(rc, &cls);
      printf("spawn failed: class %d\n", cls);
      fflush(stdout);
    }
  }
  MPI_Finalize();
  return 0;
}
