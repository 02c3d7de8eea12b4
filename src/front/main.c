/* jiffy (the front, see front.h): decides whether this launch is one it runs
 * itself, asks the daemon for the cores, and hands the ranks to job.c. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "front/front.h"
#include "front/job.h"
#include "proto/history.h"

static char** g_argv;
static long long g_submit_ns; /* CLOCK_REALTIME: we started (the history record's submit) */
static sigset_t g_caller_mask;
static struct sigaction g_caller_sigpipe;
static int g_signals_taken;

/* For a start from scratch: jiffy-launch (or a subcommand) finds the
 * process as its caller made it. */
static void restore_caller_signals(void) {
  if (!g_signals_taken) return;
  sigprocmask(SIG_SETMASK, &g_caller_mask, NULL);
  sigaction(SIGPIPE, &g_caller_sigpipe, NULL);
}

#ifndef JIFFY_LIBEXEC_FROM_BIN
#define JIFFY_LIBEXEC_FROM_BIN "../libexec/jiffy"
#endif

/* Execs `launcher` (a sibling of ours: beside us in the build tree, in
 * libexec/jiffy once installed, JIFFY_LIBEXEC_FROM_BIN relative to our
 * directory) with argv; returns only when it cannot run, errno set. */
static void exec_sibling(const char* launcher, char** argv) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - sizeof JIFFY_LIBEXEC_FROM_BIN - 32);
  char* slash = n > 0 ? memrchr(exe, '/', (size_t)n) : NULL;
  if (!slash) return;
  strcpy(slash + 1, launcher);
  execv(exe, argv);
  if (errno != ENOENT) return;
  strcpy(slash + 1, JIFFY_LIBEXEC_FROM_BIN "/");
  strcat(slash, launcher);
  execv(exe, argv);
}

static _Noreturn void hand_over_to(const char* launcher, const char* state) {
  if (!state) restore_caller_signals();
  int argc = 0;
  while (g_argv[argc]) ++argc;
  char** argv = calloc((size_t)argc + 3, sizeof *argv);
  if (!argv) _exit(1);
  int k = 0;
  argv[k++] = g_argv[0];
  /* The state travels in the environment (launch/handoff.h): it names the
   * job's tag, and anyone can read a process's arguments. */
  if (state) {
    argv[k++] = "--jiffy-handoff";
    if (setenv("JIFFY_HANDOFF", state, 1) != 0) _exit(1);
  }
  for (int i = 1; i < argc; ++i) argv[k++] = g_argv[i];
  /* jiffy-pmix is jiffy-launch with libpmix linked: a launch it cannot
   * take is jiffy-launch's, which says why. */
  if (strcmp(launcher, "jiffy-launch") != 0) exec_sibling(launcher, argv);
  exec_sibling("jiffy-launch", argv);
  fprintf(stderr, "jiffy: cannot run jiffy-launch: %s\n", strerror(errno));
  _exit(1);
}

_Noreturn void hand_over(const char* state) { hand_over_to("jiffy-launch", state); }

/* A number of seconds as jiffy-launch's parse_seconds reads it (cli/parse.cc:
 * fixed notation, no sign, finite), in nanoseconds; 0: no timeout. -1 for
 * anything the front does not read exactly alike (a sign, an exponent,
 * "inf", more than 9 integer digits, not a number at all): jiffy-launch
 * then decides, and says what is wrong. */
static long long seconds_ns(const char* text) {
  const char* dot = strchr(text, '.');
  size_t whole = dot ? (size_t)(dot - text) : strlen(text);
  const char* frac = dot ? dot + 1 : "";
  if (strspn(text, "0123456789") != whole || frac[strspn(frac, "0123456789")] != '\0' ||
      whole + strlen(frac) == 0) {
    return -1;
  }
  while (whole > 1 && *text == '0') { /* leading zeros count for nothing */
    ++text;
    --whole;
  }
  if (whole > 9) return -1; /* 31 years and more: jiffy-launch's */
  long long ns = 0;
  for (size_t k = 0; k < whole; ++k) ns = ns * 10 + (text[k] - '0');
  for (int k = 0; k < 9; ++k) ns = ns * 10 + (*frac ? *frac++ - '0' : 0);
  /* Below a nanosecond is still a timeout to jiffy-launch (a double > 0). */
  int nonzero = text[strspn(text, "0.")] != '\0';
  return nonzero && ns == 0 ? 1 : ns;
}

/* The value of a timeout option at argv[*i] (-timeout N, --timeout N,
 * -timeout=N, --timeout=N: cli/parse.cc's spellings), advancing *i past it;
 * NULL when argv[*i] is not one. */
static const char* timeout_option(int argc, char** argv, int* i) {
  const char* w = argv[*i];
  w += w[1] == '-' ? 2 : 1;
  if (strncmp(w, "timeout", 7) != 0) return NULL;
  if (w[7] == '=') {
    ++*i;
    return w + 8;
  }
  if (w[7] != '\0' || *i + 1 >= argc) return NULL;
  *i += 2;
  return argv[*i - 1];
}

/* `-n N prog args...` (or -np), with at most one timeout option before or
 * after -n, and nothing else, in a setting where jiffy-launch would do
 * exactly what the front does. Gives the program's index in argv and the
 * timeout (-timeout, else MPIEXEC_TIMEOUT; ns, 0 none). */
static int fast_path_applies(int argc, char** argv, int* ntasks, int* program, long long* timeout) {
  const char* timeout_text = NULL;
  int i = 1;
  *ntasks = 0;
  while (i < argc && argv[i][0] == '-' && argv[i][1] != '\0') {
    const char* w = argv[i];
    if (!*ntasks && (strcmp(w, "-n") == 0 || strcmp(w, "-np") == 0) && i + 1 < argc) {
      const char* n = argv[i + 1];
      if (n[0] < '1' || n[0] > '9' || strlen(n) > 6 || n[strspn(n, "0123456789")] != '\0') return 0;
      *ntasks = atoi(n);
      i += 2;
    } else if (timeout_text || (timeout_text = timeout_option(argc, argv, &i)) == NULL) {
      return 0; /* another option, or a second -n or timeout: jiffy-launch's */
    }
  }
  if (!*ntasks || i >= argc || argv[i][0] == '\0' || argv[i][0] == '-') return 0;
  *program = i;
  for (; i < argc; ++i) {
    if (strcmp(argv[i], ":") == 0) return 0; /* MPMD */
  }
  /* The option wins over the variable, which is then not even read (as
   * cli/parse.cc apply_timeout_env); an empty variable is none. */
  if (timeout_text) {
    *timeout = seconds_ns(timeout_text);
  } else {
    const char* v = getenv("MPIEXEC_TIMEOUT");
    *timeout = v && *v ? seconds_ns(v) : 0;
  }
  if (*timeout < 0) return 0;
  /* An explicit opt-out, and terminals (status line, stdin pump). */
  const char* fast = getenv("JIFFY_FAST");
  if (fast && strcmp(fast, "0") == 0) return 0;
  /* A closed 0, 1 or 2 would be taken by our sockets (jiffy-launch reopens
   * them on /dev/null first). A stdout or stderr someone made non-blocking
   * would lose the ranks' output to EAGAIN (jiffy-launch opens it again,
   * blocking: launch/output.h own_blocking_stdio). */
  for (int fd = 0; fd < 3; ++fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || (fd > 0 && (fl & O_NONBLOCK))) return 0;
  }
  return !isatty(0) && !isatty(2);
}

/* in[0..len) as a JSON string body, escaped as jiffy-launch's JSON library
 * escapes it, into out (room for 6 * len + 1). -1 when it is not plain
 * ASCII (jiffy-launch knows how to carry that). */
static int json_escape(const char* in, size_t len, char* out) {
  size_t k = 0;
  for (size_t i = 0; i < len; ++i) {
    unsigned char c = (unsigned char)in[i];
    if (c >= 0x80) return -1;
    if (c == '"' || c == '\\') {
      out[k++] = '\\';
      out[k++] = (char)c;
    } else if (c < 0x20) {
      static const char* esc[0x20] = {[8] = "\\b", [9] = "\\t", [10] = "\\n", [12] = "\\f", [13] = "\\r"};
      k += (size_t)(esc[c] ? sprintf(out + k, "%s", esc[c]) : sprintf(out + k, "\\u%04x", c));
    } else {
      out[k++] = (char)c;
    }
  }
  out[k] = '\0';
  return 0;
}

/* The command summary of submit_message() in jiffy-launch (its first 200
 * characters), as a JSON string body. -1 when the command is not plain
 * ASCII. */
static int command_json(char* command, char summary[256], int argc, char** argv, int program) {
  size_t used = 0;
  for (int i = program; i < argc && used <= 200; ++i) {
    if (used && summary[used - 1] != ' ' && used < 256) summary[used++] = ' ';
    for (const char* c = argv[i]; *c && used < 256; ++c) summary[used++] = *c;
  }
  if (used > 200) {
    memcpy(summary + 200, "...", 3);
    used = 203;
  }
  if (json_escape(summary, used, command) != 0) return -1;
  summary[used < 256 ? used : 255] = '\0';
  return 0;
}

/* The working directory and the history label (docs/history.md: JIFFY_LABEL,
 * else the directory's base name when it starts with "run"), raw and as
 * JSON string bodies. -1 when they are not plain ASCII. */
static int where_json(struct job* job) {
  static char cwd[PATH_MAX], cwd_json[PATH_MAX * 6 + 1], label_json[PATH_MAX * 6 + 1];
  if (!getcwd(cwd, sizeof cwd)) cwd[0] = '\0';
  const char* label = getenv("JIFFY_LABEL");
  if (!label || !*label) {
    const char* slash = strrchr(cwd, '/');
    label = slash && strncmp(slash + 1, "run", 3) == 0 ? slash + 1 : "";
  }
  size_t label_len = strlen(label);
  if (label_len > PATH_MAX - 1) label_len = PATH_MAX - 1;
  if (json_escape(cwd, strlen(cwd), cwd_json) != 0 || json_escape(label, label_len, label_json) != 0) {
    return -1;
  }
  job->cwd = cwd;
  job->label = label;
  job->cwd_json = cwd_json;
  job->label_json = label_json;
  return 0;
}

/* The submit message, as jiffy-launch's submit_message() writes it
 * (malloc'd in *out). */
static int submit_message(char** out, const struct job* job, int ntasks) {
  size_t size = strlen(job->command) + strlen(job->cwd_json) + strlen(job->label_json) + 400;
  *out = malloc(size);
  if (!*out) return -1;
  int n = snprintf(*out, size,
                   "{\"allow_oversubscribe\":true,\"arrival\":0,\"bind\":\"core\",\"command\":\"%s\","
                   "\"cores_per_task\":1,\"cwd\":\"%s\",\"gpus_per_job\":0,\"gpus_per_task\":0,"
                   "\"label\":\"%s\",\"ntasks\":%d,\"pid\":%d,\"progress\":false,\"tag\":\"%s\","
                   "\"type\":\"submit\",\"v\":1}",
                   job->command, job->cwd_json, job->label_json, ntasks, (int)getpid(), job->tag);
  return n > 0 && (size_t)n < size ? n : -1;
}

/* A JIFFY_* switch: unset, empty, "0" or "1". */
static int setting_valid(const char* v) { return !v || !*v || strcmp(v, "0") == 0 || strcmp(v, "1") == 0; }

static int daemon_timeout_ms(void) {
  const char* t = getenv("JIFFY_DAEMON_TIMEOUT");
  char* end = NULL;
  double v = t ? strtod(t, &end) : 0;
  return (t && end && *end == '\0' && v > 0 && v < 1e6) ? (int)(v * 1000) + 1 : 10000;
}

/* Withdraws the request (closing the connection does that) and lets
 * jiffy-launch start over; after a daemon crash, with our old ticket. */
static _Noreturn void start_over(int fd, long long ticket) {
  close(fd);
  if (ticket <= 0) hand_over(NULL);
  restore_caller_signals();
  char state[96];
  snprintf(state, sizeof state, "v=1 ticket=%lld submit=%lld", ticket, g_submit_ns);
  hand_over(state);
}

/* Waits for the grant. Returns its text and, in *parsed, its nodes (both
 * malloc'd), or does not return. base: the daemon's file names, for the
 * message about a silent daemon. */
static char* wait_for_grant(struct job* job, int fd, int signal_fd, const char* base, struct json** parsed) {
  long long ticket = 0;
  const int timeout = daemon_timeout_ms();
  int answered = 0; /* once queued, the grant comes when cores are free: no limit */
  for (;;) {
    char* body = NULL;
    long len = frame_receive(fd, &body, answered ? -1 : timeout, signal_fd);
    if (len == -3) {
      sigset_t pending;
      sigpending(&pending);
      static const int stop[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
      for (size_t i = 0; i < sizeof stop / sizeof stop[0]; ++i) {
        if (sigismember(&pending, stop[i])) { /* as jiffy-launch does */
          history_write(job, JIFFY_OUTCOME_SIGNALED, 128 + stop[i], stop[i], NULL);
          _exit(128 + stop[i]);
        }
      }
      struct signalfd_siginfo si; /* SIGCHLD of a child our caller left us, USR1/2: ignored */
      while (read(signal_fd, &si, sizeof si) == (ssize_t)sizeof si) {
      }
      continue;
    }
    if (len == -2) {
      /* As jiffy-launch says it: the daemon answers every submit at once. */
      fprintf(stderr,
              "jiffy: the daemon at %s/%s.sock did not answer within %d s; if it is hung, kill it "
              "(pid in %s/%s.lock)\n",
              daemon_dir_shown(), strrchr(base, '/') + 1, timeout / 1000, daemon_dir_shown(),
              strrchr(base, '/') + 1);
      char why[96];
      snprintf(why, sizeof why, "the daemon did not answer within %d s", timeout / 1000);
      history_write(job, JIFFY_OUTCOME_REFUSED, 1, 0, why);
      _exit(1);
    }
    if (len < 0) start_over(fd, ticket);
    int max = json_max_nodes((size_t)len);
    struct json* nodes = calloc((size_t)max, sizeof *nodes);
    int count = nodes ? json_parse(body, (size_t)len, nodes, max) : -1;
    int type = count > 0 ? json_member(nodes, 0, "type") : -1;
    int queued = json_string_is(nodes, type, "queued");
    int grant = json_string_is(nodes, type, "grant");
    if (grant) {
      *parsed = nodes;
      return body;
    }
    long long id = queued ? json_uint(nodes, json_member(nodes, 0, "job")) : -1;
    free(nodes);
    if (queued) {
      if (id > 0) ticket = id;
      answered = 1;
      free(body);
      continue;
    }
    /* A refusal (or something new): jiffy-launch asks again and explains. */
    start_over(fd, 0);
  }
}

/* Whether the launch runs here: the slurm backend is jiffy-launch's. Mirrors
 * cli/parse.cc's resolve_backend and launch/slurm.cc's
 * in_slurm_allocation_of_nodes (test_slurm.py keeps them equal): JIFFY_BACKEND
 * local, or unset/auto outside an allocation of several nodes or inside one
 * of its task steps. A bad value is jiffy-launch's to explain. */
static int backend_is_local(void) {
  const char* b = getenv("JIFFY_BACKEND");
  if (b && *b && strcmp(b, "auto") != 0) return strcmp(b, "local") == 0;
  const char* job = getenv("SLURM_JOB_ID");
  if (!job || !*job) return 1;
  const char* step = getenv("SLURM_STEP_ID");
  if (step && *step && strcmp(step, "4294967291") != 0 && strcmp(step, "4294967292") != 0 &&
      strcmp(step, "batch") != 0 && strcmp(step, "extern") != 0)
    return 1;
  const char* nodes = getenv("SLURM_JOB_NUM_NODES");
  if (!nodes || !*nodes) nodes = getenv("SLURM_NNODES");
  if (!nodes || !*nodes || strlen(nodes) > 9) return 1;
  long n = 0;
  for (const char* p = nodes; *p; ++p) {
    if (*p < '0' || *p > '9') return 1;
    n = n * 10 + (*p - '0');
  }
  return n <= 1;
}

/* Whether CTest's resource allocation gave this test GPUs: some
 * CTEST_RESOURCE_GROUP_<i> (of CTEST_RESOURCE_GROUP_COUNT) lists the type
 * "gpus" (cli/ctest.cc reads them the same way; malformed values are its to
 * explain). Groups of other types leave the launch on the fast path. */
static int ctest_chose_gpus(void) {
  const char* count = getenv("CTEST_RESOURCE_GROUP_COUNT");
  if (!count) return 0;
  char* end = NULL;
  long n = strtol(count, &end, 10);
  if (!*count || *end || n < 0 || n > 65536) return 1;
  for (long i = 0; i < n; ++i) {
    char name[64];
    snprintf(name, sizeof name, "CTEST_RESOURCE_GROUP_%ld", i);
    const char* types = getenv(name);
    if (!types) return 1;
    for (const char* p = types; (p = strstr(p, "gpus")) != NULL; p += 4) {
      if ((p == types || p[-1] == ',') && (p[4] == '\0' || p[4] == ',')) return 1;
    }
  }
  return 0;
}

int main(int argc, char** argv) {
  g_submit_ns = realtime_ns();
  g_argv = argv;
  int ntasks = 0, prog = 0;
  long long timeout = 0;
  if (!backend_is_local()) hand_over(NULL);
  /* CTest chose GPUs (cli/ctest.h): jiffy-launch asks for exactly them. */
  if (ctest_chose_gpus()) hand_over(NULL);
  if (!fast_path_applies(argc, argv, &ntasks, &prog, &timeout)) hand_over(NULL);
  /* A missing program is reported before anything is asked for, and a
   * program that needs PMIx is jiffy-launch's from the start. */
  char program[PATH_MAX];
  if (program_resolve(argv[prog], program, sizeof program) != 0) hand_over(NULL);
  enum program_kind kind = program_kind(program);
  /* jiffy-launch serves it through the set's shared PMIx server
   * (launch/pmix_shared.h), or continues in jiffy-pmix without one. */
  if (kind == PROGRAM_NEEDS_PMIX) hand_over(NULL);
  static struct job job; /* zeros, faulted in as used (it is large) */
  job.lane.fd = -1;
  job.kind = kind;
  random_tag(job.tag);
  static char command[256 * 6 + 1], summary[256];
  if (command_json(command, summary, argc, argv, prog) != 0) hand_over(NULL);
  char base[4096];
  if (daemon_base(job.cpus, sizeof job.cpus, base, sizeof base) != 0) hand_over(NULL);
  job.base = base;
  /* The topology cache, UCX's and Open MPI's shared memory, on unless the variable
   * says 0 (jiffy-launch explains a value other than 0 or 1). */
  const char* cache = getenv("JIFFY_TOPOLOGY_CACHE");
  const char* ucx = getenv("JIFFY_UCX_SHM");
  const char* single_node = getenv("JIFFY_SINGLE_NODE_OMPI");
  if (!setting_valid(cache) || !setting_valid(ucx) || !setting_valid(single_node)) hand_over(NULL);
  static char topology[4096];
  if (!(cache && strcmp(cache, "0") == 0) && daemon_topology(base, topology, sizeof topology) == 0) {
    job.topology = topology;
  }
  job.ucx_shm = !(ucx && strcmp(ucx, "0") == 0);
  job.single_node_ompi = !(single_node && strcmp(single_node, "0") == 0);
  job.command = command;
  job.summary = summary;
  job.submit_ns = g_submit_ns;
  if (where_json(&job) != 0) hand_over(NULL);

  /* From here on, signals are ours (and jiffy-launch's after a hand-over:
   * the mask and what is pending survive exec). */
  sigset_t mask;
  launcher_signals(&mask);
  sigprocmask(SIG_BLOCK, &mask, &g_caller_mask);
  struct sigaction ignore = {.sa_handler = SIG_IGN};
  sigaction(SIGPIPE, &ignore, &g_caller_sigpipe);
  g_signals_taken = 1;
  int signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (signal_fd < 0) hand_over(NULL);
  job.signal_fd = signal_fd;
  job.timeout_ns = timeout;

  /* Slots lent by the daemon are ours without a word to it (the records
   * in the lane file say what it needs to know). Otherwise we ask, and
   * prepare the ranks while it decides (on another CPU, as a rule). */
  const char* use_lane = getenv("JIFFY_LANE");
  int laned = !(use_lane && strcmp(use_lane, "0") == 0) &&
              lane_take(base, ntasks, job.tag, summary, &job.lane) == 0;
  struct json* grant = NULL;
  job.laned = laned;
  if (laned) {
    job.daemon_fd = -1;
    if (job_prepare(&job, ntasks) != 0) {
      lane_release(&job.lane);
      hand_over(NULL);
    }
    job.grant_text = job.lane.grant;
    size_t len = strlen(job.grant_text);
    grant = calloc((size_t)json_max_nodes(len), sizeof *grant);
    if (!grant || json_parse(job.grant_text, len, grant, json_max_nodes(len)) <= 0) {
      lane_release(&job.lane); /* out of memory: jiffy-launch says so */
      hand_over(NULL);
    }
  } else {
    job.daemon_fd = daemon_connect(base);
    if (job.daemon_fd < 0) hand_over(NULL); /* none yet: jiffy-launch starts it */
    char* submit = NULL;
    int len = submit_message(&submit, &job, ntasks);
    if (len < 0 || frame_send(job.daemon_fd, submit, (size_t)len) != 0) start_over(job.daemon_fd, 0);
    free(submit);
    if (job_prepare(&job, ntasks) != 0) start_over(job.daemon_fd, 0);
    job.grant_text = wait_for_grant(&job, job.daemon_fd, signal_fd, base, &grant);
  }
  int granted = job_from_grant(&job, grant);
  free(grant);
  if (granted != 0) {
    if (laned) {
      lane_release(&job.lane);
      hand_over(NULL);
    }
    start_over(job.daemon_fd, 0);
  }
  int code;
  if (job_start(&job, program, argv + prog) != 0) {
    code = 127;
    history_write(&job, JIFFY_OUTCOME_REFUSED, code, 0, job.reason);
  } else {
    code = job_wait(&job); /* 0, or it handed over: jiffy-launch writes the record */
    history_write(&job, JIFFY_OUTCOME_EXITED, code, 0, NULL);
  }
  job_free(&job);
  return code;
}
