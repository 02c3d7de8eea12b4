#define _GNU_SOURCE
#include "front/job.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "launch/rank_defaults.h"

extern char** environ;

void launcher_signals(sigset_t* mask) {
  static const int sigs[] = {SIGCHLD, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
  sigemptyset(mask);
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; ++i) sigaddset(mask, sigs[i]);
}

enum { kStartedDelayNs = 2 * 1000 * 1000 };

static long long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* ---------------------------------------------------------------- prepare */

void random_tag(char out[33]) {
  unsigned char b[16];
  if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    snprintf((char*)b, sizeof b, "%08x%07lx", (unsigned)getpid(), (unsigned long)t.tv_nsec);
  }
  for (int i = 0; i < 16; ++i) sprintf(out + 2 * i, "%02x", b[i]);
}

/* "name=value", owned by the job (freed by job_free). */
static char* entry(struct job* job, const char* name, const char* value) {
  char* e = malloc(strlen(name) + strlen(value) + 2);
  if (!e) _exit(1);
  /* Grown by doubling (16, 32, 64...): the arena's realloc always copies,
   * and a wide job makes tens of thousands of entries. */
  const int n = job->nowned;
  if (n == 0 || (n >= 16 && (n & (n - 1)) == 0)) {
    char** owned = realloc(job->owned, (n ? 2 * (size_t)n : 16) * sizeof *owned);
    if (!owned) _exit(1);
    job->owned = owned;
  }
  sprintf(e, "%s=%s", name, value);
  job->owned[job->nowned++] = e;
  return e;
}

/* Environment::set: replace in place, else append. Returns the slot. */
static int env_set(struct job* job, char** env, int* n, const char* name, const char* value) {
  size_t l = strlen(name);
  for (int i = 0; i < *n; ++i) {
    if (strncmp(env[i], name, l) == 0 && env[i][l] == '=') {
      env[i] = entry(job, name, value);
      return i;
    }
  }
  env[*n] = entry(job, name, value);
  env[++*n] = NULL;
  return *n - 1;
}

struct env_target {
  struct job* job;
  char** env;
  int* n;
};

static void set_rendezvous_var(void* ctx, const char* name, const char* value) {
  struct env_target* t = ctx;
  env_set(t->job, t->env, t->n, name, value);
}

/* What jiffy-launch gives rank r of a PMI-1 job (Job::start, then
 * Bootstrap::prepare_rank), in the same order; the job id and the cores
 * are filled in from the grant. */
static void rank_environment(struct job* job, int r) {
  int count = 0;
  while (environ[count]) ++count;
  char** env = malloc(((size_t)count + 48) * sizeof *env);
  if (!env) _exit(1);
  int n = 0;
  for (int i = 0; i < count; ++i) {
    if (strchr(environ[i], '=')) env[n++] = environ[i];
  }
  env[n] = NULL;
  char rank[16], size[16], fd[16];
  snprintf(rank, sizeof rank, "%d", r);
  snprintf(size, sizeof size, "%d", job->n);
  snprintf(fd, sizeof fd, "%d", job->ranks[r].child_fd);
  struct rank* rk = &job->ranks[r];
  rk->env_job = env_set(job, env, &n, "JIFFY_JOB_ID", "");
  env_set(job, env, &n, "JIFFY_RANK", rank);
  env_set(job, env, &n, "JIFFY_SIZE", size);
  env_set(job, env, &n, "JIFFY_LOCAL_RANK", rank);
  env_set(job, env, &n, "JIFFY_LOCAL_SIZE", size);
  env_set(job, env, &n, "JIFFY_APPNUM", "0");
  rk->env_cores = env_set(job, env, &n, "JIFFY_CORES", "");
  env_set(job, env, &n, "JIFFY_JOB_TAG", job->tag);
  env_set(job, env, &n, "PMI_FD", fd);
  env_set(job, env, &n, "PMI_RANK", rank);
  env_set(job, env, &n, "PMI_SIZE", size);
  env_set(job, env, &n, "MPI_LOCALNRANKS", size);
  env_set(job, env, &n, "MPI_LOCALRANKID", rank);
  if (job->topology && !getenv("HWLOC_XMLFILE")) { /* Bootstrap::prepare_rank's topology cache */
    env_set(job, env, &n, "HWLOC_XMLFILE", job->topology);
    if (!getenv("HWLOC_THISSYSTEM")) env_set(job, env, &n, "HWLOC_THISSYSTEM", "1");
    if (!getenv("HWLOC_PLUGINS_PATH")) env_set(job, env, &n, "HWLOC_PLUGINS_PATH", JIFFY_NO_HWLOC_PLUGINS);
  }
  if (job->ucx_shm && job->kind == PROGRAM_MPICH && !getenv("UCX_TLS")) {
    env_set(job, env, &n, "UCX_TLS", JIFFY_UCX_SHM_TLS); /* Bootstrap::prepare_rank's */
    if (!getenv("UCX_MODULES")) env_set(job, env, &n, "UCX_MODULES", JIFFY_UCX_SHM_MODULES);
    if (!getenv("UCX_MM_RX_BUFS_GROW")) env_set(job, env, &n, "UCX_MM_RX_BUFS_GROW", JIFFY_UCX_SHM_RX_BUFS_GROW);
  }
  if (job->rendezvous_port) {
    struct env_target t = {job, env, &n};
    rendezvous_environment(r, job->n, job->tag, job->rendezvous_port, job->single_node_ompi, set_rendezvous_var,
                           &t);
  }
  rk->env = env;
}

int job_prepare(struct job* job, int n) {
  job->n = n;
  job->ranks = calloc((size_t)n, sizeof *job->ranks);
  if (!job->ranks) return -1;
  job->devnull = n > 1 ? open("/dev/null", O_RDONLY | O_CLOEXEC) : -1;
  if (n > 1 && job->devnull < 0) return -1;
  /* A plain program may be a wrapper of an Open MPI one (valgrind, sh -c):
   * it gets the PMIx rendezvous, as from jiffy-launch. */
  if (job->kind == PROGRAM_PLAIN) {
    job->rendezvous_fd = rendezvous_open(&job->rendezvous_port);
    if (job->rendezvous_fd < 0) return -1;
  }
  for (int r = 0; r < n; ++r) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return -1;
    job->ranks[r].pmi_fd = sv[0];
    job->ranks[r].child_fd = sv[1];
    rank_environment(job, r);
  }
  return 0;
}

/* ------------------------------------------------------------------ grant */

/* The integers of a JSON array, into a CPU set and/or "0,1" text. */
static int int_list(const struct json* nodes, int arr, cpu_set_t* set, char** text) {
  if (arr < 0 || nodes[arr].type != JSON_ARRAY) return -1;
  size_t cap = nodes[arr].len + 1, used = 0;
  char* s = text ? calloc(cap, 1) : NULL;
  if (text && !s) return -1;
  for (int e = nodes[arr].first; e >= 0; e = nodes[e].next) {
    long long v = json_uint(nodes, e);
    if (v < 0 || (set && v >= CPU_SETSIZE)) {
      free(s);
      return -1;
    }
    if (set) CPU_SET((int)v, set);
    if (s) used += (size_t)snprintf(s + used, cap - used, "%s%lld", used ? "," : "", v);
  }
  if (text) *text = s;
  return 0;
}

int job_from_grant(struct job* job, const struct json* nodes) {
  int ranks = json_member(nodes, 0, "ranks");
  long long id = json_uint(nodes, json_member(nodes, 0, "job"));
  if (id <= 0 || ranks < 0 || nodes[ranks].type != JSON_ARRAY) return -1;
  job->id = (unsigned long long)id;
  char num[32];
  snprintf(num, sizeof num, "%llu", job->id);
  size_t cores_used = 0;
  int r = 0;
  for (int e = nodes[ranks].first; e >= 0; e = nodes[e].next, ++r) {
    if (r >= job->n) return -1;
    struct rank* rk = &job->ranks[r];
    CPU_ZERO(&rk->cpus);
    char* cores = NULL;
    int gpus = json_member(nodes, e, "gpus");
    if (gpus < 0 || nodes[gpus].first >= 0) return -1; /* we asked for none */
    if (int_list(nodes, json_member(nodes, e, "cpus"), &rk->cpus, NULL) != 0 ||
        int_list(nodes, json_member(nodes, e, "cores"), NULL, &cores) != 0) {
      return -1;
    }
    rk->bound = CPU_COUNT(&rk->cpus) > 0;
    rk->env[rk->env_job] = entry(job, "JIFFY_JOB_ID", num);
    rk->env[rk->env_cores] = entry(job, "JIFFY_CORES", cores);
    /* For the history record: "0;1", whole ranks only. */
    size_t len = strlen(cores);
    if (!job->cores_cut && cores_used + len + 2 <= sizeof job->cores) {
      if (r) job->cores[cores_used++] = ';';
      memcpy(job->cores + cores_used, cores, len + 1);
      cores_used += len;
    } else {
      job->cores_cut = 1;
    }
    free(cores);
  }
  if (r != job->n) return -1;
  /* Ranks sharing CPUs (the daemon bound each to all of the job's: see
   * job_shares_cpus in src/launch/job.cc): Open MPI yields instead of
   * spinning. */
  int sharing = job->n > 1 && CPU_COUNT(&job->ranks[0].cpus) > 0;
  for (int i = 1; sharing && i < job->n; ++i) sharing = CPU_EQUAL(&job->ranks[i].cpus, &job->ranks[0].cpus);
  /* Only ranks that share cores share CPUs (the front binds to cores). */
  job->oversubscribed = sharing;
  if (sharing && !getenv("OMPI_MCA_mpi_yield_when_idle")) {
    for (int i = 0; i < job->n; ++i) {
      char** env = job->ranks[i].env;
      int n = 0;
      while (env[n]) ++n;
      env_set(job, env, &n, "OMPI_MCA_mpi_yield_when_idle", "1");
    }
  }
  return 0;
}

void job_free(struct job* job) {
  for (int i = 0; i < job->nowned; ++i) free(job->owned[i]);
  free(job->owned);
  for (int r = 0; r < job->n; ++r) free(job->ranks[r].env);
  free(job->ranks);
  free(job->grant_text);
  job->owned = NULL;
  job->nowned = 0;
  job->ranks = NULL;
  job->n = 0;
  job->grant_text = NULL;
}

/* ------------------------------------------------------------------ spawn */

struct child {
  const char* path;
  char** argv;
  char** envp;
  const cpu_set_t* cpus; /* NULL: inherit */
  pid_t pgid;            /* 0: lead a new group */
  pid_t parent;
  int stdin_fd;
  int pmi_fd; /* the only descriptor of ours a rank keeps (the lane's is not) */
  int err;     /* written by the child */
};

/* Runs on a private stack, sharing our memory until exec (CLONE_VM|
 * CLONE_VFORK, as spawn.cc): system calls only. */
static int child_main(void* p) {
  struct child* c = p;
  setpgid(0, c->pgid);
  prctl(PR_SET_PDEATHSIG, SIGKILL); /* a rank never outlives its launcher */
  if (getppid() != c->parent) _exit(1);
  /* Default dispositions for what a caller may have ignored (a script's
   * background job ignores SIGINT and SIGQUIT): ranks get them as under
   * mpiexec, and Ctrl-C, which we forward, reaches them. */
  struct sigaction dfl = {.sa_handler = SIG_DFL};
  static const int reset[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
  for (size_t i = 0; i < sizeof reset / sizeof reset[0]; ++i) sigaction(reset[i], &dfl, NULL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  if ((c->cpus && sched_setaffinity(0, sizeof *c->cpus, c->cpus) != 0) ||
      (c->stdin_fd != 0 && dup2(c->stdin_fd, 0) < 0) || fcntl(c->pmi_fd, F_SETFD, 0) != 0) {
    c->err = errno;
    _exit(127);
  }
  execve(c->path, c->argv, c->envp);
  c->err = errno;
  _exit(127);
}

/* The order to start ranks in: rank 0 (it leads the process group), then
 * the first rank of every other CPU set, then the rest. When ranks share
 * CPUs (more ranks than cores), each CPU gets a rank before any gets a
 * second, instead of the launcher spawning behind the ranks running on its
 * own CPU: -n 4 on 2 cores starts in 2.0 ms instead of 2.9 ms. */
static int* spawn_order(const struct job* job) {
  int* order = malloc((size_t)job->n * sizeof *order);
  char* started = calloc((size_t)job->n, 1);
  char seen[CPU_SETSIZE] = {0};
  if (!order || !started) _exit(1);
  int k = 0;
  for (int pass = 0; pass < 2; ++pass) {
    for (int r = 0; r < job->n; ++r) {
      int first = 0;
      while (first < CPU_SETSIZE - 1 && !CPU_ISSET(first, &job->ranks[r].cpus)) ++first;
      if (started[r] || (pass == 0 && r > 0 && seen[first])) continue;
      seen[first] = 1;
      started[r] = 1;
      order[k++] = r;
    }
  }
  free(started);
  return order;
}

/* The rank, in spawn order, that is the last to be the first on its CPUs. */
static int last_first_on_cpu(const struct job* job, const int* order) {
  char seen[CPU_SETSIZE] = {0};
  int last = order[0];
  for (int i = 0; i < job->n; ++i) {
    int first = 0;
    while (first < CPU_SETSIZE - 1 && !CPU_ISSET(first, &job->ranks[order[i]].cpus)) ++first;
    if (!seen[first]) last = order[i];
    seen[first] = 1;
  }
  return last;
}

static void reap_all_ranks(struct job* job) {
  for (int r = 0; r < job->n; ++r) {
    if (job->ranks[r].pid > 0) {
      while (waitpid(job->ranks[r].pid, NULL, 0) < 0 && errno == EINTR) {
      }
    }
  }
}

int job_start(struct job* job, const char* program, char** argv) {
  /* Orphans of the ranks become ours (kill_descendants). */
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  int* order = spawn_order(job);
  /* Run on the job's CPUs that get their first rank last (see Job::start):
   * a child starts where its parent runs, and would wait there for the
   * time slice of a rank already loading before it could move on. */
  const struct rank* from = &job->ranks[last_first_on_cpu(job, order)];
  if (from->bound) sched_setaffinity(0, sizeof from->cpus, &from->cpus);
  static char stack[64 * 1024] __attribute__((aligned(64)));
  const pid_t self = getpid();
  int failed = -1, err = 0;
  for (int i = 0; i < job->n; ++i) {
    const int r = order[i];
    struct rank* rk = &job->ranks[r];
    struct child c = {program, argv, rk->env, rk->bound ? &rk->cpus : NULL, job->pgid, self,
                      r == 0 ? 0 : job->devnull, rk->child_fd, 0};
    pid_t pid = clone(child_main, stack + sizeof stack, CLONE_VM | CLONE_VFORK | SIGCHLD, &c);
    close(rk->child_fd);
    rk->child_fd = -1;
    if (pid < 0) {
      failed = r;
      err = errno;
      break;
    }
    rk->pid = pid;
    if (r == 0) {
      job->pgid = pid;
      lane_set_pgid(&job->lane, pid); /* what the daemon kills if we die */
    }
    if (c.err && failed < 0) {
      failed = r;
      err = c.err;
    }
  }
  free(order);
  if (job->devnull >= 0) close(job->devnull);
  if (failed >= 0) {
    snprintf(job->reason, sizeof job->reason, "cannot execute %s: %s", argv[0], strerror(err));
    fprintf(stderr, "jiffy: %s\n", job->reason);
    if (job->pgid > 0) kill(-job->pgid, SIGKILL);
    reap_all_ranks(job);
    return -1;
  }
  job->spawned_ns = now_ns();
  job->start_ns = realtime_ns();
  /* As Job::wait: the timeout counts from the ranks' start. */
  if (job->timeout_ns > 0) job->deadline_ns = job->spawned_ns + job->timeout_ns;
  return 0;
}

/* Names the job's process group to the daemon, which kills the group if we
 * die. Not before the job has run kStartedDelayNs: a job that ends sooner
 * needs no name (its ranks die with us, by their parent-death signal, and
 * the daemon finds anything they left by the tag it had with "submit", or
 * read in a lane slot's record), and a short launch saves the daemon a
 * wake-up. */
static void send_started(struct job* job) {
  if (job->started_sent || job->daemon_fd < 0) return;
  char started[128];
  int len = snprintf(started, sizeof started,
                     "{\"jobdir\":\"\",\"pgid\":%d,\"tag\":\"%s\",\"type\":\"started\"}", (int)job->pgid,
                     job->tag);
  frame_send(job->daemon_fd, started, (size_t)len); /* a failure shows as a hang-up */
  job->started_sent = 1;
}

/* --------------------------------------------------------------- hand-over */

/* A lane job is known to the daemon by the lane file's records only. Once
 * it has run kStartedDelayNs, or when jiffy-launch takes it over, it
 * connects and says what it took ("lane"): then the daemon supervises it
 * as any other (its hang-up means our death, and the job's processes are
 * killed at once). 0, or -1 when there is no daemon to reach. */
static int tell_daemon(struct job* job) {
  job->daemon_fd = daemon_connect(job->base);
  if (job->daemon_fd < 0) return -1;
  size_t cap = strlen(job->command) + strlen(job->cwd_json) + strlen(job->label_json) + 256;
  char* msg = malloc(cap);
  if (!msg) return 0; /* the daemon sees a silent connection: it waits for "started" */
  int len = snprintf(msg, cap,
                     "{\"command\":\"%s\",\"count\":%d,\"cwd\":\"%s\",\"first\":%d,\"job\":%llu,"
                     "\"label\":\"%s\",\"pid\":%d,\"tag\":\"%s\",\"type\":\"lane\",\"v\":1}",
                     job->command, job->lane.count, job->cwd_json, job->lane.first, job->lane.job,
                     job->label_json, (int)getpid(), job->tag);
  if (len > 0 && (size_t)len < cap) frame_send(job->daemon_fd, msg, (size_t)len);
  free(msg);
  return 0;
}

static _Noreturn void job_hand_over(struct job* job) {
  if (job->daemon_fd < 0 && tell_daemon(job) != 0) {
    /* No daemon: jiffy-launch gets a connection already closed, and goes on
     * as after a daemon's crash (starting one, re-attaching). */
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) _exit(1);
    close(sv[1]);
    job->daemon_fd = sv[0];
  }
  send_started(job); /* jiffy-launch takes over a job the daemon knows */
  size_t cap = strlen(job->grant_text) + strlen(job->cpus) + 280 + (size_t)job->n * 40;
  char* state = malloc(cap);
  if (!state) _exit(1);
  /* The times and the lane are for the job's history record. */
  /* The job keeps its deadline: its timeout counts from the ranks' start,
   * not from the hand-over. */
  char deadline[40] = "";
  if (job->deadline_ns) snprintf(deadline, sizeof deadline, " deadline=%lld", job->deadline_ns);
  char lane_fd[24] = "";
  if (job->lane.fd >= 0) snprintf(lane_fd, sizeof lane_fd, " lanefd=%d", job->lane.fd);
  int used = snprintf(state, cap, "v=1 daemon=%d cpus=%s tag=%s pgid=%d submit=%lld start=%lld%s%s%s ranks=",
                      job->daemon_fd, job->cpus, job->tag, (int)job->pgid, job->submit_ns, job->start_ns,
                      job->laned ? " lane=1" : "", lane_fd, deadline);
  fcntl(job->daemon_fd, F_SETFD, 0);
  /* jiffy-launch, the launcher from now on, holds the slots until every
   * process of the job is gone, and lets go of them (lanefd=) before it
   * says "finished", as lane_release does (its ranks run already: none of
   * them gets the descriptor). */
  if (job->lane.fd >= 0) fcntl(job->lane.fd, F_SETFD, 0);
  for (int r = 0; r < job->n; ++r) {
    struct rank* rk = &job->ranks[r];
    if (rk->pmi_fd >= 0) fcntl(rk->pmi_fd, F_SETFD, 0);
    used += snprintf(state + used, cap - (size_t)used, "%s%d:%d:%d", r ? "," : "", (int)rk->pid,
                     rk->pmi_fd, rk->done);
  }
  if (job->rendezvous_port) {
    fcntl(job->rendezvous_fd, F_SETFD, 0);
    used += snprintf(state + used, cap - (size_t)used, " pmix=%d", job->rendezvous_fd);
  }
  snprintf(state + used, cap - (size_t)used, " grant=%s", job->grant_text);
  hand_over(state);
}

/* ------------------------------------------------------------------- watch */

/* 1 when rank r has written to its PMI channel (it is an MPI process:
 * jiffy-launch serves it); closes the channel when the rank hung up. */
static int pmi_spoken(struct rank* rk) {
  if (rk->pmi_fd < 0) return 0;
  char c;
  ssize_t n = recv(rk->pmi_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return 1;
  if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
    close(rk->pmi_fd);
    rk->pmi_fd = -1;
  }
  return 0;
}

static int rank_of(const struct job* job, pid_t pid) {
  for (int r = 0; r < job->n; ++r) {
    if (job->ranks[r].pid == pid) return r;
  }
  return -1;
}

/* A rank's exit that the front can take: 0, and nothing said on PMI. */
static int clean_exit(struct job* job, int r, const siginfo_t* si) {
  return si->si_code == CLD_EXITED && si->si_status == 0 && !pmi_spoken(&job->ranks[r]);
}

/* Reaps what exited (all but rank 0, as Job::reap); hands over on any exit
 * that is not a clean one. */
static void reap(struct job* job) {
  for (;;) {
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid == 0) break;
    int r = rank_of(job, si.si_pid);
    if (r < 0) { /* something a rank left behind, adopted by us */
      waitpid(si.si_pid, NULL, 0);
      continue;
    }
    if (!clean_exit(job, r, &si)) job_hand_over(job);
    job->ranks[r].done = 1;
    if (r == 0) break;
    waitpid(si.si_pid, NULL, 0);
  }
  if (!job->ranks[0].done) return;
  for (int r = 1; r < job->n; ++r) {
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (job->ranks[r].done || waitid(P_PID, job->ranks[r].pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0 ||
        si.si_pid == 0) {
      continue;
    }
    if (!clean_exit(job, r, &si)) job_hand_over(job);
    job->ranks[r].done = 1;
    waitpid(si.si_pid, NULL, 0);
  }
}

/* Kills and reaps whatever the ranks left behind (Job::kill_descendants). */
static void kill_descendants(const struct job* job) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
  for (int round = 0; round < 64; ++round) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    char buf[8192];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return;
    buf[n] = '\0';
    pid_t kids[1024];
    int k = 0;
    for (char* p = buf; *p && k < 1024;) {
      char* end;
      long pid = strtol(p, &end, 10);
      if (end == p) break;
      if (pid > 0 && pid != job->ranks[0].pid) kids[k++] = (pid_t)pid;
      p = end;
    }
    if (k == 0) return;
    for (int i = 0; i < k; ++i) kill(kids[i], SIGKILL);
    for (int i = 0; i < k; ++i) {
      while (waitpid(kids[i], NULL, 0) < 0 && errno == EINTR) {
      }
    }
  }
}

static int live_ranks(const struct job* job) {
  int n = 0;
  for (int r = 0; r < job->n; ++r) n += !job->ranks[r].done;
  return n;
}

/* Until the next thing due: telling the daemon the job runs, the deadline.
 * -1: nothing. */
static int poll_timeout_ms(const struct job* job) {
  long long due = job->started_sent ? 0 : job->spawned_ns + kStartedDelayNs;
  if (job->deadline_ns && (!due || job->deadline_ns < due)) due = job->deadline_ns;
  if (!due) return -1;
  long long left = due - now_ns();
  if (left <= 0) return 0;
  long long ms = (left + 999999) / 1000000; /* poll sleeps at least this long */
  return ms < INT_MAX ? (int)ms : INT_MAX;
}

int job_wait(struct job* job) {
  /* An MPICH program's ranks speak PMI-1 in MPI_Init, and PMI is
   * jiffy-launch's (one engine, in one place). Handed over now, while the
   * ranks exec and load libmpich (milliseconds before their first PMI
   * write), jiffy-launch starts up (about 1 ms of glibc) beside them
   * instead of inside their MPI_Init: at their first write, they would
   * wait for it. */
  if (job->kind == PROGRAM_MPICH) job_hand_over(job);
  struct pollfd* p = calloc((size_t)job->n + 3, sizeof *p);
  if (!p) job_hand_over(job);
  reap(job);
  while (live_ranks(job) > 0) {
    int k = 0;
    p[k++] = (struct pollfd){job->signal_fd, POLLIN, 0};
    p[k++] = (struct pollfd){job->daemon_fd, POLLIN, 0};
    if (job->rendezvous_port) p[k++] = (struct pollfd){job->rendezvous_fd, POLLIN, 0};
    for (int r = 0; r < job->n; ++r) {
      if (job->ranks[r].pmi_fd >= 0) p[k++] = (struct pollfd){job->ranks[r].pmi_fd, POLLIN, 0};
    }
    int ready = poll(p, (nfds_t)k, poll_timeout_ms(job));
    if (ready < 0) {
      if (errno == EINTR) continue;
      job_hand_over(job);
    }
    /* Timed out: jiffy-launch says so, and ends the job as its own
     * (Job::time_out), the deadline being past. */
    if (job->deadline_ns && now_ns() >= job->deadline_ns) job_hand_over(job);
    if (!job->started_sent && now_ns() >= job->spawned_ns + kStartedDelayNs) {
      if (job->daemon_fd < 0) tell_daemon(job);
      send_started(job);
      job->started_sent = 1;
    }
    /* The daemon writes only when something is wrong; it hangs up when it
     * dies: jiffy-launch deals with both (and re-attaches). */
    if (p[1].revents) job_hand_over(job);
    /* A rank connected to the PMIx rendezvous: jiffy-launch serves it. */
    if (job->rendezvous_port && p[2].revents) job_hand_over(job);
    for (int r = 0; r < job->n; ++r) {
      if (pmi_spoken(&job->ranks[r])) job_hand_over(job);
    }
    if (p[0].revents) {
      /* Pending signals are taken lowest number first, and SIGCHLD has the
       * highest of ours: reading SIGCHLD means no other is pending. Any
       * other is put back (it stays blocked) for jiffy-launch to forward. */
      struct signalfd_siginfo si;
      if (read(job->signal_fd, &si, sizeof si) == (ssize_t)sizeof si && si.ssi_signo != SIGCHLD) {
        kill(getpid(), (int)si.ssi_signo);
        job_hand_over(job);
      }
      reap(job);
    }
  }
  free(p);
  /* Nothing of the job may outlive it (Job::wait): the group is killed
   * while rank 0's zombie pins its id; then, with rank 0 reaped, any child
   * left is something a rank left behind and we adopted. */
  kill(-job->pgid, SIGKILL);
  while (waitpid(job->ranks[0].pid, NULL, 0) < 0 && errno == EINTR) {
  }
  for (int round = 0; round < 1024; ++round) {
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG) != 0) break; /* ECHILD: none */
    if (si.si_pid == 0) kill_descendants(job);
  }
  job->end_ns = realtime_ns(); /* the record's end, before the cores go back */
  /* Every process of the job is gone: lane slots go back before the
   * daemon hears the job is over, so that it can take them back at once. */
  int waiting = lane_release(&job->lane);
  if (job->daemon_fd < 0) {
    /* A short lane job the daemon never heard of. If a request waits for
     * its slots, any connection wakes the daemon to take them back. */
    int fd = waiting ? daemon_connect(job->base) : -1;
    if (fd >= 0) close(fd);
    return 0;
  }
  static const char finished[] = "{\"code\":0,\"type\":\"finished\"}";
  frame_send(job->daemon_fd, finished, sizeof finished - 1);
  close(job->daemon_fd);
  return 0;
}
