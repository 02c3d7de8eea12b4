/* The program to run: found as execvp would find it, and classified by its
 * ELF dependencies the way src/launch/mpi_detect.cc does, reduced to the
 * one question the front asks: does it need PMIx (then jiffy-launch runs
 * the job from the start)? An unreadable or odd file counts as plain. */
#define _GNU_SOURCE
#include <elf.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "front/front.h"

enum { kMaxLibraries = 48, kMaxSearch = 32, kPath = 4096 };

static int executable_file(const char* path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

int program_resolve(const char* name, char* out, size_t size) {
  if (!*name) return -1;
  if (strchr(name, '/')) {
    if (!executable_file(name)) return -1;
    if (name[0] == '/') return snprintf(out, size, "%s", name) < (int)size ? 0 : -1;
    char cwd[kPath];
    if (!getcwd(cwd, sizeof cwd)) return -1;
    return snprintf(out, size, "%s/%s", cwd, name) < (int)size ? 0 : -1;
  }
  const char* path = getenv("PATH");
  if (!path) path = "/usr/bin:/bin";
  for (const char* p = path;; ++p) {
    const char* end = strchrnul(p, ':');
    char cand[kPath];
    int n = end == p ? snprintf(cand, sizeof cand, "./%s", name)
                     : snprintf(cand, sizeof cand, "%.*s/%s", (int)(end - p), p, name);
    if (n > 0 && n < (int)sizeof cand && executable_file(cand)) {
      if (cand[0] == '/') return snprintf(out, size, "%s", cand) < (int)size ? 0 : -1;
      char cwd[kPath];
      if (!getcwd(cwd, sizeof cwd)) return -1;
      return snprintf(out, size, "%s/%s", cwd, cand) < (int)size ? 0 : -1;
    }
    if (!*end) return -1;
    p = end;
  }
}

static int starts(const char* s, const char* prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static const char* base_name(const char* p) {
  const char* s = strrchr(p, '/');
  return s ? s + 1 : p;
}

static int is_interpreter(const char* base) {
  static const char* names[] = {"python", "perl", "ruby", "julia", "Rscript", "R", "node", "octave"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; ++i) {
    if (starts(base, names[i])) return 1;
  }
  return 0;
}

static int is_system_library(const char* name) {
  static const char* names[] = {"libc.so",   "libm.so",     "libstdc++", "libgcc_s", "libpthread",
                                "libdl.",    "librt.",      "ld-linux",  "libgfortran",
                                "libquadmath", "libz.so",   "libgomp",   "libutil."};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; ++i) {
    if (starts(name, names[i])) return 1;
  }
  return 0;
}

static enum program_kind classify_library(const char* name) {
  if (starts(name, "libmpi.so.4") || starts(name, "libopen-rte.") || starts(name, "libopen-pal.") ||
      starts(name, "libmpi_mpifh.") || starts(name, "libmpi_usempi")) {
    return PROGRAM_NEEDS_PMIX;
  }
  if (starts(name, "libmpich") || starts(name, "libmpi.so.12") || starts(name, "libmpifort.so.12") ||
      starts(name, "libmpicxx.so.12")) {
    return PROGRAM_MPICH;
  }
  return PROGRAM_PLAIN;
}

/* "#!/usr/bin/env python3" -> is python an interpreter we know? 1/0;
 * -1 when the file is not a script. fd is left open at an unknown offset. */
static int script_needs_pmix(int fd) {
  char buf[256];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  if (n < 3 || buf[0] != '#' || buf[1] != '!') return -1;
  buf[n] = '\0';
  char* line = buf + 2;
  line[strcspn(line, "\n")] = '\0';
  char* words[2] = {NULL, NULL};
  int w = 0;
  for (char* tok = strtok(line, " \t"); tok && w < 2; tok = strtok(NULL, " \t")) words[w++] = tok;
  if (!words[0]) return 0;
  const char* interp = base_name(words[0]);
  if (strcmp(interp, "env") == 0 && words[1]) interp = base_name(words[1]);
  return is_interpreter(interp);
}

struct scan {
  char todo[kMaxLibraries][kPath];
  int head, tail;
  char seen[kMaxLibraries * 4][256];
  int nseen;
};

static void split_into(const char* list, size_t len, const char* origin, char dirs[][kPath], int* n) {
  const char* end = list + len;
  for (const char* p = list; p <= end && *n < kMaxSearch;) {
    const char* e = memchr(p, ':', (size_t)(end - p));
    if (!e) e = end;
    char dir[kPath];
    int l = snprintf(dir, sizeof dir, "%.*s", (int)(e - p), p);
    if (l > 0 && l < (int)sizeof dir) {
      const char* o = strstr(dir, "${ORIGIN}") ? "${ORIGIN}" : strstr(dir, "$ORIGIN") ? "$ORIGIN" : NULL;
      if (o) {
        char* at = strstr(dir, o);
        snprintf(dirs[*n], kPath, "%.*s%s%s", (int)(at - dir), dir, origin, at + strlen(o));
      } else {
        memcpy(dirs[*n], dir, (size_t)l + 1);
      }
      ++*n;
    }
    p = e + 1;
  }
}

static void find_and_queue(struct scan* s, const char* lib, char search[][kPath], int nsearch) {
  static const char* system_dirs[] = {"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64",
                                      "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib"};
  char llp_dirs[kMaxSearch][kPath];
  int nllp = 0;
  const char* llp = getenv("LD_LIBRARY_PATH");
  if (llp) split_into(llp, strlen(llp), ".", llp_dirs, &nllp);
  int total = nsearch + nllp + (int)(sizeof system_dirs / sizeof system_dirs[0]);
  for (int i = 0; i < total && s->tail < kMaxLibraries; ++i) {
    const char* dir = i < nsearch ? search[i] : i < nsearch + nllp ? llp_dirs[i - nsearch]
                                                                   : system_dirs[i - nsearch - nllp];
    char p[kPath];
    if (snprintf(p, sizeof p, "%s/%s", dir, lib) >= (int)sizeof p) continue;
    if (access(p, R_OK) == 0) {
      memcpy(s->todo[s->tail++], p, strlen(p) + 1);
      return;
    }
  }
}

/* Reads one ELF's DT_NEEDED entries; returns the first MPI kind among them
 * and queues the non-system ones not seen before. Takes fd (the file opened
 * already) or opens path. */
static enum program_kind scan_one(struct scan* s, const char* path, int fd) {
  if (fd < 0) fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return PROGRAM_PLAIN;
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size < (off_t)sizeof(Elf64_Ehdr)) {
    close(fd);
    return PROGRAM_PLAIN;
  }
  size_t size = (size_t)st.st_size;
  const unsigned char* m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (m == MAP_FAILED) return PROGRAM_PLAIN;
  enum program_kind kind = PROGRAM_PLAIN;
#define IN(off, len) ((size_t)(off) <= size && (size_t)(len) <= size - (size_t)(off))
  const Elf64_Ehdr* eh = (const Elf64_Ehdr*)m;
  if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
      !IN(eh->e_phoff, (size_t)eh->e_phnum * sizeof(Elf64_Phdr))) {
    goto out;
  }
  const Elf64_Phdr* ph = (const Elf64_Phdr*)(m + eh->e_phoff);
  for (int i = 0; i < eh->e_phnum; ++i) {
    if (ph[i].p_type != PT_DYNAMIC || !IN(ph[i].p_offset, ph[i].p_filesz)) continue;
    const Elf64_Dyn* dyn = (const Elf64_Dyn*)(m + ph[i].p_offset);
    size_t n = ph[i].p_filesz / sizeof(Elf64_Dyn);
    size_t strtab = SIZE_MAX;
    for (size_t j = 0; j < n && dyn[j].d_tag != DT_NULL; ++j) {
      if (dyn[j].d_tag != DT_STRTAB) continue;
      for (int k = 0; k < eh->e_phnum; ++k) {
        if (ph[k].p_type == PT_LOAD && dyn[j].d_un.d_ptr >= ph[k].p_vaddr &&
            dyn[j].d_un.d_ptr < ph[k].p_vaddr + ph[k].p_filesz) {
          strtab = dyn[j].d_un.d_ptr - ph[k].p_vaddr + ph[k].p_offset;
        }
      }
    }
    if (strtab == SIZE_MAX) goto out;
    char search[kMaxSearch][kPath];
    int nsearch = 0;
    char origin[kPath];
    const char* slash = strrchr(path, '/');
    snprintf(origin, sizeof origin, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    for (size_t j = 0; j < n && dyn[j].d_tag != DT_NULL; ++j) {
      if (dyn[j].d_tag != DT_RPATH && dyn[j].d_tag != DT_RUNPATH) continue;
      size_t at = strtab + dyn[j].d_un.d_val;
      if (!IN(at, 1)) continue;
      split_into((const char*)m + at, strnlen((const char*)m + at, size - at), origin, search, &nsearch);
    }
    for (size_t j = 0; j < n && dyn[j].d_tag != DT_NULL; ++j) {
      if (dyn[j].d_tag != DT_NEEDED) continue;
      size_t at = strtab + dyn[j].d_un.d_val;
      if (!IN(at, 1)) continue;
      char lib[256];
      snprintf(lib, sizeof lib, "%.*s", (int)strnlen((const char*)m + at, size - at), (const char*)m + at);
      enum program_kind k = classify_library(lib);
      if (k != PROGRAM_PLAIN) {
        kind = k;
        goto out;
      }
      if (is_system_library(lib)) continue;
      int seen = 0;
      for (int q = 0; q < s->nseen && !seen; ++q) seen = strcmp(s->seen[q], lib) == 0;
      if (seen || s->nseen >= (int)(sizeof s->seen / sizeof s->seen[0])) continue;
      memcpy(s->seen[s->nseen++], lib, strlen(lib) + 1);
      find_and_queue(s, lib, search, nsearch);
    }
  }
#undef IN
out:
  munmap((void*)m, size);
  return kind;
}

enum program_kind program_kind(const char* path) {
  /* By name first: a "python3" that is really a shell shim is python. */
  if (is_interpreter(base_name(path))) return PROGRAM_NEEDS_PMIX;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return PROGRAM_PLAIN;
  int script = script_needs_pmix(fd);
  if (script >= 0) {
    close(fd);
    return script ? PROGRAM_NEEDS_PMIX : PROGRAM_PLAIN;
  }
  static struct scan s; /* large: keep it off the stack */
  s.head = 0;
  s.tail = 0;
  s.nseen = 0;
  memcpy(s.todo[s.tail++], path, strlen(path) + 1);
  /* Breadth first, as detect_mpi: the first MPI library met decides. */
  for (int inspected = 0; s.head < s.tail && inspected < kMaxLibraries; ++inspected) {
    enum program_kind k = scan_one(&s, s.todo[s.head], s.head == 0 ? fd : -1);
    s.head++;
    if (k != PROGRAM_PLAIN) return k;
  }
  return PROGRAM_PLAIN;
}
