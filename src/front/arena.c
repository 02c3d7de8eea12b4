/* The front's malloc, in the musl build only (CMakeLists.txt): a bump
 * allocator over a static arena.
 *
 * Why: the front lives for one launch and frees next to nothing, while
 * musl's allocator spends some ten system calls and page faults on the
 * first few allocations (brk, mmap of its metadata, munmap on free): 15 us
 * of a 0.9 ms launch. Here an allocation is a pointer bump in memory that
 * is faulted in page by page as used. Freed memory is not reused (so
 * calloc's memory is always fresh zeros); a block that does not fit in
 * what is left of the arena comes from mmap. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

enum { kArenaBytes = 1 << 20, kAlign = 16 };

static unsigned char arena[kArenaBytes] __attribute__((aligned(kAlign)));
static size_t arena_used;

/* Before each block: its size, for realloc. */
struct block {
  size_t size;
  size_t pad;
};

void* malloc(size_t n) {
  size_t need = (sizeof(struct block) + n + kAlign - 1) & ~(size_t)(kAlign - 1);
  if (need < n) {
    errno = ENOMEM;
    return NULL;
  }
  unsigned char* p;
  if (need <= kArenaBytes - arena_used) {
    p = arena + arena_used;
    arena_used += need;
  } else {
    p = mmap(NULL, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      errno = ENOMEM;
      return NULL;
    }
  }
  ((struct block*)p)->size = n;
  return p + sizeof(struct block);
}

void free(void* p) { (void)p; }

void* calloc(size_t count, size_t size) {
  if (size && count > SIZE_MAX / size) {
    errno = ENOMEM;
    return NULL;
  }
  return malloc(count * size); /* never reused: already zero */
}

void* realloc(void* p, size_t n) {
  if (!p) return malloc(n);
  size_t old = ((struct block*)p - 1)->size;
  if (n <= old) return p;
  void* q = malloc(n);
  if (q) memcpy(q, p, old);
  return q;
}
