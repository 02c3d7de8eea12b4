// The loop of `jiffy top` (see top.h): one poll over the signalfd, the keys
// and the daemon connection, woken at each refresh.
//
// Drawing is plain ANSI: each line is written at its row (CUP), followed by
// clear-to-end-of-line when it is shorter than the screen, and the rows
// below the last line are cleared (ED). A full redraw of a few dozen lines
// is a few kilobytes, nothing twice a second even over ssh, so there is no
// diffing and no curses. Nothing is written below the last row and no line
// is longer than the screen is wide (render_top cuts it; one that fills the
// last column leaves the cursor there, and the next CUP moves it), so the
// screen never scrolls and no line wraps.
#include "views/top.h"

#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "launch/client.h"
#include "util/error.h"
#include "util/fd.h"
#include "util/sys.h"
#include "views/top_render.h"

namespace jiffy {

namespace {

// A request unanswered this long: the connection is dropped and made anew
// (the daemon may be wedged, or a new one may have taken over).
constexpr double kGiveUpS = 10;
// A key refreshes at once, but no sooner than this after the last request
// (the shortest -d allowed).
constexpr double kMinKeyRefreshS = 0.1;
// What a frame says while the daemon restarts (never the socket's errno).
constexpr const char* kRestarting = "the daemon is restarting; reconnecting";

double wall_s() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

TermSize terminal_size(int fd) {
  winsize ws{};
  if (::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) {
    return {ws.ws_col, ws.ws_row};
  }
  return {80, 24};
}

// Batch frames: as wide as $COLUMNS says (else 80), as long as they are.
TermSize batch_size() {
  TermSize size{80, 0};
  if (const char* c = std::getenv("COLUMNS"); c != nullptr && *c) {
    int n = 0;
    auto [end, ec] = std::from_chars(c, c + std::char_traits<char>::length(c), n);
    if (ec == std::errc() && *end == '\0' && n >= 20 && n <= 10000) size.cols = n;
  }
  return size;
}

// Blocks `sigs` and delivers them through a signalfd, for the poll loop;
// the old mask comes back on destruction.
class SignalWatch {
 public:
  explicit SignalWatch(std::initializer_list<int> sigs) {
    sigset_t set;
    sigemptyset(&set);
    for (int s : sigs) sigaddset(&set, s);
    ::sigprocmask(SIG_BLOCK, &set, &old_);
    fd_ = Fd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!fd_) {
      int e = errno;
      ::sigprocmask(SIG_SETMASK, &old_, nullptr);
      errno = e;
      throw_errno("signalfd");
    }
  }
  ~SignalWatch() {
    fd_.reset();
    ::sigprocmask(SIG_SETMASK, &old_, nullptr);
  }
  SignalWatch(const SignalWatch&) = delete;
  SignalWatch& operator=(const SignalWatch&) = delete;

  int fd() const { return fd_.get(); }
  // The next pending signal, 0 when none.
  int next() {
    signalfd_siginfo si{};
    ssize_t n;
    do {
      n = ::read(fd_.get(), &si, sizeof si);
    } while (n < 0 && errno == EINTR);
    return n == static_cast<ssize_t>(sizeof si) ? static_cast<int>(si.ssi_signo) : 0;
  }

 private:
  Fd fd_;
  sigset_t old_{};
};

// Writes all of data, ignoring failures: for restoring a terminal that may
// be gone (SIGHUP).
void write_quietly(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

// The terminal, taken: the alternate screen, no cursor, and (keys_fd, a tty)
// no echo, no line buffering. leave() and the destructor give back exactly
// what enter() took.
class Screen {
 public:
  Screen(int keys_fd, int out_fd) : keys_(keys_fd), out_(out_fd) {}
  ~Screen() { leave(); }
  Screen(const Screen&) = delete;
  Screen& operator=(const Screen&) = delete;

  // Throws Error when the terminal cannot be set; what was taken is given
  // back by leave().
  void enter() {
    if (keys_ >= 0) {
      termios t{};
      if (::tcgetattr(keys_, &t) != 0) throw_errno("tcgetattr");
      saved_ = t;
      // ISIG stays: Ctrl-C and Ctrl-Z arrive as signals, on the signalfd.
      t.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
      t.c_cc[VMIN] = 0;
      t.c_cc[VTIME] = 0;
      if (::tcsetattr(keys_, TCSANOW, &t) != 0) throw_errno("tcsetattr");
    }
    entered_ = true;
    // Alternate screen (the shell's screen comes back on leaving), cursor
    // hidden, screen cleared.
    write_all(out_, "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J", "write to the terminal");
  }

  // Never throws: the terminal may be gone.
  void leave() {
    if (entered_) write_quietly(out_, "\x1b[?25h\x1b[?1049l");
    entered_ = false;
    if (saved_) ::tcsetattr(keys_, TCSANOW, &*saved_);
    saved_.reset();
  }

  void draw(const std::vector<std::string>& lines, TermSize size) {
    std::string buf;
    int row = 0;
    for (const std::string& l : lines) {
      if (++row > size.rows) break;
      buf += "\x1b[" + std::to_string(row) + ";1H" + l;
      if (display_width(l) < size.cols) buf += "\x1b[K";
    }
    if (row < size.rows) buf += "\x1b[" + std::to_string(row + 1) + ";1H\x1b[J";
    write_all(out_, buf, "write to the terminal");
  }

 private:
  int keys_;
  int out_;
  bool entered_ = false;
  std::optional<termios> saved_;
};

// The connection to the daemon and the one request that may be in flight.
class StatusPoller {
 public:
  // Sends a status request unless one is unanswered. Returns false when no
  // daemon runs (problem() says so) or the request could not be sent.
  bool ask(double now) {
    if (asked_at_ >= 0) return true;
    problem_.clear();
    for (int attempt = 0; attempt < 2; ++attempt) {
      try {
        if (!client_) client_ = DaemonClient::connect_existing();
        if (!client_) {
          reply_.reset();
          problem_ = "no daemon running for this resource set; waiting for one to start";
          return false;
        }
        client_->send({{"type", proto::type::kStatus}, {"v", proto::kVersion}});
        asked_at_ = now;
        sent_at_ = now;
        return true;
      } catch (const Error& e) {
        // A daemon gone since the last refresh: one more try, anew.
        client_.reset();
        reply_.reset();
        problem_ = daemon_restarting(e) ? std::string(kRestarting) : e.what();
      }
    }
    return false;
  }

  bool waiting() const { return asked_at_ >= 0; }
  // When the last request was sent (monotonic); -inf before the first.
  double sent_at() const { return sent_at_; }
  double asked_at() const { return asked_at_; }
  int fd() const { return client_ ? client_->fd() : -1; }
  const std::string& problem() const { return problem_; }

  // After poll said fd() is readable: true when the answer is complete
  // (reply() holds it, or problem() says what went wrong).
  bool receive() {
    try {
      std::optional<proto::Json> msg = client_->read_available();
      if (!msg) return false;
      if ((*msg)["type"] == proto::type::kError) {
        const proto::Json* m = msg->contains("message") ? &(*msg)["message"] : nullptr;
        problem_ = "the daemon answered: " +
                   (m && m->is_string() ? m->get<std::string>() : std::string("error"));
      } else if ((*msg)["type"] == proto::type::kStatusReply) {
        reply_ = std::move(*msg);
        problem_.clear();
      } else {
        return false;  // not for us; the answer is still to come
      }
    } catch (const Error& e) {
      if (daemon_restarting(e)) {
        // Gone as it answered (killed, stopped): its successor, if one
        // comes, is asked at the next refresh; this frame is not drawn.
        client_.reset();
        asked_at_ = -1;
        return false;
      }
      drop(std::string("lost the daemon: ") + e.what());
    }
    asked_at_ = -1;
    return true;
  }

  // Gives up on the connection (and what it last said).
  void drop(std::string why) {
    client_.reset();
    reply_.reset();
    asked_at_ = -1;
    problem_ = std::move(why);
  }

  const proto::Json* reply() const { return reply_ ? &*reply_ : nullptr; }

 private:
  std::optional<DaemonClient> client_;
  std::optional<proto::Json> reply_;
  std::string problem_;
  double asked_at_ = -1;  // monotonic time of the unanswered request; -1: none
  double sent_at_ = -1e9;
};

}  // namespace

int run_top(const TopOptions& opts) {
  const bool interactive = !opts.batch && ::isatty(STDOUT_FILENO);
  const int keys_fd = interactive && ::isatty(STDIN_FILENO) ? STDIN_FILENO : -1;
  // Declared before the screen: the terminal is given back first, then
  // the signals unblocked.
  std::optional<SignalWatch> signals;
  std::optional<Screen> screen;
  TermSize size = batch_size();
  if (interactive) {
    signals.emplace(
        std::initializer_list<int>{SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH, SIGTSTP});
    screen.emplace(keys_fd, STDOUT_FILENO);
    screen->enter();
    size = terminal_size(STDOUT_FILENO);
  }

  StatusPoller poller;
  int frames = 0;
  auto show = [&](bool counts) {
    std::string problem = poller.problem();
    if (problem.empty() && poller.waiting() && now_s() - poller.asked_at() >= opts.interval_s) {
      problem = "the daemon has not answered for " + format_duration(now_s() - poller.asked_at());
    }
    std::vector<std::string> lines = render_top({poller.reply(), problem}, size, wall_s());
    if (screen) {
      screen->draw(lines, size);
    } else {
      std::string text;
      for (const std::string& l : lines) text += l + "\n";
      text += "\n";
      write_all(STDOUT_FILENO, text, "write stdout");
    }
    if (counts) ++frames;
    return opts.iterations > 0 && frames >= opts.iterations;
  };

  double next = now_s();
  for (;;) {
    double now = now_s();
    if (now >= next) {
      // One frame per refresh: the answer's, or (none coming) the state.
      next += opts.interval_s;
      if (next <= now) next = now + opts.interval_s;
      if (poller.waiting()) {
        if (now - poller.asked_at() >= kGiveUpS) {
          poller.drop("the daemon did not answer for " + format_duration(kGiveUpS) +
                      "; reconnecting");
        }
        if (show(true)) return 0;
      } else if (!poller.ask(now)) {
        if (show(true)) return 0;
      }
    }
    pollfd fds[3];
    nfds_t n = 0;
    const int sig_fd = signals ? signals->fd() : -1;
    const int daemon_fd = poller.waiting() ? poller.fd() : -1;
    for (int fd : {sig_fd, keys_fd, daemon_fd}) {
      if (fd >= 0) fds[n++] = pollfd{fd, POLLIN, 0};
    }
    int timeout_ms = static_cast<int>(std::ceil(std::max(0.0, next - now_s()) * 1000));
    if (::poll(fds, n, timeout_ms) < 0) {
      if (errno == EINTR) continue;
      throw_errno("poll");
    }
    for (nfds_t i = 0; i < n; ++i) {
      if (fds[i].revents == 0) continue;
      if (fds[i].fd == daemon_fd) {
        if (poller.receive() && show(true)) return 0;
      } else if (fds[i].fd == keys_fd) {
        char buf[64];
        ssize_t got = ::read(keys_fd, buf, sizeof buf);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0 || (got == 0 && (fds[i].revents & (POLLHUP | POLLERR)))) {
          return 128 + SIGHUP;  // the terminal is gone
        }
        for (ssize_t k = 0; k < got; ++k) {
          if (buf[k] == 'q' || buf[k] == 'Q' || buf[k] == '\x03') return 0;
        }
        // Any other key: refresh now, but never ask more often than the
        // shortest interval allowed (a key held down repeats).
        next = std::max(now_s(), poller.sent_at() + kMinKeyRefreshS);
      } else if (fds[i].fd == sig_fd) {
        while (int sig = signals->next()) {
          if (sig == SIGWINCH) {
            size = terminal_size(STDOUT_FILENO);
            show(false);
          } else if (sig == SIGTSTP) {
            // Ctrl-Z: the shell gets its terminal back as it was, and we
            // stop (SIGTSTP itself is blocked); on SIGCONT, take it again.
            screen->leave();
            ::kill(::getpid(), SIGSTOP);
            screen->enter();
            size = terminal_size(STDOUT_FILENO);
            show(false);
          } else if (sig == SIGINT) {
            return 0;
          } else {
            return 128 + sig;
          }
        }
      }
    }
  }
}

}  // namespace jiffy
