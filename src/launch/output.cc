#include "launch/output.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "util/error.h"
#include "util/sys.h"

namespace jiffy {

namespace {

Fd open_output_file(const std::string& path) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) throw_errno("cannot create output file " + path);
  return fd;
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
      if (c == '%') { out += '%'; ++i; continue; }
    }
    out += pattern[i];
  }
  return out;
}

RankOutput open_rank_output(const LaunchOptions& opt, int rank, int group, unsigned long long) {
  RankOutput o;
  if (!opt.output_dir.empty()) {
    std::string dir = opt.output_dir + "/1/rank." + std::to_string(rank);
    mkdirs(dir);
    o.out_file = open_output_file(dir + "/stdout");
    o.err_file = open_output_file(dir + "/stderr");
  }
  if (!opt.outfile_pattern.empty()) o.out_file = open_output_file(expand_pattern(opt.outfile_pattern, rank, group));
  if (!opt.errfile_pattern.empty()) o.err_file = open_output_file(expand_pattern(opt.errfile_pattern, rank, group));
  if (opt.label != Label::None) {
    if (!o.out_file) make_pipe(o.out_read, o.out_file);
    if (!o.err_file) make_pipe(o.err_read, o.err_file);
  }
  return o;
}

void Forwarder::add(Fd read_fd, int target_fd, std::string prefix) {
  set_nonblocking(read_fd.get(), true);
  streams_.push_back(Stream{std::move(read_fd), target_fd, std::move(prefix), {}});
}

std::vector<int> Forwarder::fds() const {
  std::vector<int> v;
  for (const Stream& s : streams_) v.push_back(s.fd.get());
  return v;
}

void Forwarder::emit(Stream& s, std::string_view data, bool eof) {
  s.partial.append(data);
  std::string out;
  std::size_t start = 0;
  for (;;) {
    std::size_t nl = s.partial.find('\n', start);
    if (nl == std::string::npos) break;
    out += s.prefix;
    out.append(s.partial, start, nl + 1 - start);
    start = nl + 1;
  }
  s.partial.erase(0, start);
  if (eof && !s.partial.empty()) {
    out += s.prefix + s.partial + "\n";
    s.partial.clear();
  }
  if (out.empty()) return;
  try {
    write_all(s.target, out, "write output");
  } catch (const Error&) {
    // The reader of our stdout/stderr went away: drop the output, keep the job.
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

void Forwarder::drain(int timeout_ms) {
  double deadline = now_s() + timeout_ms / 1000.0;
  while (!streams_.empty()) {
    int left = static_cast<int>((deadline - now_s()) * 1000);
    if (left <= 0) break;
    std::vector<pollfd> p;
    for (int fd : fds()) p.push_back(pollfd{fd, POLLIN, 0});
    int n = ::poll(p.data(), p.size(), left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (std::size_t i = p.size(); i-- > 0;) {
      if (p[i].revents) on_readable(i);
    }
  }
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
