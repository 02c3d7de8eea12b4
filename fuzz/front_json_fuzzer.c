/* Fuzzes the front's JSON reader (src/front/json.c), which reads every
 * message the daemon sends a launcher (queued, grant, error).
 *
 * Input: one message body.
 *
 * Invariants: the parser never reads outside the input; every node it
 * returns lies inside the input (its text, and an object member's key);
 * children are linked forward only (no cycles); the lookups the front
 * makes on a message (type, job, ranks[].cpus/cores/gpus) stay in range. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "front/front.h"

#define CHECK(c) \
  do {           \
    if (!(c)) abort(); \
  } while (0)

static int inside(const char* base, size_t len, const char* p, size_t n) {
  return p >= base && (size_t)(p - base) <= len && n <= len - (size_t)(p - base);
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  /* An exact-size copy, so reading one byte past the input is caught. */
  char* text = malloc(size ? size : 1);
  if (!text) return 0;
  memcpy(text, data, size);
  struct json nodes[128];
  int count = json_parse(text, size, nodes, 128);
  CHECK(count >= -1 && count <= 128);
  for (int i = 0; i < count; ++i) {
    CHECK(inside(text, size, nodes[i].text, nodes[i].len));
    if (nodes[i].key) CHECK(inside(text, size, nodes[i].key, nodes[i].key_len));
    CHECK(nodes[i].first == -1 || (nodes[i].first > i && nodes[i].first < count));
    CHECK(nodes[i].next == -1 || (nodes[i].next > i && nodes[i].next < count));
  }
  if (count > 0) {
    int type = json_member(nodes, 0, "type");
    (void)json_string_is(nodes, type, "grant");
    (void)json_uint(nodes, json_member(nodes, 0, "job"));
    int ranks = json_member(nodes, 0, "ranks");
    if (ranks >= 0 && nodes[ranks].type == JSON_ARRAY) {
      for (int e = nodes[ranks].first; e >= 0; e = nodes[e].next) {
        int cpus = json_member(nodes, e, "cpus");
        if (cpus >= 0 && nodes[cpus].type == JSON_ARRAY) {
          for (int c = nodes[cpus].first; c >= 0; c = nodes[c].next) (void)json_uint(nodes, c);
        }
        (void)json_member(nodes, e, "gpus");
      }
    }
  }
  free(text);
  return 0;
}
