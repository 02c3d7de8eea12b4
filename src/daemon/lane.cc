#include "daemon/lane.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>

#include "proto/lane.h"
#include "sched/layout.h"
#include "util/error.h"

namespace jiffy {

namespace {

// Why the file stays mapped, with a SIGBUS guard, rather than read and
// written with pread/pwrite: the job-id counter is shared with launchers
// as an atomic in the map (__atomic fetch-add, no system call on the
// front's launch path); with pread/pwrite it would need a lock round every
// allocation, in the front too. So an access beyond the file's end (anyone
// who can open it can truncate it) is caught instead: the handler replaces
// the whole map by zeroed private memory, where the faulting access then
// completes (reading zeros: no record, a header that fails verify()), puts
// a counter there that goes on beyond every id handed out, and marks the
// lane damaged; the next verify() shuts it. A SIGBUS anywhere else kills as
// it would have. No unwinding, no jump: any access, wherever it is, is safe.
struct Guard {
  char* volatile base = nullptr;
  std::size_t size = 0;
  volatile JobId next_job = 0;  // where ids go on after a fault
  volatile sig_atomic_t hit = 0;
};
Guard g_guards[8];

void on_sigbus(int sig, siginfo_t* si, void*) {
  char* at = static_cast<char*>(si->si_addr);
  for (Guard& g : g_guards) {
    char* base = g.base;
    if (!base || at < base || at >= base + g.size) continue;
    if (::mmap(base, g.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) ==
        MAP_FAILED) {
      break;
    }
    reinterpret_cast<jiffy_lane_header*>(base)->next_job = g.next_job;
    g.hit = 1;
    return;
  }
  ::signal(sig, SIG_DFL);  // not ours: the access faults again, and kills
}

int add_guard(void* base, std::size_t size, JobId next_job) {
  static bool installed = false;
  if (!installed) {
    struct sigaction sa{};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (::sigaction(SIGBUS, &sa, nullptr) != 0) return -1;
    installed = true;
  }
  for (int i = 0; i < static_cast<int>(std::size(g_guards)); ++i) {
    if (g_guards[i].base) continue;
    g_guards[i].size = size;
    g_guards[i].next_job = next_job;
    g_guards[i].hit = 0;
    g_guards[i].base = static_cast<char*>(base);
    return i;
  }
  return -1;
}

// The bytes of a text field up to its NUL (or its end), non-printable
// ones as '?': what a record says is shown in status, as JSON.
std::string text_field(const char* field, std::size_t size) {
  std::string s(field, strnlen(field, size));
  for (char& c : s) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  return s;
}

// The table a launcher reads: slot u's placement, as layout() gives a
// one-slot request bound to its core. Empty when a slot does not fit the
// file's fixed fields (the lane is then not used).
std::vector<jiffy_lane_slot> slot_table(const ResourceSet& set, const std::vector<SlotRef>& slots) {
  std::vector<jiffy_lane_slot> table(slots.size());
  for (std::size_t u = 0; u < slots.size(); ++u) {
    Request r;
    r.id = 1;
    Grant g;
    g.id = 1;
    g.slots = {slots[u]};
    std::vector<RankPlacement> p = layout(set, r, g, Bind::Core);
    if (p.size() != 1 || p[0].cpus.size() > JIFFY_LANE_MAX_CPUS) return {};
    jiffy_lane_slot& e = table[u];
    std::memset(&e, 0, sizeof e);
    e.core = slots[u].core;
    e.slot = slots[u].slot;
    e.ncpus = static_cast<std::uint16_t>(p[0].cpus.size());
    for (std::size_t i = 0; i < p[0].cpus.size(); ++i) {
      if (p[0].cpus[i] < 0 || p[0].cpus[i] > 65535) return {};
      e.cpus[i] = static_cast<std::uint16_t>(p[0].cpus[i]);
    }
  }
  return table;
}

}  // namespace

Lane::Lane(const std::string& path, const ResourceSet& set, JobId next_job,
           void (*warn)(const std::string&, void*), void* warn_arg)
    : local_(sizeof(jiffy_lane_header)), path_(path), warn_(warn), warn_arg_(warn_arg) {
  header_ = reinterpret_cast<jiffy_lane_header*>(local_.data());
  std::memset(header_, 0, sizeof *header_);
  slot_index_.resize(set.cores.size());
  for (std::size_t c = 0; c < set.cores.size(); ++c) {
    for (int s = 0; s < set.cores[c].slots; ++s) {
      slot_index_[c].push_back(static_cast<int>(slots_.size()));
      slots_.push_back({static_cast<int>(c), s});
    }
  }
  raise_next_job(next_job);
  auto off = [&](const std::string& why) {
    warn("the lane is off (" + why + "): every launch asks the daemon", warn_arg);
    slots_.clear();
    slot_index_.clear();
  };
  if (slots_.empty() || slots_.size() > JIFFY_LANE_MAX_SLOTS) {
    off("too many slots");
    return;
  }
  std::vector<jiffy_lane_slot> table = slot_table(set, slots_);
  if (table.empty()) {
    off("a core has too many CPUs");
    return;
  }

  const std::size_t table_bytes = table.size() * sizeof(jiffy_lane_slot);
  const std::size_t bytes =
      sizeof(jiffy_lane_header) + table_bytes + table.size() * sizeof(jiffy_lane_job);
  fd_ = Fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  struct stat st;
  if (!fd_ || ::fstat(fd_.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != ::geteuid()) {
    off(path + ": " + std::strerror(errno));
    return;
  }
  // A predecessor's file is kept if it describes these slots: launchers may
  // hold some of them still, and their locks are on this file.
  bool same = false;
  if (static_cast<std::size_t>(st.st_size) == bytes) {
    jiffy_lane_header old;
    std::vector<jiffy_lane_slot> old_table(table.size());
    same = ::pread(fd_.get(), &old, sizeof old, 0) == static_cast<ssize_t>(sizeof old) &&
           old.magic == JIFFY_LANE_MAGIC && old.nslots == table.size() &&
           ::pread(fd_.get(), old_table.data(), table_bytes, sizeof old) ==
               static_cast<ssize_t>(table_bytes) &&
           std::memcmp(old_table.data(), table.data(), table_bytes) == 0;
  }
  if (!same && st.st_size > 0) {
    // Another resource set's file: remade only when nobody holds any of it.
    struct flock fl{};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 0;  // the whole file and beyond
    if (::fcntl(fd_.get(), F_OFD_GETLK, &fl) != 0 || fl.l_type != F_UNLCK) {
      fd_.reset();
      off("launchers of an earlier daemon with other resources hold " + path);
      return;
    }
  }
  // The blocks are reserved before anything is written through the map: a
  // write to a hole of a full file system would be a SIGBUS, not an error.
  if ((!same && ::ftruncate(fd_.get(), 0) != 0) ||
      (errno = ::posix_fallocate(fd_.get(), 0, static_cast<off_t>(bytes))) != 0) {
    fd_.reset();
    off(path + ": " + std::strerror(errno));
    return;
  }
  void* map = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
  if (map == MAP_FAILED) {
    fd_.reset();
    off(path + ": " + std::strerror(errno));
    return;
  }
  JobId ids = peek_next_job();
  guard_ = add_guard(map, bytes, ids + kIdMargin);
  if (guard_ < 0) {
    ::munmap(map, bytes);
    fd_.reset();
    off("no SIGBUS guard for it");
    return;
  }
  map_size_ = bytes;
  auto* file = static_cast<jiffy_lane_header*>(map);
  header_ = file;
  jobs_ = reinterpret_cast<jiffy_lane_job*>(static_cast<char*>(map) + sizeof(jiffy_lane_header) +
                                                  table_bytes);
  if (same) {
    __atomic_store_n(&header_->open, 0u, __ATOMIC_SEQ_CST);
  } else {
    std::memcpy(static_cast<char*>(map) + sizeof(jiffy_lane_header), table.data(), table_bytes);
    header_->nslots = static_cast<std::uint32_t>(table.size());
    header_->open = 0;
    header_->next_job = 0;
    __atomic_store_n(&header_->magic, JIFFY_LANE_MAGIC, __ATOMIC_SEQ_CST);  // complete now
  }
  raise_next_job(ids);
  table_ = std::move(table);
  seen_ = peek_next_job();
  g_guards[guard_].next_job = seen_ + kIdMargin;
  usable_ = true;
  for (int u = 0; u < size(); ++u) {
    if (lock(u, F_WRLCK)) continue;
    if (errno != EAGAIN && errno != EACCES) {  // no OFD locks on this file system
      usable_ = false;
      header_ = reinterpret_cast<jiffy_lane_header*>(local_.data());
      g_guards[guard_].base = nullptr;
      guard_ = -1;
      ::munmap(map, map_size_);
      map_size_ = 0;
      fd_.reset();
      off(path + ": " + std::strerror(errno));
      elsewhere_.clear();
      return;
    }
    elsewhere_.push_back(u);
  }
}

bool Lane::hold_daemon_byte() {
  if (!usable_) return false;
  if (!lock(JIFFY_LANE_DAEMON_BYTE, F_WRLCK)) {
    usable_ = false;  // cannot be: one daemon per file; keep the lane shut
    return false;
  }
  return true;
}

std::optional<LaneJob> Lane::job_at(int u) const {
  std::optional<LaneJob> j = record_at(u);
  if (!j || !j->whole) return std::nullopt;
  return j;
}

std::optional<LaneJob> Lane::record_at(int u) const {
  if (!usable_ || u < 0 || u >= size()) return std::nullopt;
  const jiffy_lane_job& r = jobs_[u];
  const JobId job = __atomic_load_n(&r.job, __ATOMIC_ACQUIRE);
  if (job == 0) return std::nullopt;
  jiffy_lane_job copy;
  std::memcpy(&copy, &r, sizeof copy);
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  if (__atomic_load_n(&r.job, __ATOMIC_RELAXED) != job || !valid_job_id(job) || g_guards[guard_].hit) {
    return std::nullopt;  // being rewritten (its writer holds the slot), or the file is gone
  }
  // From here on, the copy only: nothing is read from the file twice.
  LaneJob j;
  j.job = job;
  j.pid = copy.pid;
  j.pgid = copy.pgid;
  j.first = copy.first;
  j.count = copy.count;
  j.claimed_s = static_cast<double>(copy.claimed_ns) / 1e9;
  j.tag = text_field(copy.tag, sizeof copy.tag);
  if (j.tag.size() < 16 || j.tag.size() > 64 ||
      j.tag.find_first_not_of("0123456789abcdef") != std::string::npos) {
    j.tag.clear();
  }
  j.command = text_field(copy.command, sizeof copy.command);
  j.whole = j.first >= 0 && j.count >= 1 && j.first <= size() - j.count && u >= j.first &&
            u - j.first < j.count && j.pid > 0 && j.pgid >= 0 && !j.tag.empty();
  return j;
}

bool Lane::verify(bool full) {
  if (!usable_) return false;
  const Guard& g = g_guards[guard_];
  const char* why = nullptr;
  // Each field read once (a SIGBUS here reads zeros, and g.hit says so).
  const std::uint64_t magic = __atomic_load_n(&header_->magic, __ATOMIC_SEQ_CST);
  const std::uint32_t nslots = __atomic_load_n(&header_->nslots, __ATOMIC_SEQ_CST);
  const JobId next = __atomic_load_n(&header_->next_job, __ATOMIC_SEQ_CST);
  struct stat st;
  if (g.hit || (full && (::fstat(fd_.get(), &st) != 0 || static_cast<std::size_t>(st.st_size) < map_size_))) {
    why = "it was cut short";
  } else if (magic != JIFFY_LANE_MAGIC || nslots != static_cast<std::uint32_t>(size())) {
    why = "its header was overwritten";
  } else if (next < seen_ || next - seen_ > kIdMargin) {
    why = "its job-id counter was overwritten";
  } else if (full) {
    std::vector<jiffy_lane_slot> now(table_.size());
    std::memcpy(now.data(), header_ + 1, now.size() * sizeof(jiffy_lane_slot));
    if (g.hit) {
      why = "it was cut short";
    } else if (std::memcmp(now.data(), table_.data(), now.size() * sizeof(jiffy_lane_slot)) != 0) {
      why = "its slot table was overwritten";
    }
  }
  if (why) {
    shut(why);
    return false;
  }
  seen_ = next;
  g_guards[guard_].next_job = seen_ + kIdMargin;
  return true;
}

void Lane::resync() {
  if (!usable_ || g_guards[guard_].hit) return;
  JobId next = __atomic_load_n(&header_->next_job, __ATOMIC_SEQ_CST);
  if (next >= seen_) {
    seen_ = next;
    g_guards[guard_].next_job = seen_ + kIdMargin;
  }
}

// Ids go on from beyond any a launcher can have taken since the last look;
// the locks stay (slots lent come back once their holders let go), the
// daemon byte goes (a launcher takes nothing from a lane whose daemon is
// not seen alive).
void Lane::shut(const std::string& why) {
  warn_("the lane file " + path_ + " is damaged (" + why +
            "): the lane is closed, every launch asks the daemon",
        warn_arg_);
  JobId next = seen_ + kIdMargin;
  if (g_guards[guard_].hit) {  // our private copy since the fault: ids were taken from it
    next = std::max(next, __atomic_load_n(&header_->next_job, __ATOMIC_SEQ_CST));
  }
  g_guards[guard_].base = nullptr;
  guard_ = -1;
  ::munmap(header_, map_size_);
  map_size_ = 0;
  header_ = reinterpret_cast<jiffy_lane_header*>(local_.data());
  jobs_ = nullptr;
  usable_ = false;
  damaged_ = true;
  lock(JIFFY_LANE_DAEMON_BYTE, F_UNLCK);
  raise_next_job(next);
}

Lane::~Lane() {
  if (usable_) set_open(false);
  if (guard_ >= 0) g_guards[guard_].base = nullptr;
  if (map_size_) ::munmap(header_, map_size_);
}

int Lane::index(SlotRef s) const {
  if (s.core < 0 || static_cast<std::size_t>(s.core) >= slot_index_.size()) return -1;
  const std::vector<int>& row = slot_index_[static_cast<std::size_t>(s.core)];
  if (s.slot < 0 || static_cast<std::size_t>(s.slot) >= row.size()) return -1;
  return row[static_cast<std::size_t>(s.slot)];
}

void Lane::clear_job(int u, JobId job) {
  if (!usable_ || u < 0 || u >= size()) return;
  JobId expected = job;
  __atomic_compare_exchange_n(&jobs_[u].job, &expected, JobId{0}, false, __ATOMIC_SEQ_CST,
                              __ATOMIC_SEQ_CST);
}

bool Lane::lock(long u, short type) {
  struct flock fl{};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = u;
  fl.l_len = 1;
  return ::fcntl(fd_.get(), F_OFD_SETLK, &fl) == 0;
}

void Lane::lend(int u) { lock(u, F_UNLCK); }

bool Lane::take(int u) { return lock(u, F_WRLCK); }

bool Lane::held_by_other(int u) const {
  struct flock fl{};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = u;
  fl.l_len = 1;
  return ::fcntl(fd_.get(), F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
}

void Lane::set_open(bool open) {
  if (usable_) __atomic_store_n(&header_->open, open ? 1u : 0u, __ATOMIC_SEQ_CST);
}

JobId Lane::new_job_id() {
  for (;;) {
    JobId id = __atomic_fetch_add(&header_->next_job, 1, __ATOMIC_SEQ_CST);
    if (valid_job_id(id)) {
      known_next_ = std::max(known_next_, id + 1);
      return id;
    }
    if (id != 0) repair_next_job();  // 0 means none: take the next
  }
}

JobId Lane::peek_next_job() {
  JobId next = __atomic_load_n(&header_->next_job, __ATOMIC_SEQ_CST);
  if (next == 0) return 1;
  return valid_job_id(next) ? next : repair_next_job();
}

void Lane::raise_next_job(JobId at_least) {
  known_next_ = std::max(known_next_, at_least);
  JobId cur = __atomic_load_n(&header_->next_job, __ATOMIC_SEQ_CST);
  while (cur < at_least &&
         !__atomic_compare_exchange_n(&header_->next_job, &cur, at_least, false, __ATOMIC_SEQ_CST,
                                      __ATOMIC_SEQ_CST)) {
  }
}

// The file's counter is out of range: something wrote the file that is not
// us or a launcher of ours. Ids go on just above the highest one known, the
// daemon's and the slots' records' (jobs launchers run now), so none is
// handed out twice and none collides with a stand-in.
JobId Lane::repair_next_job() {
  JobId next = known_next_;
  for (int u = 0; u < size(); ++u) {
    if (std::optional<LaneJob> j = job_at(u)) next = std::max(next, j->job + 1);
  }
  if (next > kMaxJobId) throw Error("every job id is used; restart the daemon with a new state file");
  if (!warned_ids_) {
    warn_("the lane file's job counter was out of range; it goes on from " + std::to_string(next),
          warn_arg_);
    warned_ids_ = true;
  }
  known_next_ = next;
  __atomic_store_n(&header_->next_job, next, __ATOMIC_SEQ_CST);
  return next;
}

}  // namespace jiffy
