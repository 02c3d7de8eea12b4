/* Reaching the daemon of the caller's resource set, as jiffy-launch does
 * (src/util/runtime_dir.cc): the same private directory, trusted on the same
 * terms, and the same key. The front never creates the directory nor starts
 * a daemon: when there is none it hands over, and jiffy-launch does both. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "front/front.h"

/* Grants for up to some 20,000 ranks; a larger one goes to jiffy-launch
 * (the connection is closed, which withdraws the request, and it asks again). */
enum { kMaxFrame = 1 << 20 };

/* The directory, if it exists and is as jiffy-launch demands: a real
 * directory owned by us and closed to everyone else, opened (O_PATH) and
 * checked through the descriptor, which we keep: the files are reached
 * through /proc/self/fd/N, so the directory cannot be swapped after the
 * check. When another user planted /tmp/jiffy-<uid>, jiffy-launch's
 * alternative, /tmp/jiffy-<uid>-<suffix>, is used on the same terms once
 * jiffy-launch has named it (alternative_dir). Any other case (none yet, one
 * of ours that is unsafe) goes to jiffy-launch, which makes it or says why. */
static char shown_dir[4096];

const char* daemon_dir_shown(void) { return shown_dir; }

/* Our home as jiffy-launch finds it (util/runtime_dir.cc, home_dir): the
 * password file's entry for our uid (not $HOME, which su, sudo and cron set
 * differently), else $HOME. */
static int home_dir(char* out, size_t size) {
  char uid[16], line[4096];
  snprintf(uid, sizeof uid, "%u", (unsigned)geteuid());
  FILE* f = fopen("/etc/passwd", "re");
  int whole = 1; /* the previous read ended a line */
  while (f && fgets(line, sizeof line, f)) {
    int starts = whole;
    whole = strchr(line, '\n') != NULL;
    if (!starts) continue; /* the rest of a line longer than the buffer */
    /* name:password:uid:gid:gecos:home:shell */
    char* field[7] = {line};
    int n = 1;
    for (char* c = line; *c && n < 7; ++c) {
      if (*c == ':') {
        *c = '\0';
        field[n++] = c + 1;
      }
    }
    if (n < 7 || strcmp(field[2], uid) != 0) continue;
    fclose(f);
    int k = snprintf(out, size, "%s", field[5]);
    return k < 0 || (size_t)k >= size ? -1 : 0;
  }
  if (f) fclose(f);
  const char* h = getenv("HOME");
  int k = snprintf(out, size, "%s", h ? h : "");
  return k < 0 || (size_t)k >= size ? -1 : 0;
}

/* /tmp/jiffy-<uid>-<suffix> when /tmp/jiffy-<uid> belongs to another user
 * and jiffy-launch has kept a suffix in ~/.cache/jiffy/runtime-suffix;
 * 0 = none (jiffy-launch makes one, or says why it cannot). */
static int alternative_dir(const char* taken, char* out, size_t size) {
  struct stat st;
  if (lstat(taken, &st) != 0 || st.st_uid == geteuid()) return 0;
  char home[4096], path[4200], text[64];
  if (home_dir(home, sizeof home) != 0 || home[0] != '/') return 0;
  snprintf(path, sizeof path, "%s/.cache/jiffy/runtime-suffix", home);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t got = read(fd, text, sizeof text - 1);
  close(fd);
  if (got < 16) return 0;
  text[got] = '\0';
  /* As jiffy-launch reads it: the first word, 16 lowercase hex digits. */
  size_t skip = strspn(text, " \t\n"), len = strcspn(text + skip, " \t\n");
  if (len != 16 || strspn(text + skip, "0123456789abcdef") < 16) return 0;
  int n = snprintf(out, size, "%s-%.16s", taken, text + skip);
  return n > 0 && (size_t)n < size;
}

/* The directory at path, opened (O_PATH) if it is a real directory of ours
 * closed to everyone else; -1 otherwise. */
static int open_private(const char* path) {
  struct stat st;
  int fd = open(path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return -1;
  if (fstat(fd, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static int runtime_dir(char* out, size_t size) {
  static int dir_fd = -1;
  if (dir_fd < 0) {
    const char* d = getenv("JIFFY_RUNTIME_DIR");
    char* path = shown_dir;
    size_t cap = sizeof shown_dir;
    int n = d && *d ? snprintf(path, cap, "%s", d) : snprintf(path, cap, "/tmp/jiffy-%u", (unsigned)geteuid());
    if (n < 0 || (size_t)n >= cap) return -1;
    int fd = open_private(path);
    char alternative[sizeof shown_dir];
    if (fd < 0 && !(d && *d) && alternative_dir(path, alternative, sizeof alternative)) {
      memcpy(path, alternative, cap);
      fd = open_private(path);
    }
    if (fd < 0) return -1;
    dir_fd = fd;
  }
  int n = snprintf(out, size, "/proc/self/fd/%d", dir_fd);
  return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* "0-3,6": format_cpu_list of the allowed CPUs. */
static int allowed_cpus(char* out, size_t size) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
  size_t used = 0;
  out[0] = '\0';
  for (int i = 0; i < CPU_SETSIZE;) {
    if (!CPU_ISSET(i, &set)) {
      ++i;
      continue;
    }
    int j = i;
    while (j + 1 < CPU_SETSIZE && CPU_ISSET(j + 1, &set)) ++j;
    int n = j > i ? snprintf(out + used, size - used, "%s%d-%d", used ? "," : "", i, j)
                  : snprintf(out + used, size - used, "%s%d", used ? "," : "", i);
    if (n < 0 || (size_t)n >= size - used) return -1;
    used += (size_t)n;
    i = j + 1;
  }
  return 0;
}

/* FNV-1a of the resource-set description, as hash_hex(describe(...)). */
static uint64_t resource_key(const char* cpus) {
  uint64_t h = 1469598103934665603ull;
  char part[4096];
  const char* vars[] = {"CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "JIFFY_GPUS"};
  const char* pieces[4] = {"cpus=", cpus, NULL, NULL};
  for (int k = 0; k < 2; ++k) {
    for (const char* c = pieces[k]; *c; ++c) h = (h ^ (unsigned char)*c) * 1099511628211ull;
  }
  for (size_t v = 0; v < sizeof vars / sizeof vars[0]; ++v) {
    const char* val = getenv(vars[v]);
    snprintf(part, sizeof part, " %s=%s", vars[v], val ? val : "<unset>");
    for (const char* c = part; *c; ++c) h = (h ^ (unsigned char)*c) * 1099511628211ull;
  }
  return h;
}

int daemon_base(char* cpus, size_t cpus_size, char* base, size_t base_size) {
  char dir[4096];
  if (runtime_dir(dir, sizeof dir) != 0 || allowed_cpus(cpus, cpus_size) != 0) return -1;
  int n = snprintf(base, base_size, "%s/%016llx", dir, (unsigned long long)resource_key(cpus));
  return n < 0 || (size_t)n >= base_size ? -1 : 0;
}

int daemon_topology(const char* base, char* out, size_t size) {
  const char* slash = strrchr(base, '/');
  char through_fd[4096];
  int n = snprintf(through_fd, sizeof through_fd, "%s.topo.xml", base);
  if (!slash || n < 0 || (size_t)n >= sizeof through_fd || access(through_fd, R_OK) != 0) return -1;
  /* jiffy-launch names JIFFY_RUNTIME_DIR canonically (what the held
   * descriptor points at), the default as spelled. */
  char dir[4096];
  const char* d = getenv("JIFFY_RUNTIME_DIR");
  if (d && *d) {
    char fd_path[64];
    size_t len = (size_t)(slash - base);
    if (len >= sizeof fd_path) return -1;
    memcpy(fd_path, base, len);
    fd_path[len] = '\0';
    ssize_t got = readlink(fd_path, dir, sizeof dir - 1);
    if (got <= 0) return -1;
    dir[got] = '\0';
  } else {
    snprintf(dir, sizeof dir, "%s", shown_dir);
  }
  n = snprintf(out, size, "%s%s.topo.xml", dir, slash);
  return n < 0 || (size_t)n >= size ? -1 : 0;
}

int daemon_connect(const char* base) {
  int n;
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  n = snprintf(addr.sun_path, sizeof addr.sun_path, "%s.sock", base);
  if (n < 0 || (size_t)n >= sizeof addr.sun_path) return -1;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  /* The daemon must be of our uid (it checks us as well). */
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (connect(fd, (struct sockaddr*)&addr, sizeof addr) != 0 ||
      getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.uid != geteuid()) {
    close(fd);
    return -1;
  }
  return fd;
}

int frame_send(int fd, const char* body, size_t len) {
  char head[4] = {(char)(len >> 24), (char)(len >> 16), (char)(len >> 8), (char)len};
  struct iovec iov[2] = {{head, 4}, {(void*)body, len}};
  struct msghdr m;
  memset(&m, 0, sizeof m);
  m.msg_iov = iov;
  m.msg_iovlen = 2;
  size_t left = len + 4;
  while (left > 0) {
    ssize_t w = sendmsg(fd, &m, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    left -= (size_t)w;
    while (m.msg_iovlen > 0 && (size_t)w >= m.msg_iov[0].iov_len) {
      w -= (ssize_t)m.msg_iov[0].iov_len;
      m.msg_iov++;
      m.msg_iovlen--;
    }
    if (m.msg_iovlen > 0) {
      m.msg_iov[0].iov_base = (char*)m.msg_iov[0].iov_base + w;
      m.msg_iov[0].iov_len -= (size_t)w;
    }
  }
  return 0;
}

/* Reads exactly len bytes, waiting at most until the deadline on the first
 * byte. Never reads beyond the frame: what follows stays in the socket for
 * jiffy-launch. */
static long read_exact(int fd, char* buf, size_t len, int timeout_ms, int signal_fd) {
  size_t got = 0;
  while (got < len) {
    struct pollfd p[2] = {{fd, POLLIN, 0}, {signal_fd, POLLIN, 0}};
    int n = poll(p, 2, got ? -1 : timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) return -2;
    if (p[1].revents && !got) return -3;
    if (!p[0].revents) continue;
    ssize_t r = read(fd, buf + got, len - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return (long)got;
}

long frame_receive(int fd, char** body, int timeout_ms, int signal_fd) {
  unsigned char head[4];
  long r = read_exact(fd, (char*)head, 4, timeout_ms, signal_fd);
  if (r != 4) return r < 0 ? r : -1;
  size_t len = (size_t)head[0] << 24 | (size_t)head[1] << 16 | (size_t)head[2] << 8 | head[3];
  if (len == 0 || len > kMaxFrame) return -1;
  char* b = malloc(len + 1);
  if (!b) return -1;
  if (read_exact(fd, b, len, -1, -1) != (long)len) {
    free(b);
    return -1;
  }
  b[len] = '\0';
  *body = b;
  return (long)len;
}
