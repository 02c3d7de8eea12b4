#include "daemon/state_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <algorithm>

#include "proto/message.h"
#include "util/error.h"

namespace jiffy {

namespace {

constexpr std::size_t kMaxStateBytes = 64 * 1024 * 1024;
constexpr int kMaxIndex = 1 << 20;
constexpr std::size_t kPreallocBytes = 1 << 20;  // ~5,000 running jobs' worth

}  // namespace

std::string encode_state(const StoredState& s) {
  proto::Json jobs = proto::Json::array();
  for (const StoredJob& j : s.jobs) {
    proto::Json slots = proto::Json::array();
    for (const SlotRef& r : j.grant.slots) slots.push_back({r.core, r.slot});
    jobs.push_back({{"job", j.grant.id},
                    {"slots", std::move(slots)},
                    {"gpus", j.grant.gpus},
                    {"exclusive", j.grant.exclusive},
                    {"pid", j.pid},
                    {"pid_start", j.pid_start},
                    {"pgid", j.group.pgid},
                    {"sid", j.group.sid},
                    {"leader_start", j.group.leader_start},
                    {"tag", j.group.tag},
                    {"ntasks", j.ntasks},
                    {"command", j.command},
                    {"jobdir", j.jobdir},
                    {"parent", j.parent}});
  }
  // The trailing newline marks a complete record: a file cut short by a
  // crash mid-write is rejected, not half-trusted.
  return proto::Json{{"v", 1}, {"next_job", s.next_job}, {"jobs", std::move(jobs)}}.dump(
             -1, ' ', false, proto::Json::error_handler_t::replace) +
         "\n";
}

static StoredState decode_state_unchecked(std::string_view text) {
  // The record is the first line; bytes after it are a longer record's tail.
  std::size_t nl = text.find('\n');
  if (nl == std::string_view::npos) throw Error("state file is incomplete");
  text = text.substr(0, nl + 1);
  proto::Json j = proto::Json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw Error("state file is not a JSON object");
  j["type"] = "state";  // for the field validators' messages
  if (proto::get_int(j, "v", 1, 1) != 1) throw Error("state file has an unknown version");
  StoredState s;
  // next_job may be one past the last id (every id used).
  s.next_job = static_cast<JobId>(proto::get_int(j, "next_job", 1, kMaxJobId + 1));
  const proto::Json& jobs = j.at("jobs");
  if (!jobs.is_array()) throw Error("state file: 'jobs' is not a list");
  for (proto::Json job : jobs) {
    if (!job.is_object()) throw Error("state file: a job is not an object");
    job["type"] = "state";
    StoredJob sj;
    sj.grant.id = static_cast<JobId>(proto::get_int(job, "job", 1, kMaxJobId));
    for (auto [core, slot] : proto::get_int_pairs(job, "slots", kMaxIndex, 0, kMaxIndex - 1)) {
      sj.grant.slots.push_back({core, slot});
    }
    if (sj.grant.slots.empty()) throw Error("state file: a job holds no slot");
    sj.grant.gpus = proto::get_int_list(job, "gpus", kMaxIndex, 0, kMaxIndex);
    sj.grant.exclusive = proto::get_bool(job, "exclusive", false);
    sj.pid = static_cast<int>(proto::get_int(job, "pid", 0, 1 << 30));
    sj.pid_start = static_cast<unsigned long long>(proto::get_int(job, "pid_start", 0, INT64_MAX));
    sj.group.pgid = static_cast<pid_t>(proto::get_int(job, "pgid", 0, 1 << 30));
    sj.group.sid = static_cast<pid_t>(proto::get_int(job, "sid", 0, 1 << 30));
    sj.group.leader_start =
        static_cast<unsigned long long>(proto::get_int(job, "leader_start", 0, INT64_MAX));
    sj.group.tag = proto::get_string(job, "tag", 64);
    if (!sj.group.tag.empty() && !is_job_tag(sj.group.tag)) throw Error("state file: bad tag");
    sj.ntasks = static_cast<int>(proto::get_int(job, "ntasks", 0, kMaxIndex));
    sj.command = proto::get_string(job, "command", 4096);
    sj.jobdir = job.contains("jobdir") ? proto::get_string(job, "jobdir", 4096) : "";
    // (Absent from the files of daemons older than spawns: a launch.)
    sj.parent =
        job.contains("parent") ? static_cast<JobId>(proto::get_int(job, "parent", 0, kMaxJobId)) : 0;
    if (sj.parent == sj.grant.id) throw Error("state file: a job is its own parent");
    s.jobs.push_back(std::move(sj));
  }
  return s;
}

// A missing key or a mistyped value surfaces as nlohmann's exception deep
// inside; the header promises jiffy::Error.
StoredState decode_state(std::string_view text) {
  try {
    return decode_state_unchecked(text);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(std::string("state file: ") + e.what());
  }
}

StateFile::StateFile(std::string path) : path_(std::move(path)) {}

// The file decides what the daemon kills and holds, so it must be ours as
// the daemon writes it: a regular file owned by our euid, mode 0600, not
// reached through a symlink. O_NONBLOCK: a FIFO planted there must not
// block the daemon in open() (SIGTERM is already blocked then).
bool StateFile::open_checked(Fd& fd, int flags, const char* why_prefix) {
  fd = Fd(::open(path_.c_str(), flags | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600));
  if (!fd) {
    if (errno != ENOENT) refused(why_prefix, std::strerror(errno));
    return false;
  }
  struct stat st;
  const char* why = nullptr;
  if (::fstat(fd.get(), &st) != 0) {
    why = std::strerror(errno);
  } else if (!S_ISREG(st.st_mode)) {
    why = "not a regular file";
  } else if (st.st_uid != ::geteuid()) {
    why = "owned by another user";
  } else if ((st.st_mode & 07777) != 0600) {
    why = "its mode is not 0600";
  }
  if (why) {
    fd.reset();
    refused(why_prefix, why);
    return false;
  }
  return true;
}

void StateFile::refused(const char* what, const char* why) {
  if (refused_warned_) return;
  refused_warned_ = true;
  std::fprintf(stderr, "jiffyd: %s the state file %s: %s\n", what, path_.c_str(), why);
}

StoredState StateFile::load() {
  Fd fd;
  if (!open_checked(fd, O_RDONLY, "ignoring")) return {};
  std::string text;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd.get(), buf, sizeof buf)) > 0 && text.size() < kMaxStateBytes) {
    text.append(buf, static_cast<std::size_t>(n));
  }
  if (text.empty()) return {};
  try {
    return decode_state(text);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "jiffyd: ignoring the state file %s: %s\n", path_.c_str(), e.what());
    return {};
  }
}

// One write of the whole record at offset 0 of a file whose space was
// reserved when it was opened. What follows the record's newline (zeros, a
// longer earlier record's tail) is ignored: decode_state reads the first
// line only. A write cut short (a fatal signal can stop a large write
// between pages) leaves no valid first line, so the successor relies on
// launchers re-attaching (and holds grants a moment after an unclean start).
bool StateFile::save(const StoredState& s) {
  std::string text = encode_state(s);
  auto fail = [&](const char* what) {
    if (!warned_) {
      std::fprintf(stderr, "jiffyd: cannot %s the state file %s: %s (continuing)\n", what,
                   path_.c_str(), std::strerror(errno));
      warned_ = true;
    }
    fd_.reset();  // reopen next time: the directory may have been replaced
    return false;
  };
  struct stat st;
  if (fd_ && (::fstat(fd_.get(), &st) != 0 || st.st_nlink == 0)) fd_.reset();  // deleted under us
  if (fd_ && text == last_) return true;  // already there (a hang-up after "finished")
  if (!fd_) {
    if (!open_checked(fd_, O_RDWR | O_CREAT, "replacing")) {
      // Something not ours is there (its content was ignored at start): a
      // file of our own takes its place, in our private directory.
      if (::unlink(path_.c_str()) != 0 && errno != ENOENT) return fail("replace");
      fd_ = Fd(::open(path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
      if (!fd_) return fail("open");
    }
    ::fchmod(fd_.get(), 0600);  // whatever the umask
    // Reserve the space now, so that a full disk later cannot stop the
    // ledger from being written (the record is rewritten in place).
    ::posix_fallocate(fd_.get(), 0, kPreallocBytes);
  }
  if (text.size() > kPreallocBytes) ::posix_fallocate(fd_.get(), 0, static_cast<off_t>(text.size()));
  ssize_t n = ::pwrite(fd_.get(), text.data(), text.size(), 0);
  if (n != static_cast<ssize_t>(text.size())) return fail("write");
  last_ = std::move(text);
  // No truncate: the file keeps its reserved size; readers take the first
  // line only, so a longer earlier record's tail after it is ignored.
  warned_ = false;
  return true;
}

}  // namespace jiffy
