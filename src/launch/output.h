// Output: where ranks' stdout and stderr go.
//
// By default ranks inherit the launcher's stdout and stderr: zero copies,
// output appears exactly as written. Labelled output (-l, --tag-output)
// switches to one pipe per rank and stream; the Forwarder reads them and
// writes whole lines with the rank's prefix. Output files (-outfile-pattern,
// --output-filename) are opened here and handed to the rank directly.
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

// Opens files or pipes for rank `rank` of group `group` as opt asks.
// Throws Error when a file cannot be created.
RankOutput open_rank_output(const LaunchOptions& opt, int rank, int group, unsigned long long job);

// "%r" -> rank, "%g" -> group, "%%" -> "%".
std::string expand_pattern(const std::string& pattern, int rank, int group);

class Forwarder {
 public:
  // Takes ownership of read_fd and forwards its lines to target_fd (1 or 2).
  void add(Fd read_fd, int target_fd, std::string prefix);
  // The fds to poll (in the same order as on_readable's index).
  std::vector<int> fds() const;
  // Reads what is available on stream i; closes it at EOF.
  void on_readable(std::size_t i);
  bool empty() const { return streams_.empty(); }
  // Reads everything left until every writer has closed or timeout passes.
  void drain(int timeout_ms);

 private:
  struct Stream {
    Fd fd;
    int target;
    std::string prefix;
    std::string partial;  // an unfinished line
  };
  void emit(Stream& s, std::string_view data, bool eof);
  std::vector<Stream> streams_;
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
