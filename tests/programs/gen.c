/* gen: output generator for jiffy's output-fidelity tests.
 *
 *   gen N [LEN]        N lines "<rank> <i> xxx...\n", each LEN bytes (default
 *                      24, at least long enough for the numbers), via stdio
 *   gen -u BYTES       one unterminated line of BYTES bytes: "<rank>" then a
 *                      repeating "0123456789abcdefghijklmnopqrstuvwxyz"
 *                      pattern, written with write(2) in 64 KB pieces
 *   gen -p TEXT FILE   writes TEXT (no newline; "\r" in TEXT is a carriage
 *                      return), waits until FILE exists, then writes "\n"
 *                      and exits: a progress bar or a prompt
 *
 * The rank is JIFFY_RANK, else PMI_RANK (hydra), else OMPI_COMM_WORLD_RANK,
 * else 0. Exits 0, or 141 when a write fails (EPIPE: as SIGPIPE would).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int rank(void) {
  const char* vars[] = {"JIFFY_RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; ++i) {
    const char* v = getenv(vars[i]);
    if (v && *v) return atoi(v);
  }
  return 0;
}

static void write_all(const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = write(1, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) exit(141);
    p += w;
    n -= (size_t)w;
  }
}

int main(int argc, char** argv) {
  int r = rank();
  if (argc >= 3 && strcmp(argv[1], "-u") == 0) {
    long long bytes = atoll(argv[2]);
    static const char pat[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    static char buf[65536];
    int head = snprintf(buf, sizeof buf, "%d", r);
    if (head > bytes) head = (int)bytes;
    write_all(buf, (size_t)head);
    long long left = bytes - head, pos = 0;
    while (left > 0) {
      size_t n = left < (long long)sizeof buf ? (size_t)left : sizeof buf;
      for (size_t i = 0; i < n; ++i) buf[i] = pat[(pos + (long long)i) % 36];
      write_all(buf, n);
      pos += (long long)n;
      left -= (long long)n;
    }
    return 0;
  }
  if (argc >= 4 && strcmp(argv[1], "-p") == 0) {
    char text[4096];
    size_t k = 0;
    for (const char* c = argv[2]; *c && k + 1 < sizeof text; ++c) {
      if (c[0] == '\\' && c[1] == 'r') { text[k++] = '\r'; ++c; }
      else text[k++] = *c;
    }
    write_all(text, k);
    struct timespec ts = {0, 10 * 1000 * 1000};
    while (access(argv[3], F_OK) != 0) nanosleep(&ts, NULL);
    write_all("\n", 1);
    return 0;
  }
  if (argc < 2) {
    fprintf(stderr, "usage: gen N [LEN] | gen -u BYTES | gen -p TEXT FILE\n");
    return 2;
  }
  long n = atol(argv[1]);
  int len = argc > 2 ? atoi(argv[2]) : 24;
  static char pad[1 << 16];
  memset(pad, 'x', sizeof pad);
  for (long i = 0; i < n; ++i) {
    int head = printf("%d %ld ", r, i);
    int fill = len - head - 1;
    if (fill > (int)sizeof pad) fill = (int)sizeof pad;
    if (fill > 0) fwrite(pad, 1, (size_t)fill, stdout);
    if (putchar('\n') == EOF) return 141;
  }
  return fflush(stdout) == 0 ? 0 : 141;
}
