#include "launch/slurm_step.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <optional>

#include "launch/environment.h"
#include "launch/history_journal.h"
#include "launch/launcher.h"
#include "launch/mpi_detect.h"
#include "launch/slurm.h"
#include "launch/slurm_link.h"
#include "launch/spawn.h"
#include "util/error.h"
#include "util/process.h"
#include "util/sys.h"

namespace jiffy {
namespace {

constexpr int kExitTimedOut = 255;

std::string find_srun() {
  if (const char* s = std::getenv("JIFFY_SRUN"); s && *s) return s;
  const char* path = std::getenv("PATH");
  try {
    return resolve_program("srun", path ? path : "/usr/bin:/bin", std::nullopt);
  } catch (const Error&) {
    throw Error("the slurm backend needs srun, and none is on PATH");
  }
}

// The --multi-prog file, removed when the launch ends.
class MultiProgFile {
 public:
  MultiProgFile() = default;
  MultiProgFile(const MultiProgFile&) = delete;
  MultiProgFile& operator=(const MultiProgFile&) = delete;
  ~MultiProgFile() {
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  // Makes an empty file; write() fills it.
  const std::string& create() {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/jiffy-multi-prog-XXXXXX";
    int fd = ::mkstemp(templ.data());
    if (fd < 0) throw_errno("mkstemp " + templ);
    ::close(fd);
    path_ = templ;
    return path_;
  }
  void write(const std::string& text) {
    int fd = ::open(path_.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0) throw_errno("open " + path_);
    bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    ::close(fd);
    if (!ok) throw Error("cannot write " + path_);
  }

 private:
  std::string path_;
};

// Which step srun made, and on which nodes: squeue, asked by the step's
// unique name (srun -J), in a child whose output the loop reads. Off the
// launch's path: first after kFirstS (a shorter step is over before anyone
// could look at it, and its history row has no step), then again, less and
// less often, while srun still waits for the step's resources. A timeout or
// a signal that needs the step asks at once and waits (lookup_now).
class StepQuery {
 public:
  static constexpr double kFirstS = 0.1;
  static constexpr double kMaxPauseS = 2.0;

  explicit StepQuery(std::string name) : name_(std::move(name)) {}
  void begin(double now) { next_at_ = now + kFirstS; }
  // When to ask next; 0: not now (asking, or found).
  double next_at() const { return found_ || out_ ? 0 : next_at_; }
  void start() {
    const char* path = std::getenv("PATH");
    std::string squeue;
    try {
      squeue = resolve_program("squeue", path ? path : "/usr/bin:/bin", std::nullopt);
    } catch (const Error&) {
      next_at_ = 0;  // no squeue: no step to show or cancel by id
      found_ = true;
      return;
    }
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return;
    Fd read_end(p[0]), write_end(p[1]);
    RankSpawn spec;
    spec.path = squeue;
    spec.argv = {"squeue", "-h", "-s", "--name=" + name_, "-o", "%i %N"};
    std::vector<std::string> entries = Environment::inherited().entries();
    std::vector<char*> envp;
    for (std::string& e : entries) envp.push_back(e.data());
    envp.push_back(nullptr);
    spec.envp = envp;
    Fd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    spec.stdin_fd = null.get();
    spec.stdout_fd = write_end.get();
    spec.stderr_fd = null.get();
    Spawned child = spawn_rank(spec);
    if (child.exec_errno != 0) {
      ::waitpid(child.pid, nullptr, 0);
      return;
    }
    pid_ = child.pid;
    out_ = std::move(read_end);
    text_.clear();
  }
  int fd() const { return out_ ? out_.get() : -1; }
  // Reads squeue's answer. Returns true once the step is found (step(),
  // nodes()); else, at squeue's end, schedules the next try.
  bool read(double now) {
    char buf[1024];
    ssize_t n = ::read(out_.get(), buf, sizeof buf);
    if (n > 0) {
      if (text_.size() < 4096) text_.append(buf, static_cast<std::size_t>(n));
      return false;
    }
    if (n < 0 && errno == EINTR) return false;
    out_.reset();
    ::waitpid(pid_, nullptr, 0);
    std::string line = text_.substr(0, text_.find('\n'));
    std::size_t space = line.find(' ');
    if (space != std::string::npos && line.find('.') < space) {
      step_ = line.substr(0, space);
      nodes_ = line.substr(space + 1);
      found_ = true;
      return true;
    }
    pause_ = std::min(kMaxPauseS, pause_ * 2);
    next_at_ = now + pause_;
    return false;
  }
  // Asks and waits (up to 10 s); returns whether the step is known.
  bool lookup_now(double now) {
    if (found_) return true;
    if (!out_) start();
    for (double give_up = now + 10; out_ && now_s() < give_up;) {
      pollfd p{out_.get(), POLLIN, 0};
      ::poll(&p, 1, 100);
      if (read(now_s())) return true;
    }
    return found_ && !step_.empty();
  }
  const std::string& step() const { return step_; }
  const std::string& nodes() const { return nodes_; }

 private:
  std::string name_;
  double next_at_ = 0;
  double pause_ = kFirstS;
  bool found_ = false;
  pid_t pid_ = -1;
  Fd out_;
  std::string text_;
  std::string step_, nodes_;
};

// What the loop has seen of the step and the user's signals.
struct StepState {
  pid_t srun = -1;
  bool shares_group = false;  // srun in our process group (a terminal)
  int interrupts = 0;         // SIGINTs received
  int ending_signal = 0;      // the signal that makes our exit 128+signal
  bool timed_out = false;
  bool cancelled = false;
  std::optional<StepQuery> query;  // the step's id and nodes
  // From srun's reports of failed tasks: the first that failed by itself,
  // and the first that was killed or terminated (137, 143: how Slurm ends
  // the rest of a step after a failure or an abort, which srun may report
  // before the failure itself).
  int first_failure = -1;
  int first_ended = -1;
  // Under Slurm's pmi2 plugin an MPICH MPI_Abort's code survives only in
  // the rank's own word on stderr (mpich_abort_code): the first one seen.
  bool pmi2 = false;
  int abort_code = -1;
  std::string err_line;       // srun's stderr: the line being read
};

// srun's stderr (its own lines and the ranks'), relayed to ours as it
// comes, for srun's reports of failed tasks (srun_failure_code).
// Returns false at its end.
bool relay_stderr(StepState& s, int from, int to) {
  char buf[65536];
  ssize_t n = ::read(from, buf, sizeof buf);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
  if (n <= 0) return false;
  for (ssize_t off = 0; off < n;) {
    ssize_t w = ::write(to, buf + off, static_cast<std::size_t>(n - off));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) {
      pollfd p{to, POLLOUT, 0};
      ::poll(&p, 1, 100);
      continue;
    }
    if (w <= 0) break;  // our stderr is gone: keep reading, as srun would
    off += w;
  }
  for (ssize_t i = 0; i < n; ++i) {
    if (buf[i] != '\n') {
      if (s.err_line.size() < 512) s.err_line += buf[i];
      continue;
    }
    const int code = srun_failure_code(s.err_line);
    if (code == 128 + SIGKILL || code == 128 + SIGTERM) {
      if (s.first_ended < 0) s.first_ended = code;
    } else if (code > 0 && s.first_failure < 0) {
      s.first_failure = code;
    }
    if (s.pmi2 && s.abort_code < 0) s.abort_code = mpich_abort_code(s.err_line);
    s.err_line.clear();
  }
  return true;
}

// scancel of the step, or SIGKILL of srun before the step has an id (srun
// then has nothing to wait for: no step exists yet, or its ranks go with
// srun's connection).
void cancel_step(StepState& s) {
  if (s.cancelled) return;
  s.cancelled = true;
  const bool known = s.query->lookup_now(now_s());
  if (known) run_scancel(s.query->step());
  // srun reports the cancelled step and exits; if it hangs, it goes too.
  ::kill(s.srun, known ? SIGTERM : SIGKILL);
}

void on_signal(StepState& s, const signalfd_siginfo& si) {
  const int sig = static_cast<int>(si.ssi_signo);
  if (sig == SIGCHLD) return;
  // From the terminal (SI_KERNEL), a shared group's srun has it already.
  const bool srun_has_it = s.shares_group && si.ssi_code == SI_KERNEL;
  if (sig == SIGINT) {
    ++s.interrupts;
    s.ending_signal = SIGINT;
    if (s.interrupts >= 2) {
      cancel_step(s);
      return;
    }
  } else if (sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT) {
    s.ending_signal = sig;
    // srun takes these as "terminate the step" (SIGKILL soon after): the
    // ranks get the signal itself from scancel, as mpiexec forwards it.
    if (!srun_has_it && s.query->lookup_now(now_s())) {
      signal_step(s.query->step(), sig);
      return;
    }
  }
  // SIGINT (--disable-status), SIGUSR1, SIGUSR2: srun forwards them.
  if (!srun_has_it) ::kill(s.srun, sig);
}

// Reports what squeue found: to the daemon (status) and, at the end, the
// history.
void step_found(StepState& s, SlurmLink& link) {
  link.step_started(s.query->step(), s.query->nodes());
}

// Waits for srun, forwarding signals, learning the step's id, keeping the
// deadline. Returns srun's wait status.
int supervise(StepState& s, int signal_fd, Fd& err_fd, int err_to, double deadline,
              const LaunchOptions& opt, SlurmLink& link) {
  int status = 0;
  bool reaped = false;
  for (;;) {
    if (!reaped) {
      pid_t r = ::waitpid(s.srun, &status, WNOHANG);
      if (r < 0 && errno != EINTR) throw_errno("waitpid srun");
      reaped = r == s.srun;
    }
    // Done once srun is gone and its stderr has ended (a rank's child may
    // hold it: then srun's end is the end).
    if (reaped) {
      while (err_fd && relay_stderr(s, err_fd.get(), err_to)) {
        pollfd p{err_fd.get(), POLLIN, 0};
        if (::poll(&p, 1, 0) <= 0) break;
      }
      return status;
    }
    int timeout_ms = -1;
    if (double at = s.query->next_at(); at > 0) {
      if (now_s() >= at) {
        s.query->start();
        continue;
      }
      timeout_ms = static_cast<int>((at - now_s()) * 1000) + 1;
    }
    if (double at = link.retry_at(); at > 0) {  // a daemon restarted: tell its successor
      if (now_s() >= at) {
        link.retry(now_s());
        continue;
      }
      int ms = static_cast<int>((at - now_s()) * 1000) + 1;
      timeout_ms = timeout_ms < 0 ? ms : std::min(timeout_ms, ms);
    }
    if (deadline > 0 && !s.timed_out) {
      double left = deadline - now_s();
      if (left <= 0) {
        s.timed_out = true;
        const bool known = s.query->lookup_now(now_s());
        std::fprintf(stderr, "jiffy: APPLICATION TIMED OUT after %g s (step %s, %s); killing it\n",
                     opt.timeout_s, known ? s.query->step().c_str() : "not started",
                     opt.apps[0].argv[0].c_str());
        cancel_step(s);
        continue;
      }
      int ms = static_cast<int>(left * 1000) + 1;
      timeout_ms = timeout_ms < 0 ? ms : std::min(timeout_ms, ms);
    }
    pollfd fds[4] = {{signal_fd, POLLIN, 0}, {err_fd.get(), POLLIN, 0}, {s.query->fd(), POLLIN, 0},
                     {link.fd(), POLLIN, 0}};
    int n = ::poll(fds, 4, timeout_ms);
    if (n < 0 && errno != EINTR) throw_errno("poll");
    if (n <= 0) continue;
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo si;
      while (::read(signal_fd, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) on_signal(s, si);
    }
    if ((fds[1].revents & (POLLIN | POLLHUP | POLLERR)) && !relay_stderr(s, err_fd.get(), err_to)) {
      err_fd.reset();  // poll skips a negative fd
    }
    if (fds[2].fd >= 0 && (fds[2].revents & (POLLIN | POLLHUP | POLLERR)) && s.query->read(now_s())) {
      step_found(s, link);
    }
    if (fds[3].fd >= 0 && (fds[3].revents & (POLLIN | POLLHUP | POLLERR))) link.on_readable(now_s());
  }
}

int exit_code(const StepState& s, int status) {
  if (s.timed_out) return kExitTimedOut;
  if (s.ending_signal) return 128 + s.ending_signal;
  if (s.first_failure > 0) return s.first_failure;
  // The plugin killed the step for the abort: the code mpiexec would give.
  if (s.abort_code >= 0 && s.first_ended == 128 + SIGKILL) return s.abort_code;
  if (s.first_ended > 0) return s.first_ended;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

int run_slurm_step(const LaunchOptions& opt, const std::vector<std::string>& programs,
                   LaunchHistory& history) {
  SrunInputs in;
  in.srun = find_srun();
  in.programs = programs;
  for (const std::string& p : programs) in.kinds.push_back(detect_mpi(p));
  const std::string tag = new_job_tag();
  history.set_tag(tag);
  in.step_name = "jiffy-" + tag.substr(0, 16);
  MultiProgFile multi_prog;
  if (opt.apps.size() > 1) in.multi_prog_path = multi_prog.create();
  SrunCommand cmd;
  try {
    cmd = srun_command(opt, in);
  } catch (const Error& e) {
    history.refused(e.what());
    throw;
  }
  if (!cmd.multi_prog.empty()) multi_prog.write(cmd.multi_prog);
  if (opt.verbose) {
    std::string line;
    for (const std::string& w : cmd.argv) line += (line.empty() ? "" : " ") + w;
    std::fprintf(stderr, "jiffy: slurm backend: %s\n", line.c_str());
    if (!cmd.multi_prog.empty()) std::fprintf(stderr, "jiffy: --multi-prog:\n%s", cmd.multi_prog.c_str());
  }

  const Environment caller = Environment::inherited();
  Environment env = caller;
  env.apply(cmd.env, caller);
  std::vector<char*> envp = env.envp();

  Fd signals = block_signals();

  SlurmLink link(command_summary(opt), history.cwd(), history.label(), opt.total_tasks(), tag,
                 in.step_name);
  StepState s;
  // On a terminal srun must be in the foreground group to read it.
  s.shares_group = ::isatty(0) && ::tcgetpgrp(0) == ::getpgrp();
  RankSpawn spec;
  spec.path = in.srun;
  spec.argv = cmd.argv;
  spec.envp = envp;
  spec.pgid = s.shares_group ? ::getpgrp() : 0;
  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) throw_errno("pipe2");
  Fd err_read(err_pipe[0]), err_write(err_pipe[1]);
  ::fcntl(err_read.get(), F_SETFL, O_NONBLOCK);
  spec.stderr_fd = err_write.get();
  const int err_to = cmd.stderr_to_stdout ? 1 : 2;
  const double deadline = opt.timeout_s > 0 ? now_s() + opt.timeout_s : 0;
  Spawned srun = spawn_rank(spec);
  err_write.reset();
  if (srun.exec_errno != 0) {
    ::waitpid(srun.pid, nullptr, 0);
    std::string why = in.srun + ": " + std::strerror(srun.exec_errno);
    history.not_started(why);
    std::fprintf(stderr, "jiffy: cannot execute %s\n", why.c_str());
    return 127;
  }
  s.srun = srun.pid;
  s.pmi2 = std::find(cmd.argv.begin(), cmd.argv.end(), "--mpi=pmi2") != cmd.argv.end();
  s.query.emplace(in.step_name);
  s.query->begin(now_s());
  history.started();
  int status = supervise(s, signals.get(), err_read, err_to, deadline, opt, link);
  history.slurm_step(s.query->step(), s.query->nodes());  // "" and "": a step over within 0.1 s
  const int code = exit_code(s, status);
  Job::Ending ending;
  ending.end_ns = realtime_ns();
  ending.outcome = s.timed_out                                     ? JIFFY_OUTCOME_TIMED_OUT
                   : s.ending_signal || code > 128                  ? JIFFY_OUTCOME_SIGNALED
                                                                    : JIFFY_OUTCOME_EXITED;
  ending.signal = s.ending_signal ? s.ending_signal : code > 128 && code < 128 + 65 ? code - 128 : 0;
  history.ended(ending);
  // srun killed from outside (with its shepherd, the step's keeper): the
  // step may run on. Not saying "finished" makes the daemon, at our
  // hang-up, cancel it as for a launcher that vanished (one place for it).
  if (!(WIFSIGNALED(status) && !s.cancelled)) link.finished(code);
  return code;
}

}  // namespace jiffy
