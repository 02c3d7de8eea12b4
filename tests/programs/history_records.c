/* history_records: history journal records for jiffy's end-to-end tests
 * (tests/e2e/test_history_daemon.py), faster than Python's checksums.
 *
 *   history_records N SEED     writes N valid records (src/proto/history.h)
 *                              to stdout, launcher's, outcome exited 0; record
 *                              i has the tag "%016llx%016llx" of SEED and i
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../src/proto/history.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: history_records N SEED\n");
    return 2;
  }
  long n = atol(argv[1]);
  unsigned long long seed = strtoull(argv[2], NULL, 10);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  long long now = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
  static struct jiffy_history_record r;
  for (long i = 0; i < n; ++i) {
    memset(&r, 0, sizeof r);
    r.magic = JIFFY_HISTORY_MAGIC;
    r.size = sizeof r;
    r.version = JIFFY_HISTORY_VERSION;
    r.source = JIFFY_HISTORY_FROM_LAUNCHER;
    r.outcome = JIFFY_OUTCOME_EXITED;
    r.pid = 1;
    r.ntasks = 1;
    r.ngroups = 1;
    r.submit_ns = now - 2000000000LL;
    r.start_ns = now - 1000000000LL;
    r.end_ns = now;
    snprintf(r.tag, sizeof r.tag, "%016llx%016llx", seed, (unsigned long long)i);
    snprintf(r.command, sizeof r.command, "record %ld", i);
    snprintf(r.cores, sizeof r.cores, "0");
    r.checksum = jiffy_history_checksum(&r);
    if (fwrite(&r, sizeof r, 1, stdout) != 1) return 1;
  }
  return 0;
}
