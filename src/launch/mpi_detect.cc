#include "launch/mpi_detect.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <deque>
#include <set>
#include <string_view>
#include <vector>

#include "util/fd.h"

namespace jiffy {

namespace {

constexpr int kMaxLibraries = 48;  // bound the work for huge dependency trees

struct Dynamic {
  std::vector<std::string> needed;
  std::vector<std::string> search;  // RPATH/RUNPATH entries, $ORIGIN expanded
};

std::string dirname_of(const std::string& p) {
  auto s = p.rfind('/');
  return s == std::string::npos ? "." : p.substr(0, s);
}

std::string basename_of(const std::string& p) {
  auto s = p.rfind('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}

void split_path_list(const std::string& list, const std::string& origin, std::vector<std::string>& out) {
  std::size_t start = 0;
  while (start <= list.size()) {
    std::size_t end = list.find(':', start);
    if (end == std::string::npos) end = list.size();
    std::string dir = list.substr(start, end - start);
    for (const char* o : {"$ORIGIN", "${ORIGIN}"}) {
      if (auto pos = dir.find(o); pos != std::string::npos) dir.replace(pos, std::strlen(o), origin);
    }
    if (!dir.empty()) out.push_back(dir);
    start = end + 1;
  }
}

// A read-only mapping of a whole file.
class Mapped {
 public:
  explicit Mapped(const std::string& path) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st;
    if (!fd || ::fstat(fd.get(), &st) != 0 || st.st_size < 64) return;
    size_ = static_cast<std::size_t>(st.st_size);
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd.get(), 0);
    if (p != MAP_FAILED) data_ = static_cast<const unsigned char*>(p);
  }
  ~Mapped() {
    if (data_) ::munmap(const_cast<unsigned char*>(data_), size_);
  }
  Mapped(const Mapped&) = delete;
  Mapped& operator=(const Mapped&) = delete;
  const unsigned char* data() const { return data_; }
  std::size_t size() const { return size_; }
  bool in(std::size_t off, std::size_t len) const { return data_ && off <= size_ && len <= size_ - off; }

 private:
  const unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

// Parses a 64-bit little-endian ELF's DT_NEEDED and run paths. Anything
// malformed yields an empty result.
Dynamic read_dynamic(const std::string& path) {
  Dynamic d;
  Mapped m(path);
  if (!m.in(0, sizeof(Elf64_Ehdr))) return d;
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(m.data());
  if (std::memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64) return d;
  if (!m.in(eh->e_phoff, std::size_t{eh->e_phnum} * sizeof(Elf64_Phdr))) return d;
  const auto* ph = reinterpret_cast<const Elf64_Phdr*>(m.data() + eh->e_phoff);
  auto vaddr_to_offset = [&](Elf64_Addr a) -> std::size_t {
    for (int i = 0; i < eh->e_phnum; ++i) {
      if (ph[i].p_type == PT_LOAD && a >= ph[i].p_vaddr && a < ph[i].p_vaddr + ph[i].p_filesz) {
        return static_cast<std::size_t>(a - ph[i].p_vaddr + ph[i].p_offset);
      }
    }
    return SIZE_MAX;
  };
  for (int i = 0; i < eh->e_phnum; ++i) {
    if (ph[i].p_type != PT_DYNAMIC || !m.in(ph[i].p_offset, ph[i].p_filesz)) continue;
    const auto* dyn = reinterpret_cast<const Elf64_Dyn*>(m.data() + ph[i].p_offset);
    std::size_t n = ph[i].p_filesz / sizeof(Elf64_Dyn);
    std::size_t strtab = SIZE_MAX;
    for (std::size_t j = 0; j < n && dyn[j].d_tag != DT_NULL; ++j) {
      if (dyn[j].d_tag == DT_STRTAB) strtab = vaddr_to_offset(dyn[j].d_un.d_ptr);
    }
    if (strtab == SIZE_MAX) return d;
    auto str = [&](Elf64_Xword off) -> std::string {
      std::size_t at = strtab + off;
      if (!m.in(at, 1)) return {};
      const char* s = reinterpret_cast<const char*>(m.data() + at);
      return std::string(s, strnlen(s, m.size() - at));
    };
    for (std::size_t j = 0; j < n && dyn[j].d_tag != DT_NULL; ++j) {
      if (dyn[j].d_tag == DT_NEEDED) d.needed.push_back(str(dyn[j].d_un.d_val));
      if (dyn[j].d_tag == DT_RPATH || dyn[j].d_tag == DT_RUNPATH) {
        split_path_list(str(dyn[j].d_un.d_val), dirname_of(path), d.search);
      }
    }
  }
  return d;
}

MpiKind classify_library(std::string_view name) {
  auto starts = [&](std::string_view p) { return name.substr(0, p.size()) == p; };
  if (starts("libmpi.so.4") || starts("libopen-rte.") || starts("libopen-pal.") ||
      starts("libmpi_mpifh.") || starts("libmpi_usempi")) {
    return MpiKind::OpenMpi;
  }
  if (starts("libmpich") || starts("libmpi.so.12") || starts("libmpifort.so.12") ||
      starts("libmpicxx.so.12")) {
    return MpiKind::Mpich;
  }
  return MpiKind::None;
}

bool is_system_library(std::string_view name) {
  for (std::string_view p : {"libc.so", "libm.so", "libstdc++", "libgcc_s", "libpthread", "libdl.",
                             "librt.", "ld-linux", "libgfortran", "libquadmath", "libz.so",
                             "libgomp", "libutil."}) {
    if (name.substr(0, p.size()) == p) return true;
  }
  return false;
}

std::string find_library(const std::string& name, const std::vector<std::string>& search) {
  std::vector<std::string> dirs = search;
  if (const char* llp = std::getenv("LD_LIBRARY_PATH")) split_path_list(llp, ".", dirs);
  for (const char* d : {"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64",
                        "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib"}) {
    dirs.emplace_back(d);
  }
  for (const std::string& dir : dirs) {
    std::string p = dir + "/" + name;
    if (::access(p.c_str(), R_OK) == 0) return p;
  }
  return {};
}

bool is_interpreter(const std::string& base) {
  for (const char* i : {"python", "perl", "ruby", "julia", "Rscript", "R", "node", "octave"}) {
    if (base.rfind(i, 0) == 0) return true;
  }
  return false;
}

// "#!/usr/bin/env python3" -> "python3"; "" when not a script.
std::string script_interpreter(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return {};
  char buf[256];
  ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  if (n < 3 || buf[0] != '#' || buf[1] != '!') return {};
  std::string line(buf + 2, static_cast<std::size_t>(n - 2));
  line = line.substr(0, line.find('\n'));
  std::vector<std::string> words;
  for (std::size_t i = 0; i < line.size();) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    std::size_t j = i;
    while (j < line.size() && line[j] != ' ' && line[j] != '\t') ++j;
    if (j > i) words.push_back(line.substr(i, j - i));
    i = j;
  }
  if (words.empty()) return {};
  std::string interp = basename_of(words[0]);
  if (interp == "env" && words.size() > 1) interp = basename_of(words[1]);
  return interp;
}

}  // namespace

const char* to_string(MpiKind k) {
  switch (k) {
    case MpiKind::None: return "none";
    case MpiKind::Mpich: return "mpich";
    case MpiKind::OpenMpi: return "openmpi";
    case MpiKind::Unknown: return "unknown";
  }
  return "?";
}

MpiKind detect_mpi(const std::string& path) {
  // By name first: a "python3" that is really a shell shim (pyenv) is python.
  if (is_interpreter(basename_of(path))) return MpiKind::Unknown;
  if (std::string interp = script_interpreter(path); !interp.empty()) {
    return is_interpreter(interp) ? MpiKind::Unknown : MpiKind::None;
  }
  std::deque<std::string> todo{path};
  std::set<std::string> seen;
  int inspected = 0;
  while (!todo.empty() && inspected++ < kMaxLibraries) {
    Dynamic d = read_dynamic(todo.front());
    todo.pop_front();
    for (const std::string& lib : d.needed) {
      if (MpiKind k = classify_library(lib); k != MpiKind::None) return k;
      if (is_system_library(lib) || !seen.insert(lib).second) continue;
      if (std::string p = find_library(lib, d.search); !p.empty()) todo.push_back(p);
    }
  }
  return MpiKind::None;
}

}  // namespace jiffy
