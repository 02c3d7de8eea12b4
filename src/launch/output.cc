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

void own_blocking_stdio() {
  for (int fd : {1, 2}) {
    int fl = ::fcntl(fd, F_GETFL);
    if (fl < 0 || !(fl & O_NONBLOCK)) continue;
    struct stat st;
    if (::fstat(fd, &st) != 0 || !(S_ISFIFO(st.st_mode) || ::isatty(fd))) continue;
    // O_NONBLOCK for the open itself: a pipe nobody reads any more fails
    // with ENXIO instead of waiting for a reader (then it is left alone and
    // writers get EPIPE, as they would have).
    std::string path = "/proc/self/fd/" + std::to_string(fd);
    int flags = ((fl & O_ACCMODE) == O_RDWR ? O_RDWR : O_WRONLY) | (fl & O_APPEND) | O_NOCTTY |
                O_NONBLOCK | O_CLOEXEC;
    int n = ::open(path.c_str(), flags);
    if (n < 0) continue;
    int nf = ::fcntl(n, F_GETFL);
    if (nf >= 0 && ::fcntl(n, F_SETFL, nf & ~O_NONBLOCK) == 0) ::dup2(n, fd);  // dup2 drops O_CLOEXEC
    ::close(n);
  }
}

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
  Stream s;
  s.fd = std::move(read_fd);
  s.target = target_fd;
  s.prefix = std::move(prefix);
  streams_.push_back(std::move(s));
}

void Forwarder::add_poll_fds(std::vector<pollfd>& fds) {
  polled_streams_ = 0;
  for (Stream& s : streams_) {
    // A target far behind: leave the rank's pipe alone, so the rank waits.
    // Its unfinished line waits too: the rest of it is likely in the pipe
    // (its clock starts again when the pipe is read again).
    bool paused = target(s.target).size() >= kMaxPending;
    if (s.paused && !paused) s.first_at = s.last_at = now_s();
    s.paused = paused;
    fds.push_back(pollfd{s.fd.get(), static_cast<short>(paused ? 0 : POLLIN), 0});
    ++polled_streams_;
  }
  polled_targets_.clear();
  for (int fd : {1, 2}) {
    if (target(fd).size() == 0) continue;
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
  const double now = now_s();
  for (Stream& s : streams_) {
    if (!s.partial.empty() && !s.paused &&
        (now >= s.last_at + kPartialIdleS || now >= s.first_at + kPartialMaxAgeS)) {
      flush_partial(s);
      flush(s.target);
    }
  }
}

double Forwarder::next_flush_at() const {
  double next = 0;
  for (const Stream& s : streams_) {
    if (s.partial.empty() || s.paused) continue;
    double at = std::min(s.last_at + kPartialIdleS, s.first_at + kPartialMaxAgeS);
    if (next == 0 || at < next) next = at;
  }
  return next;
}

bool Forwarder::busy() const {
  if (!streams_.empty()) return true;
  for (const Target& t : targets_) {
    if (t.size() > 0) return true;
  }
  return false;
}

std::size_t Forwarder::undelivered() const {
  std::size_t n = 0;
  for (const Stream& s : streams_) n += s.partial.size();
  for (const Target& t : targets_) n += t.size();
  return n;
}

bool Forwarder::take_error(WriteError& e) {
  for (int fd : {1, 2}) {
    Target& t = target(fd);
    if (t.err && !t.reported) {
      t.reported = true;
      e = WriteError{fd, t.err};
      return true;
    }
  }
  return false;
}

void Forwarder::abandon() {
  streams_.clear();
  for (Target& t : targets_) {
    t.buf.clear();
    t.head = 0;
  }
}

// Appends a piece of s's output to its target: the prefix first where a
// line starts.
void Forwarder::put(Stream& s, std::string_view piece) {
  if (piece.empty()) return;
  Target& t = target(s.target);
  if (!t.err) {
    if (!s.mid_line) t.buf += s.prefix;
    t.buf.append(piece);
  }
  s.mid_line = piece.back() != '\n';
}

void Forwarder::flush_partial(Stream& s) {
  put(s, s.partial);
  s.partial.clear();
}

void Forwarder::emit(Stream& s, std::string_view data, bool eof) {
  std::size_t start = 0;
  for (;;) {
    std::size_t nl = data.find('\n', start);
    if (nl == std::string_view::npos) break;
    std::string_view line = data.substr(start, nl + 1 - start);
    if (s.partial.empty()) {
      put(s, line);
    } else {
      s.partial.append(line);
      flush_partial(s);
    }
    start = nl + 1;
  }
  if (start < data.size()) {
    const double now = now_s();
    if (s.partial.empty()) s.first_at = now;
    s.last_at = now;
    s.partial.append(data.substr(start));
    if (s.partial.size() >= kMaxPartial) flush_partial(s);
  }
  if (eof) {
    flush_partial(s);
    if (s.mid_line) put(s, "\n");  // the rank's last line ends here
  }
  flush(s.target);
}

// Writes what the target takes without waiting. The target is the caller's
// stdout or stderr, shared with others, so it is not made non-blocking:
// each write is preceded by a poll and is no larger than what a pipe or a
// terminal that polls writable accepts at once (a regular file takes any
// size). A target someone else made non-blocking answers EAGAIN instead:
// the rest waits for the next POLLOUT.
void Forwarder::flush(int fd) {
  Target& t = target(fd);
  if (t.chunk == 0) {
    struct stat st;
    bool file = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    t.chunk = file ? std::size_t{1} << 20 : ::isatty(fd) ? 256 : PIPE_BUF;
  }
  while (t.size() > 0 && !t.err) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, 0) != 1) break;
    ssize_t n = ::write(fd, t.buf.data() + t.head, std::min(t.chunk, t.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) {
      t.err = n < 0 ? errno : EIO;  // EPIPE: the reader went away
      break;
    }
    t.head += static_cast<std::size_t>(n);
  }
  if (t.err || t.head == t.buf.size()) {
    t.buf.clear();
    t.head = 0;
  } else if (t.head >= (64 << 10) && t.head * 2 >= t.buf.size()) {
    t.buf.erase(0, t.head);  // amortized: each byte moves at most once more
    t.head = 0;
  }
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
