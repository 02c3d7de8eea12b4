#include "launch/output.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>

#include "util/error.h"
#include "util/sys.h"

namespace jiffy {

namespace {

const std::string& host_name() {
  static const std::string name = [] {
    char buf[256] = {};
    return ::gethostname(buf, sizeof buf - 1) == 0 ? std::string(buf) : std::string("localhost");
  }();
  return name;
}

void mkdirs(const std::string& path) {
  for (std::size_t i = 1; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      std::string part = path.substr(0, i);
      if (::mkdir(part.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("mkdir " + part);
    }
  }
}

void make_pipe(Fd& read_end, Fd& write_end) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw_errno("pipe2");
  read_end.reset(p[0]);
  write_end.reset(p[1]);
}

}  // namespace

std::string expand_pattern(const std::string& pattern, int rank, int group) {
  std::string out;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '%' && i + 1 < pattern.size()) {
      char c = pattern[i + 1];
      if (c == 'r') { out += std::to_string(rank); ++i; continue; }
      if (c == 'g') { out += std::to_string(group); ++i; continue; }
      if (c == 'h') { out += host_name(); ++i; continue; }
      if (c == 'p') { out += '0'; ++i; continue; }
      if (c == '%') { out += '%'; ++i; continue; }
    }
    out += pattern[i];
  }
  return out;
}

Fd OutputFiles::open(const std::string& path) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!fd) throw_errno("cannot create output file " + path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) throw_errno("fstat " + path);
  for (const Opened& o : opened_) {
    if (o.dev != st.st_dev || o.ino != st.st_ino) continue;
    Fd shared(::fcntl(o.fd.get(), F_DUPFD_CLOEXEC, 0));
    if (!shared) throw_errno("dup");
    return shared;
  }
  // New to this job: emptied now (a regular file; not /dev/null or a FIFO).
  if (S_ISREG(st.st_mode) && ::ftruncate(fd.get(), 0) != 0) throw_errno("truncate " + path);
  Fd kept(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
  if (!kept) throw_errno("dup");
  opened_.push_back(Opened{st.st_dev, st.st_ino, std::move(kept)});
  return fd;
}

RankOutput open_rank_output(const LaunchOptions& opt, int rank, int group, OutputFiles& files) {
  RankOutput o;
  if (!opt.output_dir.empty()) {
    std::string dir = opt.output_dir + "/1/rank." + std::to_string(rank);
    mkdirs(dir);
    o.out_file = files.open(dir + "/stdout");
    o.err_file = files.open(dir + "/stderr");
  }
  if (!opt.outfile_pattern.empty()) o.out_file = files.open(expand_pattern(opt.outfile_pattern, rank, group));
  if (!opt.errfile_pattern.empty()) o.err_file = files.open(expand_pattern(opt.errfile_pattern, rank, group));
  if (opt.label != Label::None) {
    if (!o.out_file) make_pipe(o.out_read, o.out_file);
    if (!o.err_file && !opt.merge_stderr) make_pipe(o.err_read, o.err_file);
  }
  // --merge-stderr-to-stdout: stderr goes wherever stdout goes (a file, the
  // stdout pipe, or our own stdout).
  if (opt.merge_stderr) {
    o.err_file = o.out_file ? Fd(::fcntl(o.out_file.get(), F_DUPFD_CLOEXEC, 0)) : Fd(::fcntl(1, F_DUPFD_CLOEXEC, 0));
    if (!o.err_file) throw_errno("dup");
    o.err_read.reset();
  }
  return o;
}

void Forwarder::add(Fd read_fd, int target_fd, std::string prefix) {
  set_nonblocking(read_fd.get(), true);
  streams_.push_back(Stream{std::move(read_fd), target_fd, std::move(prefix), {}});
}

void Forwarder::add_poll_fds(std::vector<pollfd>& fds) {
  polled_streams_ = 0;
  for (const Stream& s : streams_) {
    // A target far behind: leave the rank's pipe alone, so the rank waits.
    short events = target(s.target).pending.size() < kMaxPending ? POLLIN : 0;
    fds.push_back(pollfd{s.fd.get(), events, 0});
    ++polled_streams_;
  }
  polled_targets_.clear();
  for (int fd : {1, 2}) {
    if (target(fd).pending.empty()) continue;
    fds.push_back(pollfd{fd, POLLOUT, 0});
    polled_targets_.push_back(fd);
  }
}

void Forwarder::handle(const std::vector<pollfd>& fds, std::size_t first) {
  for (std::size_t t = 0; t < polled_targets_.size(); ++t) {
    if (fds[first + polled_streams_ + t].revents) flush(polled_targets_[t]);
  }
  // Backwards: a stream at EOF is erased.
  for (std::size_t i = polled_streams_; i-- > 0;) {
    if (fds[first + i].revents) on_readable(i);
  }
}

void Forwarder::emit(Stream& s, std::string_view data, bool eof) {
  s.partial.append(data);
  Target& t = target(s.target);
  std::size_t start = 0;
  for (;;) {
    std::size_t nl = s.partial.find('\n', start);
    if (nl == std::string::npos) break;
    if (!t.broken) {
      t.pending += s.prefix;
      t.pending.append(s.partial, start, nl + 1 - start);
    }
    start = nl + 1;
  }
  s.partial.erase(0, start);
  if (eof && !s.partial.empty()) {
    if (!t.broken) t.pending += s.prefix + s.partial + "\n";
    s.partial.clear();
  }
  flush(s.target);
}

// Writes what the target takes without waiting. The target is the caller's
// stdout or stderr, shared with others, so it is not made non-blocking:
// each write is preceded by a poll and is no larger than what a pipe or a
// terminal that polls writable accepts at once.
void Forwarder::flush(int fd) {
  Target& t = target(fd);
  const std::size_t chunk = ::isatty(fd) ? 256 : PIPE_BUF;
  while (!t.pending.empty() && !t.broken) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, 0) != 1) return;
    if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) {
      t.broken = true;  // the reader went away: drop the output, keep the job
      break;
    }
    ssize_t n = ::write(fd, t.pending.data(), std::min(chunk, t.pending.size()));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) {
      t.broken = true;
      break;
    }
    t.pending.erase(0, static_cast<std::size_t>(n));
  }
  if (t.broken) t.pending.clear();
}

void Forwarder::on_readable(std::size_t i) {
  Stream& s = streams_[i];
  char buf[65536];
  ssize_t n = ::read(s.fd.get(), buf, sizeof buf);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    emit(s, {}, true);
    streams_.erase(streams_.begin() + static_cast<long>(i));
    return;
  }
  emit(s, std::string_view(buf, static_cast<std::size_t>(n)), false);
}

void Forwarder::drain(int timeout_ms) {
  double deadline = now_s() + timeout_ms / 1000.0;
  for (;;) {
    std::vector<pollfd> p;
    add_poll_fds(p);
    if (p.empty()) return;
    int left = static_cast<int>((deadline - now_s()) * 1000);
    if (left <= 0) break;
    int n = ::poll(p.data(), p.size(), left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    handle(p, 0);
  }
  // Out of time: what the ranks wrote last is cut into lines and the rest
  // is given up (a reader that stopped reading gets no more).
  for (Stream& s : streams_) emit(s, {}, true);
  streams_.clear();
}

Fd StdinPump::open() {
  Fd r;
  make_pipe(r, pipe_);
  set_nonblocking(pipe_.get(), true);
  return r;
}

void StdinPump::on_ready() {
  if (buffer_.empty()) {
    char buf[65536];
    ssize_t n = ::read(0, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0) {
      close();  // EOF (Ctrl-D) reaches rank 0 as EOF
      return;
    }
    buffer_.assign(buf, static_cast<std::size_t>(n));
  }
  try {
    buffer_.erase(0, write_some(pipe_.get(), buffer_, "write to rank 0"));
  } catch (const Error&) {
    close();  // rank 0 closed its stdin or exited
  }
}

}  // namespace jiffy
