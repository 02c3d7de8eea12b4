#include "launch/hosts.h"
#include "launch/launcher.h"
#include "launch/slurm_step.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <variant>

#include "launch/bootstrap.h"
#include "launch/client.h"
#include "launch/history_journal.h"
#include "launch/job.h"
#include "launch/sub_request.h"
#include "pmi/pmix_server.h"
#include "proto/message.h"
#include "util/error.h"
#include "util/process.h"
#include "util/sys.h"

namespace jiffy {

namespace {

constexpr int kExitNotFound = 127;     // as a shell says for a missing program
constexpr int kExitRefused = 1;        // the daemon refused the request
constexpr double kStatusLineAfterS = 1.0;

// 0, 1 and 2 must be open, or our pipes and sockets would land there.
void ensure_std_fds() {
  for (int fd = 0; fd < 3; ++fd) {
    if (::fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
      int n = ::open("/dev/null", O_RDWR);
      if (n >= 0 && n != fd) ::close(n);
    }
  }
}

}  // namespace

// Blocks the signals the loop handles and returns a signalfd for them.
Fd block_signals() {
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGCHLD, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) sigaddset(&mask, s);
  if (::sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) throw_errno("sigprocmask");
  Fd fd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!fd) throw_errno("signalfd");
  // Ours to handle even if our caller ignored them (a script's background
  // job ignores SIGINT): blocked, they reach the signalfd either way, and
  // whatever we run next starts from the default.
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) ::signal(s, SIG_DFL);
  // A launcher whose reader went away (make, a closed pipe) keeps running.
  ::signal(SIGPIPE, SIG_IGN);
  return fd;
}

namespace {

const char* bind_name(Bind b) {
  switch (b) {
    case Bind::Core: return "core";
    case Bind::HwThread: return "hwthread";
    case Bind::None: return "none";
  }
  return "core";
}

}  // namespace

// What `jiffy status` shows for the job: the command line, cut short.
std::string command_summary(const LaunchOptions& opt) {
  constexpr std::size_t kMax = 200;
  std::string s;
  for (const AppSpec& app : opt.apps) {
    if (!s.empty()) s += " : ";
    for (const std::string& a : app.argv) s += (s.empty() || s.back() == ' ' ? "" : " ") + a;
    if (s.size() > kMax) return s.substr(0, kMax) + "...";
  }
  return s;
}

namespace {

proto::Json submit_message(const LaunchOptions& opt, bool progress, unsigned long long arrival,
                           const std::string& tag, const LaunchHistory& history) {
  proto::Json msg = {{"type", proto::type::kSubmit},
          {"cwd", history.cwd()},
          {"label", history.label()},
          {"arrival", arrival},
          {"v", proto::kVersion},
          {"ntasks", opt.total_tasks()},
          {"cores_per_task", opt.cores_per_task},
          {"gpus_per_task", opt.gpus_per_task},
          {"gpus_per_job", opt.gpus_per_job},
          {"allow_oversubscribe", !opt.oversubscribe_error},
          {"bind", bind_name(opt.bind)},
          {"pid", ::getpid()},
          {"command", command_summary(opt)},
          {"progress", progress},
          {"tag", tag}};
  if (!opt.gpu_names.empty()) msg["gpu_names"] = opt.gpu_names;  // CTest chose them
  return msg;
}

// One status line on a terminal while we wait; nothing otherwise.
class StatusLine {
 public:
  explicit StatusLine(const LaunchOptions& opt) : enabled_(::isatty(2)), opt_(opt), since_(now_s()) {}
  bool enabled() const { return enabled_; }
  void set_position(int pos) { position_ = pos; }
  int timeout_ms() const {
    if (!enabled_ || shown_) return -1;
    return std::max(0, static_cast<int>((since_ + kStatusLineAfterS - now_s()) * 1000) + 1);
  }
  void maybe_show() {
    if (!enabled_ || now_s() - since_ < kStatusLineAfterS) return;
    std::string what = std::to_string(opt_.total_tasks() * opt_.cores_per_task) + " core slot(s)";
    if (int g = opt_.total_tasks() * opt_.gpus_per_task + opt_.gpus_per_job) {
      what += " and " + std::to_string(g) + " GPU(s)";
    }
    std::fprintf(stderr, "\rjiffy: waiting for %s, position %d in the queue\033[K", what.c_str(),
                 position_ + 1);
    std::fflush(stderr);
    shown_ = true;
  }
  void clear() {
    if (shown_) std::fprintf(stderr, "\r\033[K");
    shown_ = false;
  }

 private:
  bool enabled_;
  const LaunchOptions& opt_;
  double since_;
  int position_ = 0;
  bool shown_ = false;
};

// Waits for the grant. Returns it, or an exit code when the wait ended
// otherwise (refused, interrupted).
// *ticket learns the job id the daemon gave us, so that after a daemon
// crash we can ask the next one for our old place in the queue.
// *refusal learns the daemon's reason when it refuses; *answered_out whether
// the daemon said anything (it lived) before the wait ended or failed.
// on_queued runs at each "queued" answer, with the job id: what the job can
// prepare before its grant, it prepares then.
std::variant<JobGrant, int> wait_for_grant(DaemonClient& client, const LaunchOptions& opt,
                                           int signal_fd, unsigned long long* ticket,
                                           std::string* refusal, bool* answered_out,
                                           const std::function<void(unsigned long long)>& on_queued) {
  StatusLine status(opt);
  // The daemon answers every submit at once (grant, queued or error), so
  // silence means it is wedged, not busy.
  const double answer_by = now_s() + daemon_answer_timeout_s();
  bool answered = false;
  for (;;) {
    pollfd p[2] = {{client.fd(), POLLIN, 0}, {signal_fd, POLLIN, 0}};
    int timeout = status.timeout_ms();
    if (!answered) {
      int left = std::max(0, static_cast<int>((answer_by - now_s()) * 1000) + 1);
      timeout = timeout < 0 ? left : std::min(timeout, left);
    }
    int n = ::poll(p, 2, timeout);
    if (!answered && n == 0 && now_s() >= answer_by) {
      throw Error("the daemon at " + client.paths().socket + " did not answer within " +
                  std::to_string(static_cast<int>(daemon_answer_timeout_s())) +
                  " s; if it is hung, kill it (pid in " + client.paths().lock + ")");
    }
    if (n < 0 && errno != EINTR) throw_errno("poll");
    if (n > 0 && p[1].revents) {
      signalfd_siginfo si;
      while (::read(signal_fd, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
        int s = static_cast<int>(si.ssi_signo);
        if (s == SIGINT || s == SIGTERM || s == SIGHUP || s == SIGQUIT) {
          status.clear();
          return 128 + s;  // closing the connection withdraws the request
        }
      }
    }
    if (n > 0 && p[0].revents) {
      while (auto msg = client.read_available()) {
        answered = true;
        *answered_out = true;
        const std::string& type = (*msg)["type"].get_ref<const std::string&>();
        if (msg->contains("job") && (*msg)["job"].is_number_unsigned()) {
          *ticket = (*msg)["job"].get<unsigned long long>();
        }
        if (type == proto::type::kGrant) {
          status.clear();
          return parse_grant(*msg, opt.total_tasks());
        }
        if (type == proto::type::kError) {
          status.clear();
          *refusal = proto::get_string(*msg, "message", 4096);
          std::fprintf(stderr, "jiffy: %s\n", refusal->c_str());
          return kExitRefused;
        }
        if (type == proto::type::kQueued) {
          status.set_position(static_cast<int>(proto::get_int(*msg, "position", -1, 1 << 30)));
          on_queued(*ticket);
        }
      }
    }
    status.maybe_show();
  }
}

// The lean jiffy carries no libpmix; a job that needs PMIx continues in
// jiffy-pmix (same code, libpmix linked), which sits next to it. Returns
// only when that is impossible.
// (jiffy-pmix itself never gets here: PmixServer::available() is true there.)
void continue_in_pmix_launcher(const std::vector<std::string>& argv) {
  std::string exe = daemon_executable();
  exe = exe.substr(0, exe.rfind('/') + 1) + "jiffy-pmix";
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  ::execv(exe.c_str(), args.data());
}

BootstrapPlan bootstrap_plan(const LaunchOptions& opt, const std::vector<std::string>& programs,
                             const std::vector<std::string>& argv) {
  std::vector<MpiKind> kinds;
  for (const std::string& p : programs) kinds.push_back(detect_mpi(p));
  BootstrapPlan plan = plan_bootstrap(opt.mpi, kinds);
  plan.topology_cache = opt.topology_cache;
  plan.single_node_ompi = opt.single_node_ompi;
  plan.ucx_shm = opt.ucx_shm;
  // --mpi=pmi1 on a program that shows no MPI (a wrapper may hide an Open
  // MPI one): the rendezvous, which costs a socket, tells if it does.
  if (opt.mpi == MpiMode::Pmi1) {
    for (MpiKind k : kinds) plan.rendezvous = plan.rendezvous || k == MpiKind::None;
    plan.rendezvous_refuses = plan.rendezvous;
  }
  // The set's shared PMIx server serves the job (started if need be);
  // without one, jiffy-pmix does, in its own process.
  if (plan.pmix && !PmixServer::available() && !PmixServer::open_shared()) {
    continue_in_pmix_launcher(argv);
    if (opt.mpi == MpiMode::Pmix) throw Error("--mpi=pmix: cannot run jiffy-pmix next to jiffy");
    if (!opt.quiet) std::fprintf(stderr, "jiffy: warning: jiffy-pmix not found; Open MPI ranks will not bootstrap\n");
    plan.pmix = false;
  }
  return plan;
}

// -v / --report-bindings: what each rank was given, one line per rank.
void report_bindings(const JobGrant& grant, const LaunchOptions& opt) {
  std::fprintf(stderr, "jiffy: job %llu: %d rank%s%s\n", grant.id, opt.total_tasks(),
               opt.total_tasks() == 1 ? "" : "s", grant.exclusive ? ", alone on the machine" : "");
  for (std::size_t r = 0; r < grant.ranks.size(); ++r) {
    const RankGrant& rg = grant.ranks[r];
    std::string gpus;
    for (const std::string& g : rg.gpus) gpus += (gpus.empty() ? "" : ",") + g;
    std::fprintf(stderr, "jiffy: job %llu rank %zu: cores %s, cpus %s%s%s\n", grant.id, r,
                 format_cpu_list(rg.cores).c_str(),
                 opt.bind == Bind::None ? "unbound" : format_cpu_list(rg.cpus).c_str(),
                 gpus.empty() ? "" : ", gpus ", gpus.c_str());
  }
  if (job_shares_cpus(grant, opt.bind)) {
    std::fprintf(stderr,
                 "jiffy: job %llu: ranks share CPUs: each may run on all of the job's CPUs (the "
                 "kernel balances them), and ranks get %s=1 (Open MPI yields instead of spinning) "
                 "unless you set it\n",
                 grant.id, kYieldVar);
  }
}

// The launcher's tie to the daemon while its job runs. If the daemon dies,
// the job goes on (it holds its cores all the same) and we re-attach to the
// next daemon, started if need be, so that it learns what we hold before it
// grants anything.
class DaemonLink {
 public:
  DaemonLink(DaemonPaths paths, DaemonClient client, const LaunchOptions& opt, const JobGrant& grant)
      : paths_(std::move(paths)), client_(std::move(client)), opt_(opt), grant_(grant) {}

  int fd() const { return client_ ? client_->fd() : -1; }
  void set_started(int pgid, std::string job_dir, std::string tag) {
    pgid_ = pgid;
    job_dir_ = std::move(job_dir);
    tag_ = std::move(tag);
  }
  void set_job_dir(std::string job_dir) { job_dir_ = std::move(job_dir); }

  void send(const proto::Json& msg) {
    if (!client_) return;
    try {
      client_->send(msg);
    } catch (const Error&) {
      // Noticed by on_ready as a hang-up.
    }
  }

  void on_ready() {
    try {
      while (auto msg = client_->read_available()) {
        if ((*msg)["type"] == proto::type::kError) {
          warn(proto::get_string(*msg, "message", 4096));
          client_.reset();
          return;
        }
      }
    } catch (const Error& e) {
      if (e.sys_errno() == ECONNRESET) {
        reattach();
      } else {
        warn(e.what());
        client_.reset();
      }
    }
  }

 private:
  void reattach() {
    client_.reset();
    proto::Json msg = {{"type", proto::type::kReattach}, {"v", proto::kVersion},
                       {"job", grant_.id},           {"pgid", pgid_},
                       {"ntasks", opt_.total_tasks()}, {"command", command_summary(opt_)},
                       {"slots", slot_pairs(grant_.slots)}, {"gpu_ids", grant_.gpu_ids},
                       {"exclusive", grant_.exclusive}, {"jobdir", job_dir_},
                       {"tag", tag_}};
    try {
      client_ = reattach_to_successor(paths_, msg);
    } catch (const Error& e) {
      warn(e.what());
    }
  }

  void warn(const std::string& why) {
    std::fprintf(stderr, "jiffy: warning: lost the daemon (%s); job %llu runs on\n", why.c_str(),
                 grant_.id);
  }

  DaemonPaths paths_;
  std::optional<DaemonClient> client_;
  const LaunchOptions& opt_;
  const JobGrant& grant_;
  int pgid_ = 0;
  std::string job_dir_;
  std::string tag_;
};

// MPI_Comm_spawn's ranks get cores of their own, asked as part of the job
// (launch/sub_request.h).
void allow_spawn(Job& job, const DaemonPaths& paths, const LaunchOptions& opt, unsigned long long id,
                 const std::string& cwd) {
  job.allow_spawn([&paths, &opt, id, cwd](int ntasks, unsigned long long asker) {
    SubRequest::Ask ask;
    ask.parent = id;
    ask.asker = asker;
    ask.ntasks = ntasks;
    ask.cores_per_task = opt.cores_per_task;
    ask.gpus_per_task = opt.gpus_per_task;
    ask.bind = bind_name(opt.bind);
    ask.command = "(spawned by job " + std::to_string(id) + ")";
    ask.cwd = cwd;
    return SubRequest::send(paths, ask);
  });
}

// From "started" to "finished": the job runs, the daemon link re-attaches
// if the daemon dies meanwhile. lane: the lent slots' locks (a job the front
// took from the lane), let go once every process of the job is gone and
// before "finished", as the front does: the daemon, told the job is over,
// takes the slots back at once instead of finding them still held and
// trying again later (10 ms on; the next queued job's start waited for it).
int supervise(Job& job, DaemonLink& link, int signal_fd, bool announce, Fd* lane = nullptr) {
  link.set_started(job.pgid(), job.job_dir(), job.tag());
  if (announce) {
    link.send({{"type", proto::type::kStarted},
               {"pgid", job.pgid()},
               {"jobdir", job.job_dir()},
               {"tag", job.tag()}});
  }
  Watch watch{[&] { return link.fd(); }, [&] { link.on_ready(); }, [&](const std::string& dir) {
                 link.set_job_dir(dir);
                 link.send({{"type", proto::type::kPreparing}, {"jobdir", dir}});
               }};
  int code = job.wait(signal_fd, &watch);
  if (lane) lane->reset();
  link.send({{"type", proto::type::kFinished}, {"code", code}});
  return code;
}

// The front ran this job until something needed more than it does (a rank
// spoke PMI, failed, got a signal; the daemon wrote or went away; the
// timeout ran out; an MPICH job, as its ranks started): the ranks are
// already our children, the grant and connection ours, the deadline the
// front's (Job::adopt).
int continue_handed_over(const LaunchOptions& opt, const Handoff& h, LaunchHistory& history) {
  // One program, running already: its name is for messages, its kind for
  // the warning about ranks that never bootstrap.
  const std::string& program = opt.apps.at(0).argv.at(0);
  MpiKind kind = MpiKind::None;
  try {
    const char* path = std::getenv("PATH");
    kind = detect_mpi(resolve_program(program, path ? path : "/usr/bin:/bin", opt.wdir));
  } catch (const Error&) {
  }
  BootstrapPlan plan = plan_bootstrap(MpiMode::Pmi1, {kind});
  // The front gave its plain programs the PMIx rendezvous: ours now.
  plan.rendezvous = h.pmix_fd >= 0;
  plan.rendezvous_fd = h.pmix_fd;
  Fd signals = block_signals();  // pending signals survived the exec
  const DaemonPaths paths = daemon_paths(h.cpus);
  history.set_journal(paths.history);
  history.handed_over(h);
  plan.topology_file = paths.topology;
  JobGrant grant;
  try {
    grant = parse_grant(proto::Json::parse(h.grant), opt.total_tasks());
  } catch (const std::exception& e) {
    throw Error(std::string("malformed hand-over state: grant: ") + e.what());
  }
  history.granted(grant);
  // The lane's locks: ours until the job is over; never a spawned rank's.
  Fd lane(h.lane_fd);
  if (lane) ::fcntl(lane.get(), F_SETFD, FD_CLOEXEC);
  Job job(opt, {program}, grant, plan, h.tag);
  job.adopt(h);
  allow_spawn(job, paths, opt, grant.id, history.cwd());
  DaemonLink link(paths, DaemonClient::adopt(Fd(h.daemon_fd), paths), opt, grant);
  int code = supervise(job, link, signals.get(), /*announce=*/false, &lane);
  history.ended(job.ending());
  return code;
}

// The launch from start to exit code, telling history what it learns.
int launch(const LaunchOptions& opt, const std::vector<std::string>& argv, const Handoff* handoff,
           LaunchHistory& history) {
  if (handoff && handoff->running) return continue_handed_over(opt, *handoff, history);
  ensure_std_fds();
  if (opt.backend == Backend::Local) check_hosts(opt);  // Slurm's: its nodes
  // Resolve every program before asking for resources: a typo costs nothing.
  std::vector<std::string> programs;
  const char* path = std::getenv("PATH");
  for (const AppSpec& app : opt.apps) {
    try {
      programs.push_back(resolve_program(app.argv[0], path ? path : "/usr/bin:/bin",
                                         app.wdir ? app.wdir : opt.wdir));
    } catch (const Error& e) {
      std::fprintf(stderr, "jiffy: %s\n", e.what());
      history.refused(e.what());
      return kExitNotFound;
    }
  }
  for (const AppSpec& app : opt.apps) {
    const std::optional<std::string>& dir = app.wdir ? app.wdir : opt.wdir;
    if (!dir) continue;
    struct stat st;
    const char* why = ::stat(dir->c_str(), &st) != 0 ? std::strerror(errno)
                      : !S_ISDIR(st.st_mode)         ? "not a directory"
                                                     : nullptr;
    if (why) {
      std::fprintf(stderr, "jiffy: -wdir %s: %s\n", dir->c_str(), why);
      history.refused("-wdir " + *dir + ": " + why);
      return kExitNotFound;
    }
  }
  if (opt.backend == Backend::Slurm) return run_slurm_step(opt, programs, history);
  BootstrapPlan plan = bootstrap_plan(opt, programs, argv);
  Fd signals = block_signals();
  // Named once: the launcher later narrows its own affinity to its job's.
  const DaemonPaths paths = daemon_paths();
  history.set_journal(paths.history);
  plan.topology_file = paths.topology;
  DaemonClient client = DaemonClient::connect(paths, /*start_if_missing=*/true);
  unsigned long long ticket = handoff ? handoff->ticket : 0;
  // Named before the request: a daemon that sees us die before "started"
  // still finds our ranks by it.
  const std::string tag = new_job_tag();
  history.set_tag(tag);
  std::variant<JobGrant, int> waited;
  std::string refusal;
  // A daemon may die many times while we wait (each restart gives a dying
  // socket that still accepts for a moment): bounded by time, not tries.
  double give_up = now_s() + kRestartWindowS;
  RestartBackoff backoff;
  bool answered = false;
  // The job's PMIx server is prepared while the request waits (registered
  // with the shared server, or started by jiffy-pmix), and the daemon told
  // its directory (launch/bootstrap.h, PreparedPmix). A
  // failure here is left for the grant's path to meet and report.
  std::unique_ptr<PreparedPmix> prepared;
  bool told = false;  // this daemon knows its directory
  auto prepare = [&](unsigned long long job) {
    if (!plan.pmix || !PmixServer::available() || told) return;
    try {
      if (!prepared) prepared = std::make_unique<PreparedPmix>(plan, job, tag, rank_appnums(opt));
    } catch (const Error&) {
      return;
    }
    // The daemon learns the directory before the server fills it.
    client.send({{"type", proto::type::kPreparing}, {"jobdir", prepared->dir()}});
    told = true;
    if (prepared->started()) return;
    try {
      prepared->start();
    } catch (const Error&) {
      prepared.reset();  // the grant's path tries again, and reports
    }
  };
  for (;;) {
    try {
      told = false;
      client.send(submit_message(opt, ::isatty(2), ticket, tag, history));
      answered = false;
      waited = wait_for_grant(client, opt, signals.get(), &ticket, &refusal, &answered, prepare);
      break;
    } catch (const Error& e) {
      // The daemon went away (crash, restart, idle exit racing our connect):
      // ask the next one, for our old place in the queue.
      if (!daemon_restarting(e) || now_s() > give_up) throw;
      if (answered) {  // that daemon lived: the next restart gets its own window
        give_up = now_s() + kRestartWindowS;
        backoff = RestartBackoff();
      }
      backoff.pause();
      client = DaemonClient::connect(paths, /*start_if_missing=*/true);
    }
  }
  if (auto* code = std::get_if<int>(&waited)) {
    if (*code == kExitRefused) history.refused(refusal);
    else history.interrupted(*code - 128);
    return *code;
  }
  const JobGrant grant = std::move(std::get<JobGrant>(waited));
  history.granted(grant);
  if (opt.verbose) report_bindings(grant, opt);
  // The daemon wrote its XML before it listened; none there (it could not,
  // or someone removed it) and the ranks discover the machine themselves:
  // hwloc given a missing HWLOC_XMLFILE would fail instead.
  plan.topology_cache = plan.topology_cache && ::access(plan.topology_file.c_str(), R_OK) == 0;
  for (const RankGrant& r : grant.ranks) {
    plan.ucx_shm = plan.ucx_shm && r.gpus.empty();
    plan.single_node_ompi = plan.single_node_ompi && r.gpus.empty();
  }
  Job job(opt, programs, grant, plan, tag);
  job.use_prepared(std::move(prepared));
  allow_spawn(job, paths, opt, grant.id, history.cwd());
  if (!job.start()) {
    history.not_started("cannot execute " + opt.apps[0].argv[0]);
    return kExitNotFound;
  }
  history.started();
  DaemonLink link(paths, std::move(client), opt, grant);
  int code = supervise(job, link, signals.get(), /*announce=*/true);
  history.ended(job.ending());
  return code;
}

}  // namespace

// Every launch leaves one record in the history journal, whichever way it
// ends (docs/history.md): written here and nowhere else.
int run_launch(const LaunchOptions& opt, const std::vector<std::string>& argv, const Handoff* handoff,
               std::int64_t submit_ns) {
  // A launch the front began keeps the front's start (a hand-over's state
  // says when).
  if (handoff && handoff->submit_ns > 0) submit_ns = handoff->submit_ns;
  LaunchHistory history(opt, command_summary(opt), submit_ns);
  int code;
  try {
    code = launch(opt, argv, handoff, history);
  } catch (const Error& e) {
    history.failed(e.what());
    history.write(1);  // main() reports the error and exits 1
    throw;
  }
  history.write(code);
  return code;
}

}  // namespace jiffy
