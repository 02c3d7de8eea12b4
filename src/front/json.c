/* A small JSON reader for the daemon's answers (grant, queued, error): the
 * values are located in the source text, not copied. The front stays free
 * of a C++ runtime, so it cannot use the JSON library jiffy-launch uses;
 * what it reads is small and comes from our own daemon. */
#include <string.h>

#include "front/front.h"

struct parser {
  const char* s;
  size_t len;
  size_t pos;
  struct json* nodes;
  int max;
  int count;
  int depth;
};

static void skip_space(struct parser* p) {
  while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' ||
                             p->s[p->pos] == '\r')) {
    p->pos++;
  }
}

/* Scans a string starting at the opening quote; sets start and len to its raw
 * contents. */
static int scan_string(struct parser* p, const char** start, size_t* len) {
  if (p->pos >= p->len || p->s[p->pos] != '"') return -1;
  size_t i = ++p->pos;
  while (i < p->len && p->s[i] != '"') {
    if ((unsigned char)p->s[i] < 0x20) return -1;
    i += p->s[i] == '\\' ? 2 : 1;
  }
  if (i >= p->len) return -1;
  *start = p->s + p->pos;
  *len = i - p->pos;
  p->pos = i + 1;
  return 0;
}

static int parse_value(struct parser* p);

static int new_node(struct parser* p, enum json_type t) {
  if (p->count >= p->max) return -1;
  struct json* n = &p->nodes[p->count];
  memset(n, 0, sizeof *n);
  n->type = t;
  n->text = p->s + p->pos;
  n->first = -1;
  n->next = -1;
  return p->count++;
}

static int parse_container(struct parser* p, int is_object) {
  int self = new_node(p, is_object ? JSON_OBJECT : JSON_ARRAY);
  if (self < 0 || ++p->depth > 32) return -1;
  p->pos++; /* [ or { */
  int prev = -1;
  skip_space(p);
  if (p->pos < p->len && p->s[p->pos] == (is_object ? '}' : ']')) {
    p->pos++;
  } else {
    for (;;) {
      const char* key = NULL;
      size_t key_len = 0;
      skip_space(p);
      if (is_object) {
        if (scan_string(p, &key, &key_len) != 0) return -1;
        skip_space(p);
        if (p->pos >= p->len || p->s[p->pos++] != ':') return -1;
        skip_space(p);
      }
      int child = parse_value(p);
      if (child < 0) return -1;
      p->nodes[child].key = key;
      p->nodes[child].key_len = key_len;
      if (prev < 0) p->nodes[self].first = child;
      else p->nodes[prev].next = child;
      prev = child;
      skip_space(p);
      if (p->pos >= p->len) return -1;
      char c = p->s[p->pos++];
      if (c == ',') continue;
      if (c == (is_object ? '}' : ']')) break;
      return -1;
    }
  }
  p->nodes[self].len = (size_t)(p->s + p->pos - p->nodes[self].text);
  p->depth--;
  return self;
}

static int parse_value(struct parser* p) {
  skip_space(p);
  if (p->pos >= p->len) return -1;
  char c = p->s[p->pos];
  if (c == '{' || c == '[') return parse_container(p, c == '{');
  if (c == '"') {
    int n = new_node(p, JSON_STRING);
    if (n < 0 || scan_string(p, &p->nodes[n].text, &p->nodes[n].len) != 0) return -1;
    return n;
  }
  static const struct {
    const char* word;
    enum json_type type;
  } words[] = {{"true", JSON_BOOL}, {"false", JSON_BOOL}, {"null", JSON_NULL}};
  for (size_t i = 0; i < sizeof words / sizeof words[0]; ++i) {
    size_t l = strlen(words[i].word);
    if (p->len - p->pos >= l && memcmp(p->s + p->pos, words[i].word, l) == 0) {
      int n = new_node(p, words[i].type);
      if (n < 0) return -1;
      p->nodes[n].len = l;
      p->pos += l;
      return n;
    }
  }
  if (c == '-' || (c >= '0' && c <= '9')) {
    int n = new_node(p, JSON_NUMBER);
    if (n < 0) return -1;
    size_t start = p->pos;
    while (p->pos < p->len && strchr("+-0123456789.eE", p->s[p->pos])) p->pos++;
    p->nodes[n].len = p->pos - start;
    return n;
  }
  return -1;
}

int json_parse(const char* text, size_t len, struct json* nodes, int max) {
  struct parser p = {text, len, 0, nodes, max, 0, 0};
  if (parse_value(&p) != 0) return -1;
  skip_space(&p);
  return p.pos == len ? p.count : -1;
}

int json_member(const struct json* nodes, int obj, const char* key) {
  if (obj < 0 || nodes[obj].type != JSON_OBJECT) return -1;
  size_t l = strlen(key);
  for (int c = nodes[obj].first; c >= 0; c = nodes[c].next) {
    if (nodes[c].key_len == l && memcmp(nodes[c].key, key, l) == 0) return c;
  }
  return -1;
}

long long json_uint(const struct json* nodes, int n) {
  if (n < 0 || nodes[n].type != JSON_NUMBER || nodes[n].len == 0 || nodes[n].len > 18) return -1;
  long long v = 0;
  for (size_t i = 0; i < nodes[n].len; ++i) {
    char c = nodes[n].text[i];
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

int json_string_is(const struct json* nodes, int n, const char* s) {
  return n >= 0 && nodes[n].type == JSON_STRING && nodes[n].len == strlen(s) &&
         memcmp(nodes[n].text, s, nodes[n].len) == 0;
}
