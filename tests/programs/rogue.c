/* rogue: a misbehaving rank for jiffy's fault-injection tests.
 *
 * Usage: rogue [KEY=VALUE ...]   (actions run in the order listed here)
 * A key may carry a suffix "@R" to apply to rank R only (rank from
 * JIFFY_RANK); a rank-specific setting wins over the plain one.
 *
 *   pids=DIR       record every process this rank creates: DIR/<tag>.<rank>
 *                  gets "role=pid" lines (rank, child, daemon), each written
 *                  before the rank goes on
 *   tag=NAME       record name prefix (default "job<JIFFY_JOB_ID>")
 *   ignoreterm=1   the rank itself ignores SIGTERM, SIGINT and SIGHUP
 *   children=N     fork N children that ignore SIGTERM/SIGINT/SIGHUP and
 *                  sleep (in the rank's process group)
 *   daemonize=1    double fork + setsid: the grandchild leaves the process
 *                  group and session, ignores SIGTERM/SIGINT/SIGHUP, closes
 *                  stdio and sleeps
 *   daemonize=2    the same, but the grandchild keeps stdio open
 *   closeout=1     close stdout and stderr (and stdin)
 *   flood=BYTES    write BYTES bytes to stdout as lines of 99 'o' + '\n'
 *                  (SIGPIPE left at its default)
 *   eflood=BYTES   the same to stderr, lines of 99 'e' + '\n'
 *   sleep=MS       sleep MS milliseconds
 *   exit=CODE      exit with CODE (default 0)
 *
 * Helpers (children, daemon) sleep 1000 s: they must be killed by jiffy.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int g_argc;
static char** g_argv;
static const char* g_rank = "0";
static int g_fd = -1;

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
      if ((size_t)(eq - r) == strlen(g_rank) && strncmp(r, g_rank, eq - r) == 0) ranked = eq + 1;
    }
  }
  return ranked ? ranked : plain;
}

static void sleep_ms(long ms) {
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

static void record(const char* role, long pid) {
  if (g_fd < 0) return;
  char buf[64];
  int n = snprintf(buf, sizeof buf, "%s=%ld\n", role, pid);
  if (write(g_fd, buf, (size_t)n) != n) _exit(91);
}

static void ignore_term(void) {
  signal(SIGTERM, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
}

static void flood(int fd, long long bytes, char c) {
  char line[100];
  memset(line, c, 99);
  line[99] = '\n';
  static char block[100 * 655];
  for (int i = 0; i < 655; i++) memcpy(block + 100 * i, line, 100);
  while (bytes > 0) {
    size_t n = bytes < (long long)sizeof block ? (size_t)bytes : sizeof block;
    ssize_t w = write(fd, block, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      _exit(92); /* EPIPE with SIGPIPE ignored, or the fd closed */
    }
    bytes -= w;
  }
}

int main(int argc, char** argv) {
  g_argc = argc;
  g_argv = argv;
  const char* r = getenv("JIFFY_RANK");
  if (r && *r) g_rank = r;
  const char* dir = opt("pids");
  if (dir) {
    const char* tag = opt("tag");
    const char* job = getenv("JIFFY_JOB_ID");
    char path[4096];
    if (tag)
      snprintf(path, sizeof path, "%s/%s.%s", dir, tag, g_rank);
    else
      snprintf(path, sizeof path, "%s/job%s.%s", dir, job ? job : "none", g_rank);
    g_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (g_fd < 0) {
      fprintf(stderr, "rogue: cannot open %s: %s\n", path, strerror(errno));
      return 90;
    }
  }
  record("rank", getpid());
  const char* v;
  if ((v = opt("ignoreterm")) && atoi(v)) ignore_term();
  if ((v = opt("children"))) {
    for (int i = 0, n = atoi(v); i < n; i++) {
      pid_t c = fork();
      if (c == 0) {
        ignore_term();
        sleep_ms(1000000);
        _exit(0);
      }
      record("child", c);
    }
  }
  if ((v = opt("daemonize")) && atoi(v)) {
    int keep_stdio = atoi(v) == 2;
    int p[2];
    if (pipe(p) != 0) return 93;
    pid_t c = fork();
    if (c == 0) {
      close(p[0]);
      setsid();
      pid_t d = fork();
      if (d != 0) _exit(0);
      ignore_term();
      pid_t me = getpid();
      (void)!write(p[1], &me, sizeof me);
      close(p[1]);
      if (!keep_stdio) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
      }
      if (g_fd >= 0) close(g_fd);
      (void)!chdir("/");
      sleep_ms(1000000);
      _exit(0);
    }
    close(p[1]);
    pid_t d = 0;
    if (read(p[0], &d, sizeof d) != (ssize_t)sizeof d) return 94;
    close(p[0]);
    waitpid(c, NULL, 0);
    record("daemon", d);
  }
  if ((v = opt("closeout")) && atoi(v)) {
    close(0);
    close(1);
    close(2);
  }
  if ((v = opt("flood"))) flood(1, atoll(v), 'o');
  if ((v = opt("eflood"))) flood(2, atoll(v), 'e');
  if ((v = opt("sleep"))) sleep_ms(atol(v));
  record("done", 1);
  v = opt("exit");
  return v ? atoi(v) : 0;
}
