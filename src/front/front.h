/* The jiffy front: the executable users run as `jiffy`.
 *
 * Why it exists, and why in C: every glibc process pays for glibc's start-up
 * (on the VMs CI runs on, 68 CPUID instructions, each a VM exit: 0.45 ms of a
 * 0.6 ms /bin/true). A launcher built on glibc therefore costs at least one
 * more /bin/true than the program it starts. The front is plain C linked
 * statically with musl, which starts in microseconds, and it runs the common
 * launch `jiffy -n N prog args` of a program that needs no PMIx from start to
 * finish on the happy path: ask the daemon, spawn the ranks bound to their
 * cores, reap them, report. Anything else is handed to jiffy-launch (the C++
 * launcher next to it):
 *
 *   - before anything is taken (other options, a terminal, no daemon yet, an
 *     Open MPI program, ...): exec jiffy-launch with the same arguments;
 *   - once ranks run (a rank speaks PMI-1 or connects to the PMIx rendezvous
 *     of rendezvous.c, a signal, a rank fails, the daemon writes or goes
 *     away, the timeout runs out; an MPICH program's ranks at once, as they
 *     start: see job_wait): exec jiffy-launch in the same process with
 *     "--jiffy-handoff" and STATE in $JIFFY_HANDOFF, so the ranks stay its children, the daemon
 *     connection and the PMI channels stay open, and pending signals stay
 *     pending (src/launch/handoff.h describes STATE).
 *
 * The rules that decide what a rank sees (its environment, binding, stdio)
 * are jiffy-launch's; tests/e2e/test_front.py checks that both launchers give
 * a rank the same ones.
 */
#ifndef JIFFY_FRONT_H
#define JIFFY_FRONT_H

#include <stddef.h>
#include <sys/types.h>

/* Never returns: continues in jiffy-launch, with the state of a running job
 * (state != NULL) or from the start (state == NULL). */
_Noreturn void hand_over(const char* state);

/* ---- json.c: just enough JSON to read the daemon's answers ------------- */

enum json_type { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json {
  enum json_type type;
  const char* text;   /* the value's source text (strings: inside the quotes) */
  size_t len;
  int first;          /* arrays and objects: index of the first element, -1 none */
  int next;           /* the next element of the enclosing array/object, -1 none */
  const char* key;    /* object members: the key (raw, inside the quotes) */
  size_t key_len;
};

/* Parses text into nodes[0..max). Returns the number of nodes (node 0 is the
 * root), or -1 when text is not JSON or needs more than max nodes. */
int json_parse(const char* text, size_t len, struct json* nodes, int max);
/* Enough nodes for any JSON text of len bytes: every value but the first
 * takes at least two bytes (itself and a separator). */
static inline int json_max_nodes(size_t len) { return (int)(len / 2 + 2); }
/* The member of object node `obj` named key, or -1. */
int json_member(const struct json* nodes, int obj, const char* key);
/* The value as an integer; -1 when it is not a non-negative integer. */
long long json_uint(const struct json* nodes, int n);
/* 1 when string node n equals s (no escapes involved). */
int json_string_is(const struct json* nodes, int n, const char* s);

/* ---- daemon.c: reaching the daemon of this resource set ---------------- */

/* The daemon of the caller's resource set: base receives its file names
 * without their suffix ("/proc/self/fd/<dir fd>/<key>": the runtime
 * directory through a descriptor held for our life), cpus the allowed CPU
 * list as jiffy-launch formats it ("0-3,6"). -1 when the runtime directory
 * is not there or not one we trust. */
int daemon_base(char* cpus, size_t cpus_size, char* base, size_t base_size);
/* The runtime directory as users know it, for messages. */
const char* daemon_dir_shown(void);
/* The daemon's hwloc XML (<dir>/<key>.topo.xml) named as jiffy-launch names
 * it for ranks (util/runtime_dir.h DaemonPaths::topology) into out. -1 when
 * the daemon has not written it or it cannot be read. */
int daemon_topology(const char* base, char* out, size_t size);
/* Connects to the daemon at base; -1 when there is none or it is not of our uid. */
int daemon_connect(const char* base);
/* Sends one frame (4-byte big-endian length + body). 0 or -1. */
int frame_send(int fd, const char* body, size_t len);
/* Reads one frame into a malloc'd, NUL-terminated buffer. Returns its length,
 * or -1 on EOF/error, -2 when timeout_ms passed with nothing, -3 when
 * signal_fd became readable first (nothing read from it). */
long frame_receive(int fd, char** body, int timeout_ms, int signal_fd);

/* ---- lane.c: slots taken without asking (src/proto/lane.h) ------------- */

struct jiffy_lane_job;
struct lane_claim {
  int fd;            /* holds the slots' locks; the launcher's alone (no rank
                        inherits it: a rank could write through it); -1: none */
  int first, count;  /* the slots taken */
  unsigned long long job;
  char* grant;       /* the grant, as the daemon would have written it (malloc'd) */
  void* map;         /* the lane file, mapped (guarded: see lane.c) */
  size_t map_size;
  struct jiffy_lane_job* records; /* in the map: sized when taken, never re-read */
};

/* Takes n neighbouring slots lent by the live daemon at base, if its lane
 * is open and has them, and writes the job's records (tag, command: what
 * the daemon shows and needs if we die). 0 and *claim, or -1 (nothing
 * taken: ask the daemon). */
int lane_take(const char* base, int n, const char* tag, const char* command,
              struct lane_claim* claim);
/* Records the ranks' process group. */
void lane_set_pgid(struct lane_claim* claim, pid_t pgid);
/* Lets the slots go (every process of the job is gone). Returns 1 when the
 * lane is closed, i.e. a request waits and the daemon wants to know. */
int lane_release(struct lane_claim* claim);

/* ---- program.c: the program to run -------------------------------------- */

/* Resolves name as execvp would; 0 and the path in out, or -1. */
int program_resolve(const char* name, char* out, size_t size);

enum program_kind { PROGRAM_PLAIN, PROGRAM_MPICH, PROGRAM_NEEDS_PMIX };
/* What jiffy-launch's detect_mpi would say, folded into what the front needs:
 * PMI-1 only (plain or MPICH) or PMIx (Open MPI, an interpreter). */
enum program_kind program_kind(const char* path);

/* ---- rendezvous.c: the PMIx rendezvous (src/launch/bootstrap.h) -------- */

/* A loopback TCP socket listening (close-on-exec, non-blocking); its port
 * in *port. -1 on failure. */
int rendezvous_open(int* port);
/* Calls set(ctx, name, value) for each variable rank `rank` of `size` gets. */
void rendezvous_environment(int rank, int size, const char* tag, int port, int single_node,
                            void (*set)(void* ctx, const char* name, const char* value), void* ctx);

#endif
