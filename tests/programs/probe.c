/* probe: a rank program for jiffy's end-to-end tests.
 *
 * Usage: probe [KEY=VALUE ...]
 * A key may carry a suffix "@R" to apply to rank R only (rank from
 * JIFFY_RANK, or SLURM_PROCID in a Slurm step); a rank-specific setting wins
 * over the plain one. In a Slurm step the record also holds step=JOB.STEP.
 *
 *   out=DIR      write a record file DIR/<tag>.<rank> (key=value lines)
 *   tag=NAME     record name prefix (default "job<JIFFY_JOB_ID>")
 *   await=PATH   wait until the file PATH exists (checked every 5 ms), before
 *                the sleep: a test holds the rank as long as it needs to
 *   sleep=MS     sleep MS milliseconds (CLOCK_MONOTONIC, EINTR-safe)
 *   exit=CODE    exit with CODE (after the sleep)
 *   segv=1       die of SIGSEGV (after the sleep; no core dump)
 *   spawn=1      fork a child that sleeps 100 s; its pid is recorded as child=
 *   trap=exit    on SIGINT/SIGTERM/SIGHUP record "signal=N" and exit 100+N
 *   trap=stay    on those signals record "signal=N" and keep going
 *                (default: record "signal=N" and die of the signal)
 *   ignoreterm=1 ignore SIGTERM altogether
 *   print=TEXT   print "TEXT rank=R size=S" on stdout at start
 *   eprint=TEXT  the same on stderr
 *   env=A,B      record env.A=<value> (or unset.A) lines
 *   envall=1     record every environment variable as env.NAME=<value>
 *   garbage=1    write garbage to every descriptor above 2 it inherited (a
 *                careless or hostile rank), after the start record
 *
 * The record always holds: pid, ppid, pgid, job, rank, size, cores
 * (JIFFY_CORES), cpus (sched_getaffinity, "0,1,5"), cwd, host, start_ns; and at
 * the end end_ns (also written from the signal handler).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

extern char** environ;

static int g_argc;
static char** g_argv;
static const char* g_rank_str = "0";
static int g_fd = -1;
static int g_trap_mode = 0; /* 0 die, 1 exit, 2 stay */

static const char* opt(const char* key) {
  size_t kl = strlen(key);
  const char* plain = NULL;
  const char* ranked = NULL;
  for (int i = 1; i < g_argc; i++) {
    const char* a = g_argv[i];
    if (strncmp(a, key, kl) != 0) continue;
    if (a[kl] == '=') {
      plain = a + kl + 1;
    } else if (a[kl] == '@') {
      const char* r = a + kl + 1;
      const char* eq = strchr(r, '=');
      if (!eq) continue;
      if ((size_t)(eq - r) == strlen(g_rank_str) && strncmp(r, g_rank_str, eq - r) == 0) ranked = eq + 1;
    }
  }
  return ranked ? ranked : plain;
}

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* async-signal-safe decimal formatting */
static size_t fmt_ll(char* buf, long long v) {
  char tmp[32];
  size_t n = 0, o = 0;
  int neg = v < 0;
  unsigned long long u = neg ? (unsigned long long)(-v) : (unsigned long long)v;
  do {
    tmp[n++] = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (neg) buf[o++] = '-';
  while (n) buf[o++] = tmp[--n];
  return o;
}

static void rec_raw(const char* s, size_t n) {
  if (g_fd >= 0) {
    ssize_t w = write(g_fd, s, n);
    (void)w;
  }
}

static void rec_kv_ll(const char* key, long long v) {
  char buf[96];
  size_t n = strlen(key);
  memcpy(buf, key, n);
  buf[n++] = '=';
  n += fmt_ll(buf + n, v);
  buf[n++] = '\n';
  rec_raw(buf, n);
}

static void on_signal(int sig) {
  int saved = errno;
  rec_kv_ll("signal", sig);
  rec_kv_ll("end_ns", now_ns());
  if (g_trap_mode == 1) _exit(100 + sig);
  if (g_trap_mode == 0) {
    signal(sig, SIG_DFL);
    raise(sig);
  }
  errno = saved;
}

static void sleep_ms(long ms) {
  if (ms <= 0) return;
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  t.tv_sec += ms / 1000;
  t.tv_nsec += (ms % 1000) * 1000000L;
  if (t.tv_nsec >= 1000000000L) {
    t.tv_sec++;
    t.tv_nsec -= 1000000000L;
  }
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) == EINTR) {
  }
}

int main(int argc, char** argv) {
  long long start = now_ns();
  g_argc = argc;
  g_argv = argv;
  const char* r = getenv("JIFFY_RANK");
  /* A Slurm step's task (jiffy's slurm backend): Slurm's names. */
  if (!r || !*r) r = getenv("SLURM_PROCID");
  if (r && *r) g_rank_str = r;
  const char* job = getenv("JIFFY_JOB_ID");
  if (!job || !*job) job = getenv("SLURM_STEP_ID") ? getenv("SLURM_JOB_ID") : NULL;
  const char* size = getenv("JIFFY_SIZE");
  if (!size || !*size) size = getenv("SLURM_NTASKS");
  const char* cores = getenv("JIFFY_CORES");

  const char* trap = opt("trap");
  if (trap && strcmp(trap, "exit") == 0) g_trap_mode = 1;
  if (trap && strcmp(trap, "stay") == 0) g_trap_mode = 2;

  /* handlers first: a rank terminated early leaves no half record */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  /* one handler at a time: of several pending signals the lowest-numbered
     is recorded first (otherwise a later one would nest and run first) */
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGINT);
  sigaddset(&sa.sa_mask, SIGTERM);
  sigaddset(&sa.sa_mask, SIGHUP);
  int sigs[] = {SIGINT, SIGTERM, SIGHUP};
  for (int i = 0; i < 3; i++) sigaction(sigs[i], &sa, NULL);
  const char* ign = opt("ignoreterm");
  if (ign && strcmp(ign, "1") == 0) signal(SIGTERM, SIG_IGN);

  const char* out = opt("out");
  if (out) {
    const char* tag = opt("tag");
    char path[4096];
    if (tag)
      snprintf(path, sizeof path, "%s/%s.%s", out, tag, g_rank_str);
    else
      snprintf(path, sizeof path, "%s/job%s.%s", out, job ? job : "none", g_rank_str);
    g_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (g_fd < 0) {
      fprintf(stderr, "probe: cannot open %s: %s\n", path, strerror(errno));
      return 90;
    }
  }

  /* the start record: one write */
  static char buf[1 << 16];
  size_t n = 0;
  n += snprintf(buf + n, sizeof buf - n, "pid=%d\nppid=%d\npgid=%d\n", (int)getpid(), (int)getppid(),
                (int)getpgid(0));
  n += snprintf(buf + n, sizeof buf - n, "job=%s\nrank=%s\nsize=%s\ncores=%s\n", job ? job : "",
                g_rank_str, size ? size : "", cores ? cores : "");
  cpu_set_t set;
  CPU_ZERO(&set);
  n += snprintf(buf + n, sizeof buf - n, "cpus=");
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int first = 1;
    for (int c = 0; c < CPU_SETSIZE; c++) {
      if (!CPU_ISSET(c, &set)) continue;
      n += snprintf(buf + n, sizeof buf - n, first ? "%d" : ",%d", c);
      first = 0;
    }
  }
  n += snprintf(buf + n, sizeof buf - n, "\n");
  char cwd[4096];
  if (getcwd(cwd, sizeof cwd)) n += snprintf(buf + n, sizeof buf - n, "cwd=%s\n", cwd);
  char host[256];
  if (gethostname(host, sizeof host) == 0) n += snprintf(buf + n, sizeof buf - n, "host=%s\n", host);
  const char* step = getenv("SLURM_STEP_ID");
  if (step) n += snprintf(buf + n, sizeof buf - n, "step=%s.%s\n", getenv("SLURM_JOB_ID"), step);
  n += snprintf(buf + n, sizeof buf - n, "start_ns=%lld\n", start);
  const char* envs = opt("env");
  if (envs) {
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", envs);
    for (char* save = NULL, *name = strtok_r(copy, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
      const char* v = getenv(name);
      if (v)
        n += snprintf(buf + n, sizeof buf - n, "env.%s=%s\n", name, v);
      else
        n += snprintf(buf + n, sizeof buf - n, "unset.%s=1\n", name);
      if (n >= sizeof buf - 1) n = sizeof buf - 1;
    }
  }
  const char* ea = opt("envall");
  if (ea && strcmp(ea, "1") == 0) {
    for (char** e = environ; *e && n < sizeof buf - 256; e++) {
      n += snprintf(buf + n, sizeof buf - n, "env.");
      for (const char* p = *e; *p && n < sizeof buf - 8; p++) {
        if (*p == '\n') {
          buf[n++] = '\\';
          buf[n++] = 'n';
        } else {
          buf[n++] = *p;
        }
      }
      buf[n++] = '\n';
    }
  }
  if (n >= sizeof buf) n = sizeof buf - 1;

  const char* spawn = opt("spawn");
  if (spawn && strcmp(spawn, "1") == 0) {
    pid_t c = fork();
    if (c == 0) {
      if (g_fd >= 0) close(g_fd);
      signal(SIGINT, SIG_DFL);
      signal(SIGTERM, SIG_DFL);
      signal(SIGHUP, SIG_DFL);
      sleep_ms(100000);
      _exit(0);
    }
    n += snprintf(buf + n, sizeof buf - n, "child=%d\n", (int)c);
  }
  rec_raw(buf, n);

  const char* garbage = opt("garbage");
  if (garbage && strcmp(garbage, "1") == 0) {
    static const char junk[] = "progress 42%\n\0\xff{\"type\":\"lane\"}cmd=abort\n";
    for (int fd = 3; fd < 1024; fd++) {
      if (fd != g_fd) (void)!write(fd, junk, sizeof junk - 1);
    }
  }

  const char* pr = opt("print");
  if (pr) {
    printf("%s rank=%s size=%s\n", pr, g_rank_str, size ? size : "");
    fflush(stdout);
  }
  const char* epr = opt("eprint");
  if (epr) {
    fprintf(stderr, "%s rank=%s size=%s\n", epr, g_rank_str, size ? size : "");
    fflush(stderr);
  }

  const char* aw = opt("await");
  while (aw && access(aw, F_OK) != 0) sleep_ms(5);
  const char* sl = opt("sleep");
  if (sl) sleep_ms(atol(sl));

  const char* segv = opt("segv");
  int code = 0;
  const char* ex = opt("exit");
  if (ex) code = atoi(ex);
  rec_kv_ll("end_ns", now_ns());
  if (segv && strcmp(segv, "1") == 0) {
    struct rlimit rl = {0, 0};
    setrlimit(RLIMIT_CORE, &rl);
    signal(SIGSEGV, SIG_DFL);
    raise(SIGSEGV);
  }
  return code;
}
