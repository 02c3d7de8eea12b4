// Output: where ranks' stdout and stderr go.
//
// By default ranks inherit the launcher's stdout and stderr: zero copies,
// output appears exactly as written. Labelled output (-l, --tag-output)
// switches to one pipe per rank and stream; the Forwarder reads them and
// writes whole lines with the rank's prefix. Output files (-outfile-pattern,
// --output-filename) are opened here and handed to the rank directly.
//
// The Forwarder never blocks the launcher's loop (signals, timeouts, PMI
// must go on while nobody reads our stdout): it writes only what the
// target takes now, keeps the rest (up to kMaxPending per target), and
// while a target is that far behind it stops reading the ranks' pipes, so
// the ranks themselves wait, as they would writing to the target directly.
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

// Opens files or pipes for rank `rank` of group `group` as opt asks.
// Throws Error when a file cannot be created.
RankOutput open_rank_output(const LaunchOptions& opt, int rank, int group, OutputFiles& files);

// "%r" -> rank, "%g" -> group, "%h" -> this host's name, "%p" -> the proxy
// (always 0: one node, one launcher), "%%" -> "%".
std::string expand_pattern(const std::string& pattern, int rank, int group);

class Forwarder {
 public:
  static constexpr std::size_t kMaxPending = 1 << 20;

  // Takes ownership of read_fd and forwards its lines to target_fd (1 or 2).
  void add(Fd read_fd, int target_fd, std::string prefix);
  // Appends what to poll: the streams to read, the targets to write.
  void add_poll_fds(std::vector<pollfd>& fds);
  // REQUIRES: fds[first..] are the entries the last add_poll_fds appended.
  void handle(const std::vector<pollfd>& fds, std::size_t first);
  bool empty() const { return streams_.empty(); }
  // Reads everything left and writes it out, until every writer has closed
  // and every target took its output, or timeout passes (the rest is lost).
  void drain(int timeout_ms);

 private:
  struct Stream {
    Fd fd;
    int target;  // 1 or 2
    std::string prefix;
    std::string partial;  // an unfinished line
  };
  struct Target {
    std::string pending;  // formatted, not yet written
    bool broken = false;  // the reader went away: output is dropped
  };
  Target& target(int fd) { return targets_[fd == 2 ? 1 : 0]; }
  void on_readable(std::size_t i);
  void emit(Stream& s, std::string_view data, bool eof);
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
