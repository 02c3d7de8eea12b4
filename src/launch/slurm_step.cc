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

constexpr const char* kStepFdVar = "JIFFY_SLURM_STEP_FD";
constexpr int kExitTimedOut = 255;

std::string self_exe() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw_errno("readlink /proc/self/exe");
  return std::string(buf, static_cast<std::size_t>(n));
}

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

// The step's nodes, asked of squeue once the step has run kNodesAfterS
// (a shorter step is over before anyone could look at it; its history row
// has no nodes): off the launch's path, in a child whose output the loop
// reads.
class NodesQuery {
 public:
  static constexpr double kNodesAfterS = 0.1;
  // The time to start the query at, once the step is known; 0: not yet.
  void step_known(double now) {
    if (start_at_ == 0) start_at_ = now + kNodesAfterS;
  }
  double start_at() const { return started_ ? 0 : start_at_; }
  void start(const std::string& step) {
    started_ = true;
    const char* path = std::getenv("PATH");
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return;
    Fd read_end(p[0]), write_end(p[1]);
    RankSpawn spec;
    try {
      spec.path = resolve_program("squeue", path ? path : "/usr/bin:/bin", std::nullopt);
    } catch (const Error&) {
      return;
    }
    spec.argv = {"squeue", "-h", "-s", "--steps=" + step, "-o", "%N"};
    std::vector<std::string> entries = Environment::inherited().entries();
    std::vector<char*> envp;
    for (std::string& e : entries) envp.push_back(e.data());
    envp.push_back(nullptr);
    spec.envp = envp;
    spec.stdin_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    spec.stdout_fd = write_end.get();
    spec.stderr_fd = write_end.get();
    Spawned child = spawn_rank(spec);
    ::close(spec.stdin_fd);
    if (child.exec_errno != 0) {
      ::waitpid(child.pid, nullptr, 0);
      return;
    }
    pid_ = child.pid;
    out_ = std::move(read_end);
  }
  int fd() const { return out_ ? out_.get() : -1; }
  // Reads squeue's answer; returns the nodes once it has ended ("" when
  // the step was gone or squeue failed).
  std::optional<std::string> read() {
    char buf[1024];
    ssize_t n = ::read(out_.get(), buf, sizeof buf);
    if (n > 0) {
      if (text_.size() < 4096) text_.append(buf, static_cast<std::size_t>(n));
      return std::nullopt;
    }
    if (n < 0 && errno == EINTR) return std::nullopt;
    out_.reset();
    int status = 0;
    ::waitpid(pid_, &status, 0);
    std::string nodes = text_.substr(0, text_.find('\n'));
    bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 && !nodes.empty() &&
              nodes.find(' ') == std::string::npos;
    return ok ? nodes : std::string();
  }

 private:
  double start_at_ = 0;
  bool started_ = false;
  pid_t pid_ = -1;
  Fd out_;
  std::string text_;
};

// What the loop has seen of the step and the user's signals.
struct StepState {
  pid_t srun = -1;
  bool shares_group = false;  // srun in our process group (a terminal)
  int interrupts = 0;         // SIGINTs received
  int ending_signal = 0;      // the signal that makes our exit 128+signal
  bool timed_out = false;
  bool cancelled = false;
  std::string step;           // "JOBID.STEPID" once the prolog told us
  std::string nodes;          // its nodes, once squeue said (NodesQuery)
  NodesQuery nodes_query;
  std::string step_report;    // the prolog's bytes so far
  int first_failure = -1;     // the first failed task's code, from srun's report
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
    if (s.first_failure < 0) s.first_failure = srun_failure_code(s.err_line);
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
  if (!s.step.empty()) run_scancel(s.step);
  // srun reports the cancelled step and exits; if it hangs, it goes too.
  ::kill(s.srun, s.step.empty() ? SIGKILL : SIGTERM);
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
    if (!s.step.empty() && !srun_has_it) {
      signal_step(s.step, sig);
      return;
    }
  }
  // SIGINT (--disable-status), SIGUSR1, SIGUSR2: srun forwards them.
  if (!srun_has_it) ::kill(s.srun, sig);
}

void read_step_report(StepState& s, int fd, SlurmLink& link) {
  char buf[256];
  ssize_t n = ::read(fd, buf, sizeof buf);
  if (n <= 0) return;
  s.step_report.append(buf, static_cast<std::size_t>(n));
  std::size_t nl = s.step_report.find('\n');
  if (nl == std::string::npos || !s.step.empty()) return;
  s.step = s.step_report.substr(0, nl);
  link.step_started(s.step);
  s.nodes_query.step_known(now_s());
}

// Waits for srun, forwarding signals, reading the step's id, keeping the
// deadline. Returns srun's wait status.
int supervise(StepState& s, int signal_fd, int report_fd, Fd& err_fd, int err_to, double deadline,
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
    if (double at = s.nodes_query.start_at(); at > 0) {
      if (now_s() >= at) {
        s.nodes_query.start(s.step);
      } else {
        timeout_ms = static_cast<int>((at - now_s()) * 1000) + 1;
      }
    }
    if (deadline > 0 && !s.timed_out) {
      double left = deadline - now_s();
      if (left <= 0) {
        s.timed_out = true;
        std::fprintf(stderr, "jiffy: APPLICATION TIMED OUT after %g s (step %s, %s); killing it\n",
                     opt.timeout_s, s.step.empty() ? "not started" : s.step.c_str(),
                     opt.apps[0].argv[0].c_str());
        cancel_step(s);
        continue;
      }
      int ms = static_cast<int>(left * 1000) + 1;
      timeout_ms = timeout_ms < 0 ? ms : std::min(timeout_ms, ms);
    }
    pollfd fds[5] = {{signal_fd, POLLIN, 0}, {report_fd, POLLIN, 0}, {err_fd.get(), POLLIN, 0},
                     {s.nodes_query.fd(), POLLIN, 0}, {link.fd(), POLLIN, 0}};
    int n = ::poll(fds, 5, timeout_ms);
    if (n < 0 && errno != EINTR) throw_errno("poll");
    if (n <= 0) continue;
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo si;
      while (::read(signal_fd, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) on_signal(s, si);
    }
    if (fds[1].revents & (POLLIN | POLLHUP)) read_step_report(s, report_fd, link);
    if ((fds[2].revents & (POLLIN | POLLHUP | POLLERR)) && !relay_stderr(s, err_fd.get(), err_to)) {
      err_fd.reset();  // poll skips a negative fd
    }
    if (fds[3].fd >= 0 && (fds[3].revents & (POLLIN | POLLHUP | POLLERR))) {
      if (std::optional<std::string> nodes = s.nodes_query.read(); nodes && !nodes->empty()) {
        s.nodes = *nodes;
        link.step_started(s.step, s.nodes);
      }
    }
    if (fds[4].fd >= 0 && (fds[4].revents & (POLLIN | POLLHUP | POLLERR))) link.on_readable();
  }
}

int exit_code(const StepState& s, int status) {
  if (s.timed_out) return kExitTimedOut;
  if (s.ending_signal) return 128 + s.ending_signal;
  if (s.first_failure > 0) return s.first_failure;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

bool run_as_slurm_prolog() {
  const char* fd_text = std::getenv(kStepFdVar);
  const char* context = std::getenv("SLURM_SCRIPT_CONTEXT");
  if (!fd_text || !context || std::strcmp(context, "prolog_srun") != 0) return false;
  const char* job = std::getenv("SLURM_JOB_ID");
  const char* step = std::getenv("SLURM_STEP_ID");
  int fd = std::atoi(fd_text);
  if (job && step && fd > 2) {
    std::string line = std::string(job) + "." + step + "\n";
    ssize_t ignored = ::write(fd, line.data(), line.size());
    (void)ignored;
  }
  return true;
}

int run_slurm_step(const LaunchOptions& opt, const std::vector<std::string>& programs,
                   LaunchHistory& history) {
  SrunInputs in;
  in.srun = find_srun();
  in.programs = programs;
  for (const std::string& p : programs) in.kinds.push_back(detect_mpi(p));
  const std::string tag = new_job_tag();
  history.set_tag(tag);
  in.step_name = "jiffy-" + tag.substr(0, 16);
  in.prolog = self_exe();
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

  // The prolog's pipe: its write end goes to srun (and on to the prolog).
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) != 0) throw_errno("pipe2");
  Fd report_read(pipefd[0]), report_write(pipefd[1]);
  ::fcntl(report_write.get(), F_SETFL, 0);  // the prolog's write blocks, never fails

  const Environment caller = Environment::inherited();
  Environment env = caller;
  env.apply(cmd.env, caller);
  env.set(kStepFdVar, std::to_string(report_write.get()));
  std::vector<char*> envp = env.envp();

  sigset_t mask;
  sigemptyset(&mask);
  for (int sig : {SIGCHLD, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) sigaddset(&mask, sig);
  if (::sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) throw_errno("sigprocmask");
  Fd signals(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signals) throw_errno("signalfd");
  ::signal(SIGPIPE, SIG_IGN);

  SlurmLink link(command_summary(opt), history.cwd(), history.label(), opt.total_tasks(), tag);
  StepState s;
  // On a terminal srun must be in the foreground group to read it.
  s.shares_group = ::isatty(0) && ::tcgetpgrp(0) == ::getpgrp();
  RankSpawn spec;
  spec.path = in.srun;
  spec.argv = cmd.argv;
  spec.envp = envp;
  spec.pgid = s.shares_group ? ::getpgrp() : 0;
  spec.inherit_fd = report_write.get();
  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) throw_errno("pipe2");
  Fd err_read(err_pipe[0]), err_write(err_pipe[1]);
  ::fcntl(err_read.get(), F_SETFL, O_NONBLOCK);
  spec.stderr_fd = err_write.get();
  const int err_to = cmd.stderr_to_stdout ? 1 : 2;
  const double deadline = opt.timeout_s > 0 ? now_s() + opt.timeout_s : 0;
  Spawned srun = spawn_rank(spec);
  report_write.reset();
  err_write.reset();
  if (srun.exec_errno != 0) {
    ::waitpid(srun.pid, nullptr, 0);
    std::string why = in.srun + ": " + std::strerror(srun.exec_errno);
    history.not_started(why);
    std::fprintf(stderr, "jiffy: cannot execute %s\n", why.c_str());
    return 127;
  }
  s.srun = srun.pid;
  history.started();
  int status = supervise(s, signals.get(), report_read.get(), err_read, err_to, deadline, opt, link);
  // A last report that came with srun's end.
  read_step_report(s, report_read.get(), link);
  const int code = exit_code(s, status);
  Job::Ending ending;
  ending.end_ns = realtime_ns();
  ending.outcome = s.timed_out                                     ? JIFFY_OUTCOME_TIMED_OUT
                   : s.ending_signal || code > 128                  ? JIFFY_OUTCOME_SIGNALED
                                                                    : JIFFY_OUTCOME_EXITED;
  ending.signal = s.ending_signal ? s.ending_signal : code > 128 && code < 128 + 65 ? code - 128 : 0;
  history.ended(ending);
  link.finished(code);
  return code;
}

}  // namespace jiffy
