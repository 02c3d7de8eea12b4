// Output: where ranks' stdout and stderr go.
//
// By default ranks inherit the launcher's stdout and stderr: zero copies,
// output appears exactly as written. Labelled output (-l, --tag-output)
// switches to one pipe per rank and stream; the Forwarder reads them and
// writes the rank's lines with its prefix. Output files (-outfile-pattern,
// --output-filename) are opened here and handed to the rank directly.
//
// The Forwarder never blocks the launcher's loop (signals, timeouts, PMI
// must go on while nobody reads our stdout): it writes only what the
// target takes now, keeps the rest (up to kMaxPending per target), and
// while a target is that far behind it stops reading the ranks' pipes, so
// the ranks themselves wait in write(), as they would writing to the target
// directly. Memory stays bounded however slow the reader; nothing is lost.
//
// Lines: a complete line goes out at once, its prefix first. An unfinished
// line (a progress bar, a prompt, a huge line) is held for a moment in case
// its end follows, and written out as it is kPartialIdleS after its last
// data, kPartialMaxAgeS after its first (counting only while its pipe is
// read), or once kMaxPartial bytes long; its continuation gets no second
// prefix. A rank's bytes come out whole and in order.
#pragma once

#include <poll.h>

#include <string>
#include <vector>

#include "launch/options.h"
#include "util/fd.h"

namespace jiffy {

// The fds one rank gets for stdout and stderr, plus the read ends the
// launcher forwards (invalid when not piped).
struct RankOutput {
  Fd out_file;  // file or pipe write end for stdout; invalid = inherit 1
  Fd err_file;
  Fd out_read;  // pipe read ends for labelled output
  Fd err_read;
};

// The output files of one job. A file is emptied once, when the job first
// names it, and every rank and stream naming it (-outfile-pattern and
// -errfile-pattern alike, however spelled) writes into that one open file,
// appending: as under hydra, nothing of one stream overwrites another's.
class OutputFiles {
 public:
  // A descriptor of path's file for one rank's stream. Throws Error.
  Fd open(const std::string& path);

 private:
  struct Opened {
    unsigned long long dev, ino;
    Fd fd;
  };
  std::vector<Opened> opened_;
};
// A stdout or stderr someone else made non-blocking (O_NONBLOCK belongs to
// the open file description, shared with whoever handed it to us, e.g. a
// parent that set it on its end of a pipe) would make writes fail with
// EAGAIN: the ranks', which inherit it, and printf's. A pipe, FIFO or
// terminal is opened again through /proc/self/fd as a new description of
// the same file, blocking, which only this process and its children use.
// Other files are left as they are (a regular file never blocks; a socket
// cannot be reopened). Call it before anything is written.
void own_blocking_stdio();

// Opens files or pipes for rank `rank` of group `group` as opt asks.
// Throws Error when a file cannot be created.
RankOutput open_rank_output(const LaunchOptions& opt, int rank, int group, OutputFiles& files);

// "%r" -> rank, "%g" -> group, "%h" -> this host's name, "%p" -> the proxy
// (always 0: one node, one launcher), "%%" -> "%".
std::string expand_pattern(const std::string& pattern, int rank, int group);

class Forwarder {
 public:
  static constexpr std::size_t kMaxPending = 1 << 20;   // per target
  static constexpr std::size_t kMaxPartial = 64 << 10;  // an unfinished line held
  static constexpr double kPartialIdleS = 0.05;
  static constexpr double kPartialMaxAgeS = 0.25;

  // Takes ownership of read_fd and forwards its lines to target_fd (1 or 2).
  void add(Fd read_fd, int target_fd, std::string prefix);
  // Appends what to poll: the streams to read, the targets to write.
  void add_poll_fds(std::vector<pollfd>& fds);
  // Reads and writes what is ready, and writes out unfinished lines that
  // are due (call it after every poll, timed out or not).
  // REQUIRES: fds[first..] are the entries the last add_poll_fds appended.
  void handle(const std::vector<pollfd>& fds, std::size_t first);
  // When an unfinished line is next due (now_s() clock), 0 = none held.
  double next_flush_at() const;
  // A stream still open, or output held or not yet written.
  bool busy() const;
  // Bytes read from the ranks and not yet written.
  std::size_t undelivered() const;
  // The first failed write to the launcher's stdout or stderr, once: that
  // target's output is dropped from then on. err is errno (EPIPE: its
  // reader went away).
  struct WriteError {
    int fd = 0;
    int err = 0;
  };
  bool take_error(WriteError& e);
  // Closes the streams and drops what is held.
  void abandon();

 private:
  struct Stream {
    Fd fd;
    int target;  // 1 or 2
    std::string prefix;
    std::string partial;      // an unfinished line, not written yet
    bool mid_line = false;    // its prefix went out already (a flushed partial line)
    double first_at = 0;      // when partial got its first byte
    double last_at = 0;       // and its last
    bool paused = false;      // not read: its target is kMaxPending behind
  };
  struct Target {
    std::string buf;        // formatted output; buf[head..] not yet written
    std::size_t head = 0;
    int err = 0;            // a write failed: output is dropped
    bool reported = false;  // take_error returned it
    std::size_t chunk = 0;  // bytes per write (0: not decided yet)
    std::size_t size() const { return buf.size() - head; }
  };
  Target& target(int fd) { return targets_[fd == 2 ? 1 : 0]; }
  const Target& target(int fd) const { return targets_[fd == 2 ? 1 : 0]; }
  void on_readable(std::size_t i);
  void emit(Stream& s, std::string_view data, bool eof);
  void put(Stream& s, std::string_view line);
  void flush_partial(Stream& s);
  void flush(int fd);
  std::vector<Stream> streams_;
  Target targets_[2];
  std::size_t polled_streams_ = 0;  // entries of the last add_poll_fds
  std::vector<int> polled_targets_;
};

// Copies the launcher's stdin to rank 0 through a pipe. Used only when stdin
// is a terminal: ranks run in their own process group, and a background
// group reading the terminal would be stopped by SIGTTIN.
class StdinPump {
 public:
  // Returns the read end for rank 0 and keeps the write end.
  Fd open();
  bool active() const { return pipe_.valid(); }
  // poll entries: stdin when the buffer is empty, the pipe when it is not.
  int fd() const { return buffer_.empty() ? 0 : pipe_.get(); }
  short events() const { return buffer_.empty() ? POLLIN : POLLOUT; }
  void on_ready();
  void close() { pipe_.reset(); buffer_.clear(); }

 private:
  Fd pipe_;
  std::string buffer_;
};

}  // namespace jiffy
