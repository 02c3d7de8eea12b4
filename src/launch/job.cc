#include "launch/job.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "launch/environment.h"
#include "launch/hosts.h"
#include "launch/sub_request.h"
#include "proto/history.h"
#include "util/error.h"
#include "util/sys.h"

namespace jiffy {

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ",") + x;
  return s;
}

std::string join(const std::vector<int>& v) {
  std::string s;
  for (int x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

std::string signal_name(int signo) {
  const char* abbrev = ::sigabbrev_np(signo);
  return std::string("SIG") + (abbrev ? abbrev : std::to_string(signo).c_str());
}

double kill_grace_from_env() {
  const char* g = std::getenv("JIFFY_KILL_GRACE");
  if (!g) return 2.0;
  char* end;
  double v = std::strtod(g, &end);
  return (*end == '\0' && v >= 0 && v < 3600) ? v : 2.0;
}

}  // namespace

// The order to start ranks in: rank 0 (it leads the process group), then
// the first rank of every other CPU set, then the rest. When ranks share
// CPUs (more ranks than cores), each CPU gets a rank before any gets a
// second, instead of the launcher spawning behind the ranks running on its
// own CPU (-n 4 on 2 cores: 2.0 ms instead of 2.9 ms). As src/front/job.c.
std::vector<int> spawn_order(const JobGrant& grant) {
  const int n = static_cast<int>(grant.ranks.size());
  std::vector<int> order;
  std::vector<char> started(grant.ranks.size(), 0);
  std::vector<char> seen(CPU_SETSIZE, 0);
  for (int pass = 0; pass < 2; ++pass) {
    for (int r = 0; r < n; ++r) {
      const std::vector<int>& cpus = grant.ranks[static_cast<std::size_t>(r)].cpus;
      int first = cpus.empty() ? 0 : *std::min_element(cpus.begin(), cpus.end());
      const auto ri = static_cast<std::size_t>(r), fi = static_cast<std::size_t>(first);
      if (started[ri] || (pass == 0 && r > 0 && seen[fi])) continue;
      seen[fi] = 1;
      started[ri] = 1;
      order.push_back(r);
    }
  }
  return order;
}

// The rank, in spawn order, that is the last to be the first on its CPUs:
// the launcher spawns from there (Job::start), beside no rank but the last.
int last_first_on_cpu(const JobGrant& grant, const std::vector<int>& order) {
  std::vector<char> seen(CPU_SETSIZE, 0);
  int last = order.empty() ? 0 : order.front();
  for (int r : order) {
    const std::vector<int>& cpus = grant.ranks[static_cast<std::size_t>(r)].cpus;
    const auto first = static_cast<std::size_t>(cpus.empty() ? 0 : *std::min_element(cpus.begin(), cpus.end()));
    if (!seen[first]) last = r;
    seen[first] = 1;
  }
  return last;
}

// Whether ranks share CPUs: unbound, a core is two ranks'; bound, the
// daemon's layout gave every rank all of the job's CPUs (sched/layout.h).
bool job_shares_cpus(const JobGrant& g, Bind bind) {
  std::vector<std::vector<int>> cores, cpus;
  for (const RankGrant& r : g.ranks) {
    cores.push_back(r.cores);
    cpus.push_back(r.cpus);
  }
  if (bind == Bind::None) return ranks_share_cpus(cores);
  return cpus.size() > 1 && !cpus[0].empty() && std::all_of(cpus.begin(), cpus.end(), [&](const auto& c) { return c == cpus[0]; }) &&
         ranks_share_cpus(cpus);
}

std::vector<int> rank_appnums(const LaunchOptions& opt) {
  std::vector<int> appnum;
  for (std::size_t g = 0; g < opt.apps.size(); ++g) {
    appnum.insert(appnum.end(), static_cast<std::size_t>(opt.apps[g].ntasks), static_cast<int>(g));
  }
  return appnum;
}

namespace {

// What jiffy tells every rank, of the job's own world or a spawned one:
// who it is, its cores, the job's tag (how the daemon finds its strays) and
// its GPUs under each vendor's name.
void set_rank_variables(Environment& env, const std::string& job_id, int rank, int size, std::size_t appnum,
                        const RankGrant& rg, const std::string& tag) {
  env.set("JIFFY_JOB_ID", job_id);
  env.set("JIFFY_RANK", std::to_string(rank));
  env.set("JIFFY_SIZE", std::to_string(size));
  env.set("JIFFY_APPNUM", std::to_string(appnum));
  env.set("JIFFY_CORES", join(rg.cores));
  env.set("JIFFY_JOB_TAG", tag);
  if (!rg.gpus.empty()) {
    std::string gpus = join(rg.gpus);
    for (const char* var : {"CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "ZE_AFFINITY_MASK"}) env.set(var, gpus);
  }
}

// A labelled line's prefix: --tag-output byte for byte as mpirun writes it
// ("[1,0]<stdout>:x", the job being 1 + the world; scripts parse it), the
// user's -prepend-pattern (index: the rank among all the launcher's), or
// jiffy's own.
std::string label_prefix(const LaunchOptions& opt, const char* stream, int world, int rank, int index, int group,
                         const std::string& own) {
  switch (opt.label) {
    case Label::Tag:
      return "[" + std::to_string(1 + world) + "," + std::to_string(rank) + "]<std" + stream + ">:";
    case Label::Pattern: return expand_pattern(opt.prepend_pattern, index, group);
    default: return own;
  }
}

// Every thread of this process but the caller onto set (best effort: a
// thread may end meanwhile).
void bind_other_threads(const cpu_set_t& set) {
  DIR* d = ::opendir("/proc/self/task");
  if (!d) return;
  const pid_t self = static_cast<pid_t>(::syscall(SYS_gettid));
  while (dirent* e = ::readdir(d)) {
    const pid_t tid = static_cast<pid_t>(std::atoi(e->d_name));
    if (tid > 0 && tid != self) ::sched_setaffinity(tid, sizeof set, &set);
  }
  ::closedir(d);
}

}  // namespace

Job::Job(const LaunchOptions& opt, std::vector<std::string> programs, JobGrant grant,
         BootstrapPlan bootstrap, std::string tag)
    : opt_(opt), programs_(std::move(programs)), grant_(std::move(grant)), plan_(bootstrap),
      tag_(std::move(tag)), kill_grace_s_(kill_grace_from_env()) {
  plan_.tag = tag_;
}

Job::~Job() = default;

bool Job::start() {
  const int size = opt_.total_tasks();
  Environment caller = Environment::inherited();
  std::vector<Environment> group_envs;
  for (std::size_t g = 0; g < opt_.apps.size(); ++g) {
    group_envs.push_back(group_environment(opt_, g, caller));
  }
  Fd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!devnull) throw_errno("open /dev/null");
  const std::string job_id = std::to_string(grant_.id);
  const bool sharing = job_shares_cpus(grant_, opt_.bind);
  const std::vector<int> appnum = rank_appnums(opt_);
  const bool prepared = prepared_ != nullptr;
  bootstrap_ = std::make_unique<Bootstrap>(
      plan_, grant_.id, appnum,
      Bootstrap::Events{[this](int w, int r, int c, const std::string& m) { on_abort(w, r, c, m); },
                        [this](int w, int r, const std::string& why) { on_protocol_error(w, r, why); },
                        [this](const std::string& why) { fail(1, why); },
                        [this](SpawnAsk ask) { on_spawn(std::move(ask)); }},
      std::move(prepared_));
  // Orphans of the ranks (daemonized helpers included) become ours, so that
  // none outlives the job (kill_descendants).
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  // Move onto the job's CPUs first, so that the launcher's own work (PMI,
  // labelled output) is charged to the job's cores, not to another job's;
  // threads started from here on (libpmix) inherit it. Onto the CPUs that
  // get their first rank last (launch_cpus): a child starts where its
  // parent runs, and on a CPU where an earlier rank is loading already it
  // would wait for that rank's time slice before it could even move to its
  // own (Open MPI -n 2: rank 1 started 5 ms after rank 0).
  const std::vector<int> order = spawn_order(grant_);
  const std::vector<int>& launch_cpus = grant_.ranks[static_cast<std::size_t>(last_first_on_cpu(grant_, order))].cpus;
  if (opt_.bind != Bind::None && !launch_cpus.empty()) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int c : launch_cpus) CPU_SET(c, &set);
    ::sched_setaffinity(0, sizeof set, &set);
    // A server prepared while queued has its threads already: move them too.
    if (prepared) bind_other_threads(set);
  }
  Fd rank0_stdin;
  if (::isatty(0)) rank0_stdin = stdin_.open();
  ranks_.assign(static_cast<std::size_t>(size), Rank{});
  std::vector<Spawned> spawned(static_cast<std::size_t>(size));
  for (int rank : order) {
    const std::size_t g = static_cast<std::size_t>(appnum[static_cast<std::size_t>(rank)]);
    const AppSpec& app = opt_.apps[g];
    const RankGrant& rg = grant_.ranks[static_cast<std::size_t>(rank)];
    Environment env = group_envs[g];
    set_rank_variables(env, job_id, rank, size, g, rg, tag_);
    env.set("JIFFY_LOCAL_RANK", std::to_string(rank));
    env.set("JIFFY_LOCAL_SIZE", std::to_string(size));
    // Ranks sharing CPUs: Open MPI yields instead of spinning, as mpirun
    // makes it when it oversubscribes (issue 14: 45x faster at 3 ranks on 2
    // cores). The user's own setting wins.
    if (sharing && !env.get(kYieldVar)) env.set(kYieldVar, "1");
    RankSpawn spec;
    spec.path = programs_[g];
    spec.argv = app.argv;
    spec.wdir = app.wdir ? app.wdir : opt_.wdir;
    spec.stdin_fd = rank != 0 ? devnull.get() : rank0_stdin ? rank0_stdin.get() : 0;
    spec.inherit_fd = bootstrap_->prepare_rank(rank, env);
    Spawned s = spawn_labelled(std::move(spec), env, rg, rank, static_cast<int>(g), [&](const char* stream) {
      return label_prefix(opt_, stream, 0, rank, rank, static_cast<int>(g), "[" + std::to_string(rank) + "] ");
    });
    bootstrap_->rank_spawned(rank);
    if (rank == 0) pgid_ = s.pid;
    ranks_[static_cast<std::size_t>(rank)] = Rank{s.pid, static_cast<int>(g), false, 0, 0, rank, {}};
    spawned[static_cast<std::size_t>(rank)] = s;
  }
  bool ok = true;
  for (std::size_t r = 0; r < spawned.size(); ++r) {
    if (int err = spawned[r].exec_errno) {
      if (ok) {
        std::fprintf(stderr, "jiffy: cannot execute %s: %s\n",
                     rank_program(r).c_str(),
                     std::strerror(err));
      }
      ok = false;
    }
  }
  if (!ok) {
    kill_group(SIGKILL);
    for (Rank& r : ranks_) {
      int status;
      while (::waitpid(r.pid, &status, 0) < 0 && errno == EINTR) {
      }
      r.done = true;
    }
  }
  return ok;
}

// One rank onto its CPUs, in the job's process group, with its output
// where the options send it: files, straight through, or labelled through
// the forwarder (index: the rank among all of this launcher's, which names
// its output files).
Spawned Job::spawn_labelled(RankSpawn spec, Environment& env, const RankGrant& rg, int index, int group,
                            const std::function<std::string(const char*)>& prefix) {
  RankOutput out = open_rank_output(opt_, index, group, files_);
  spec.envp = env.envp();
  spec.cpus = opt_.bind == Bind::None ? std::vector<int>{} : rg.cpus;
  if (out.out_file) spec.stdout_fd = out.out_file.get();
  if (out.err_file) spec.stderr_fd = out.err_file.get();
  spec.pgid = pgid_;
  Spawned s = spawn_rank(spec);
  if (out.out_read) forwarder_.add(std::move(out.out_read), 1, prefix("out"));
  if (out.err_read) forwarder_.add(std::move(out.err_read), 2, prefix("err"));
  return s;
}

void Job::adopt(const Handoff& h) {
  if (opt_.apps.size() != 1 || h.ranks.size() != static_cast<std::size_t>(opt_.total_tasks())) {
    throw Error("the handed-over job does not match the command line");
  }
  pgid_ = h.pgid;
  bootstrap_ = std::make_unique<Bootstrap>(
      plan_, grant_.id, std::vector<int>(h.ranks.size(), 0),
      Bootstrap::Events{[this](int w, int r, int c, const std::string& m) { on_abort(w, r, c, m); },
                        [this](int w, int r, const std::string& why) { on_protocol_error(w, r, why); },
                        [this](const std::string& why) { fail(1, why); },
                        [this](SpawnAsk ask) { on_spawn(std::move(ask)); }});
  for (std::size_t r = 0; r < h.ranks.size(); ++r) {
    bootstrap_->adopt_channel(static_cast<int>(r), h.ranks[r].pmi_fd);
    ranks_.push_back(Rank{h.ranks[r].pid, 0, h.ranks[r].done, 0, 0, static_cast<int>(r), {}});
  }
  // The timeout counts from the ranks' start, which was the front's.
  if (h.deadline_ns > 0) deadline_ = static_cast<double>(h.deadline_ns) * 1e-9;
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
}

std::string Job::world_rank_name(int world, int rank) {
  if (world == 0) return "rank " + std::to_string(rank);
  return "spawned rank " + std::to_string(rank) + " of world " + std::to_string(world);
}

std::string Job::rank_name(std::size_t i) const { return world_rank_name(ranks_[i].world, ranks_[i].wrank); }

const std::string& Job::rank_program(std::size_t i) const {
  const Rank& r = ranks_[i];
  return r.world == 0 ? opt_.apps[static_cast<std::size_t>(r.group)].argv[0] : r.program;
}

// MPI_Comm_spawn: the programs are found as the launcher finds its own
// (PATH, the working directory: a missing one fails the spawn, as exit 127
// would), then the daemon is asked for their cores; the answer comes in the
// loop (poll_worlds).
void Job::on_spawn(SpawnAsk ask) {
  auto w = std::make_unique<World>();
  w->ask = std::move(ask);
  World& world = *w;
  worlds_.push_back(std::move(w));
  if (terminating_) return spawn_failed(world, "");
  if (!ask_cores_) return spawn_failed(world, "this launch cannot spawn ranks");
  int total = 0;
  for (const PmixSpawnApp& app : world.ask.apps) {
    std::string path_var = "/usr/bin:/bin";
    if (const char* p = std::getenv("PATH")) path_var = p;
    for (const auto& [name, value] : app.env) {
      if (name == "PATH") path_var = value;
    }
    std::optional<std::string> wdir = app.wdir.empty() ? opt_.wdir : std::optional<std::string>(app.wdir);
    try {
      // Hosts it names must be this machine, as on jiffy's command line.
      LaunchOptions where;
      for (const std::string& list : app.hosts) {
        for (std::size_t from = 0, comma; from <= list.size(); from = comma + 1) {
          comma = std::min(list.find(',', from), list.size());
          if (comma > from) where.hosts.push_back(list.substr(from, comma - from));
        }
      }
      where.hostfile = app.hostfile;
      check_hosts(where);
      world.programs.push_back(resolve_program(app.command, path_var, wdir));
    } catch (const Error& e) {
      return spawn_failed(world, e.what());
    }
    total += app.nprocs;
  }
  unsigned long long asker = 0;  // the asking world's own spawn, by its job id
  for (const auto& other : worlds_) {
    if (other->number == world.ask.world && other->number != 0 && other->cores) asker = other->cores->grant().id;
  }
  try {
    world.cores = ask_cores_(total, asker);
    world.cores->set_family(pgid_, tag_);
  } catch (const Error& e) {
    return spawn_failed(world, std::string("cannot ask the daemon for cores: ") + e.what());
  }
}

// The spawn call fails in the asking rank (MPI_ERR_SPAWN); the job goes on,
// as the MPI decides.
void Job::spawn_failed(World& w, const std::string& why) {
  if (!why.empty()) {
    std::fprintf(stderr, "jiffy: MPI_Comm_spawn from rank %d%s failed: %s\n", w.ask.rank,
                 w.ask.world ? (" of spawned world " + std::to_string(w.ask.world)).c_str() : "", why.c_str());
  }
  if (w.cores) w.cores->finished(1);
  w.cores.reset();
  bootstrap_->spawn_answer(w.ask.id, false, 0, why);
}

void Job::start_world(World& w) {
  const JobGrant& grant = w.cores->grant();
  std::vector<int> appnum;
  for (std::size_t a = 0; a < w.ask.apps.size(); ++a) {
    appnum.insert(appnum.end(), static_cast<std::size_t>(w.ask.apps[a].nprocs), static_cast<int>(a));
  }
  try {
    w.number = bootstrap_->add_world(w.ask.id, appnum);
  } catch (const Error& e) {
    return spawn_failed(w, e.what());
  }
  const int size = static_cast<int>(appnum.size());
  Environment caller = group_environment(opt_, 0, Environment::inherited());
  Fd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!devnull) throw_errno("open /dev/null");
  w.first = ranks_.size();
  w.size = appnum.size();
  int failed_errno = 0;
  std::string failed_program;
  for (int r = 0; r < size; ++r) {
    const std::size_t a = static_cast<std::size_t>(appnum[static_cast<std::size_t>(r)]);
    const PmixSpawnApp& app = w.ask.apps[a];
    const RankGrant& rg = grant.ranks[static_cast<std::size_t>(r)];
    Environment env = caller;
    for (const auto& [name, value] : app.env) env.set(name, value);
    set_rank_variables(env, std::to_string(grant_.id), r, size, a, rg, tag_);
    env.set("JIFFY_WORLD", std::to_string(w.number));
    const int index = static_cast<int>(ranks_.size());
    RankSpawn spec;
    spec.path = w.programs[a];
    spec.argv = app.argv;
    spec.wdir = app.wdir.empty() ? opt_.wdir : std::optional<std::string>(app.wdir);
    spec.stdin_fd = devnull.get();
    spec.inherit_fd = bootstrap_->prepare_world_rank(w.number, r, env);
    Spawned s = spawn_labelled(std::move(spec), env, rg, index, static_cast<int>(a), [&](const char* stream) {
      const std::string own = "[" + std::to_string(w.number) + "." + std::to_string(r) + "] ";
      return label_prefix(opt_, stream, w.number, r, index, static_cast<int>(a), own);
    });
    bootstrap_->rank_spawned(r, w.number);
    ranks_.push_back(Rank{s.pid, 0, false, 0, w.number, r, app.command});
    if (s.exec_errno && !failed_errno) {
      failed_errno = s.exec_errno;
      failed_program = app.command;
    }
  }
  if (failed_errno) {
    for (std::size_t i = w.first; i < ranks_.size(); ++i) {
      ::kill(ranks_[i].pid, SIGKILL);
      while (::waitpid(ranks_[i].pid, nullptr, 0) < 0 && errno == EINTR) {
      }
      ranks_[i].done = true;
    }
    return spawn_failed(w, "cannot execute " + failed_program + ": " + std::strerror(failed_errno));
  }
  bootstrap_->spawn_answer(w.ask.id, true, w.number);
}

void Job::poll_worlds(const std::vector<pollfd>& fds, std::size_t first) {
  for (std::size_t i = 0; i < polled_worlds_.size(); ++i) {
    if (!fds[first + i].revents) continue;
    World& w = *polled_worlds_[i];
    if (!w.cores) continue;
    const bool waiting = w.cores->state() == SubRequest::State::Waiting;
    SubRequest::State st = w.cores->on_ready();
    if (!waiting) continue;
    if (st == SubRequest::State::Refused) {
      spawn_failed(w, w.cores->why());
    } else if (st == SubRequest::State::Granted) {
      if (terminating_) {
        spawn_failed(w, "");
      } else {
        start_world(w);
      }
    }
  }
}

// A world whose ranks are all gone gives its cores back at once.
void Job::release_worlds() {
  for (auto& w : worlds_) {
    if (!w->cores || w->cores->state() != SubRequest::State::Granted || w->number == 0) continue;
    bool done = true;
    int code = 0;
    for (std::size_t i = w->first; i < w->first + w->size; ++i) {
      done = done && ranks_[i].done;
      if (ranks_[i].code && !code) code = ranks_[i].code;
    }
    if (!done) continue;
    w->cores->finished(code);
    w->cores.reset();
  }
}

std::size_t Job::live_ranks() const {
  std::size_t n = 0;
  for (const Rank& r : ranks_) n += r.done ? 0 : 1;
  return n;
}

void Job::kill_group(int signo) {
  if (pgid_ > 0) ::kill(-pgid_, signo);
}

void Job::terminate() {
  if (terminating_) return;
  terminating_ = true;
  kill_group(SIGTERM);
  kill_at_ = now_s() + kill_grace_s_;
}

void Job::record_exit(std::size_t i, int code, bool signalled, int signo) {
  Rank& r = ranks_[i];
  r.done = true;
  r.code = signalled ? 128 + signo : code;
  // libpmix answers a finalize on its own thread: the rank may have
  // finalized and exited since we last looked, so look again first.
  if (r.code == 0 && !terminating_ && bootstrap_) bootstrap_->drain();
  if (r.code == 0 && !terminating_ && bootstrap_ && bootstrap_->unfinalized(r.wrank, r.world)) {
    // As hydra does: leaving between MPI_Init and MPI_Finalize is a failure,
    // whatever the exit code says.
    r.code = 1;
    fail(1, rank_name(i) + " (" + rank_program(i) + ", pid " + std::to_string(r.pid) +
                ") exited without calling MPI_Finalize");
    return;
  }
  // A spawned rank that never connected leaves its parent waiting in
  // MPI_Comm_spawn's connect for it: that wait fails instead of hanging.
  if (r.world > 0 && bootstrap_ && !bootstrap_->contacted(r.wrank, r.world)) {
    for (const auto& w : worlds_) {
      if (w->number != r.world) continue;
      for (const PmixSpawnApp& app : w->ask.apps) {
        for (const auto& [name, value] : app.env) {
          if (name != "OMPI_PARENT_PORT") continue;
          std::fprintf(stderr, "jiffy: %s (%s, pid %d) exited before it connected to its parent; the parent's "
                       "MPI_Comm_spawn fails\n", rank_name(i).c_str(), rank_program(i).c_str(), r.pid);
          bootstrap_->world_rank_lost(value);
        }
      }
    }
  }
  if (r.code == 0 || exit_code_) return;
  exit_code_ = r.code;
  failed_signal_ = signalled ? signo : 0;
  if (terminating_) return;  // a consequence of our own TERM/KILL, not news
  bool ours = signalled && signo == forwarded_signal_;
  std::size_t others = live_ranks();
  if (!ours && (ranks_.size() > 1 || signalled)) {
    std::string how = signalled ? "was killed by signal " + std::to_string(signo) + " (" +
                                      signal_name(signo) + ")"
                                : "exited with code " + std::to_string(code);
    std::string tail = others ? "; terminating the other " + std::to_string(others) + " rank" +
                                    (others == 1 ? "" : "s")
                              : "";
    std::fprintf(stderr, "jiffy: %s (%s, pid %d) %s%s\n", rank_name(i).c_str(), rank_program(i).c_str(),
                 r.pid, how.c_str(), tail.c_str());
  }
  if (others) terminate();
}

// Records a job-level failure with its one stderr line and ends the job.
void Job::fail(int code, const std::string& message, bool culprit_alive) {
  if (!exit_code_) {
    exit_code_ = code;
    failed_signal_ = 0;
  }
  if (terminating_) return;
  std::size_t live = live_ranks();
  std::size_t others = culprit_alive && live > 0 ? live - 1 : live;
  std::string tail = culprit_alive ? "; terminating the job"
                     : others      ? "; terminating the other " + std::to_string(others) + " rank" +
                                    (others == 1 ? "" : "s")
                                   : "";
  std::fprintf(stderr, "jiffy: %s%s\n", message.c_str(), tail.c_str());
  terminate();
}

void Job::on_abort(int world, int rank, int code, const std::string& message) {
  if (abort_code_) return;
  // The code as a process would exit with it; a non-zero code never reads as success.
  int c = code & 255;
  if (code != 0 && c == 0) c = 1;
  abort_code_ = c;
  std::string m = world_rank_name(world, rank) + " called MPI_Abort with code " + std::to_string(code);
  if (!message.empty() && message != "N/A") m += " (" + message + ")";
  // Every rank, the aborting one included (it waits for us), must go.
  exit_code_.reset();
  fail(c, m, /*culprit_alive=*/true);
  terminating_ = true;
}

void Job::on_protocol_error(int world, int rank, const std::string& why) {
  fail(1, world_rank_name(world, rank) + " broke the PMI protocol: " + why, /*culprit_alive=*/true);
}

void Job::warn_if_never_bootstrapped() const {
  if (ranks_.size() < 2 || !bootstrap_) return;
  MpiKind k = bootstrap_->plan().kind;
  if (k != MpiKind::Mpich && k != MpiKind::OpenMpi) return;
  for (std::size_t i = 0; i < ranks_.size(); ++i) {
    if (ranks_[i].world == 0 && bootstrap_->contacted(static_cast<int>(i))) return;
  }
  std::fprintf(stderr,
               "jiffy: warning: none of the %zu ranks of %s contacted jiffy's PMI-1 or PMIx "
               "server although it links %s; they probably ran as %zu separate singletons (an MPI "
               "built for another launcher, or statically linked?)\n",
               ranks_.size(), opt_.apps[0].argv[0].c_str(), k == MpiKind::Mpich ? "MPICH" : "Open MPI",
               ranks_.size());
}

void Job::reap() {
  auto rank_of = [&](pid_t pid) -> std::size_t {
    for (std::size_t i = 0; i < ranks_.size(); ++i) {
      if (ranks_[i].pid == pid) return i;
    }
    return ranks_.size();
  };
  auto record_status = [&](std::size_t i, int status) {
    if (WIFEXITED(status)) record_exit(i, WEXITSTATUS(status), false, 0);
    else if (WIFSIGNALED(status)) record_exit(i, 0, true, WTERMSIG(status));
  };
  // Fast path: find exited children without reaping; reap all but rank 0,
  // whose zombie keeps the process group id from being reused.
  for (;;) {
    siginfo_t si{};
    if (::waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid == 0) break;
    if (si.si_pid == pgid_) {
      if (!ranks_[0].done) {
        bool sig = si.si_code == CLD_KILLED || si.si_code == CLD_DUMPED;
        record_exit(0, sig ? 0 : si.si_status, sig, sig ? si.si_status : 0);
      }
      break;  // rank 0 stays a zombie: scan the others one by one below
    }
    int status;
    pid_t pid = ::waitpid(si.si_pid, &status, 0);
    if (pid <= 0) break;
    std::size_t i = rank_of(pid);
    if (i < ranks_.size()) record_status(i, status);
  }
  if (!ranks_[0].done) return;
  for (std::size_t i = 1; i < ranks_.size(); ++i) {
    if (ranks_[i].done) continue;
    int status;
    if (::waitpid(ranks_[i].pid, &status, WNOHANG) == ranks_[i].pid) record_status(i, status);
  }
}

// Our children other than the ranks: processes the ranks left behind and we
// adopted as their subreaper.
std::vector<pid_t> Job::adopted_children() const {
  std::vector<pid_t> kids;
  DIR* d = ::opendir("/proc/self/task");
  if (!d) return kids;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string path = std::string("/proc/self/task/") + e->d_name + "/children";
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) continue;
    std::string text;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd.get(), buf, sizeof buf)) > 0) text.append(buf, static_cast<std::size_t>(n));
    for (const char* p = text.c_str(); *p;) {
      char* end;
      long pid = std::strtol(p, &end, 10);
      if (end == p) break;
      if (pid > 0 && pid != ranks_[0].pid) kids.push_back(static_cast<pid_t>(pid));
      p = end;
    }
  }
  ::closedir(d);
  return kids;
}

// The launcher is a child subreaper (set in start()), so whatever a rank
// left behind, even a daemon that double-forked and called setsid, was
// adopted by us: kill and reap each, round after round, as their own
// orphans come to us in turn.
void Job::kill_descendants() {
  for (int round = 0; round < 64; ++round) {
    std::vector<pid_t> kids = adopted_children();
    if (kids.empty()) return;
    for (pid_t pid : kids) ::kill(pid, SIGKILL);
    for (pid_t pid : kids) {
      while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
      }
    }
  }
}

namespace {
bool stops_the_job(int signo) {
  return signo == SIGINT || signo == SIGTERM || signo == SIGHUP || signo == SIGQUIT;
}
}  // namespace

void Job::handle_signal(int signo) {
  if (!stopped_by_ && stops_the_job(signo)) stopped_by_ = signo;
  switch (signo) {
    case SIGCHLD:
      // A finalize that preceded the exit must be seen before the exit.
      if (bootstrap_) bootstrap_->drain();
      reap();
      return;
    case SIGINT:
      // First Ctrl-C is forwarded, as mpiexec does; the second one kills.
      if (++interrupts_ == 1) {
        forwarded_signal_ = SIGINT;
        kill_group(SIGINT);
      } else {
        terminating_ = true;
        kill_group(SIGKILL);
      }
      return;
    default:
      forwarded_signal_ = signo;
      kill_group(signo);
  }
}

int Job::poll_timeout_ms(double give_up_at) const {
  double next = 0;
  for (double t : {deadline_, kill_at_, forwarder_.next_flush_at(), give_up_at}) {
    if (t > 0 && (next == 0 || t < next)) next = t;
  }
  if (next == 0) return -1;
  return std::max(0, static_cast<int>((next - now_s()) * 1000) + 1);
}

void Job::time_out() {
  timed_out_ = true;
  deadline_ = 0;
  std::fprintf(stderr, "jiffy: APPLICATION TIMED OUT after %g s (job %llu, %s); killing it\n",
               opt_.timeout_s, grant_.id, opt_.apps[0].argv[0].c_str());
  terminate();
}

// Labelled output that cannot be written ends the job: as without -l, where
// the ranks write to our stdout themselves and die of SIGPIPE.
void Job::check_output() {
  Forwarder::WriteError e;
  while (forwarder_.take_error(e)) {
    const char* name = e.fd == 1 ? "stdout" : "stderr";
    if (e.err == EPIPE) {
      fail(128 + SIGPIPE, std::string(name) + " was closed (EPIPE)", /*culprit_alive=*/true);
    } else {
      fail(1, std::string("cannot write the ranks' output to ") + name + ": " + std::strerror(e.err),
           /*culprit_alive=*/true);
    }
  }
}

// After the last rank: labelled output still in the pipes or held is
// delivered whole, however slow the reader (the ranks are gone; this is all
// that is left of the job). A job told to stop (its timeout, a signal that
// ends it) gets a second more; a signal that ends it or the timeout during
// the wait gives the rest up at once. Output given up is said on stderr and
// never leaves the exit code 0.
void Job::drain_output(int signal_fd) {
  double give_up_at = timed_out_ || interrupts_ > 0 || stops_the_job(forwarded_signal_) ? now_s() + 1 : 0;
  bool given_up = false;
  while (forwarder_.busy() && !given_up) {
    std::vector<pollfd> p{{signal_fd, POLLIN, 0}};
    forwarder_.add_poll_fds(p);
    int n = ::poll(p.data(), p.size(), poll_timeout_ms(give_up_at));
    if (n < 0 && errno != EINTR) throw_errno("poll");
    if (n > 0 && p[0].revents) {
      signalfd_siginfo si;
      while (::read(signal_fd, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
        int signo = static_cast<int>(si.ssi_signo);
        if (!stops_the_job(signo)) continue;  // SIGCHLD, SIGUSR1/2: nobody left to tell
        forwarded_signal_ = signo;
        if (!stopped_by_) stopped_by_ = signo;
        given_up = true;
      }
    }
    forwarder_.handle(p, 1);
    check_output();
    const double now = now_s();
    if (deadline_ > 0 && now >= deadline_ && !timed_out_) {
      time_out();
      given_up = true;
    }
    if (give_up_at > 0 && now >= give_up_at) given_up = true;
  }
  if (forwarder_.busy()) {
    std::fprintf(stderr, "jiffy: %zu bytes or more of the ranks' output were not delivered\n",
                 forwarder_.undelivered());
    if (!exit_code_ && !abort_code_) exit_code_ = forwarded_signal_ ? 128 + forwarded_signal_ : 1;
  }
  forwarder_.abandon();
}

int Job::wait(int signal_fd, const Watch* watch) {
  if (opt_.timeout_s > 0 && deadline_ == 0) deadline_ = now_s() + opt_.timeout_s;  // else adopt()'s
  reap();  // ranks may have exited before we got here
  std::string dir = job_dir();
  while (live_ranks() > 0) {
    std::vector<pollfd> p{{signal_fd, POLLIN, 0}};
    forwarder_.add_poll_fds(p);
    const std::size_t nfwd = p.size();
    if (stdin_.active()) p.push_back(pollfd{stdin_.fd(), stdin_.events(), 0});
    const std::size_t nboot = p.size();
    bootstrap_->add_poll_fds(p);
    const std::size_t nworlds = p.size();
    polled_worlds_.clear();
    for (auto& w : worlds_) {
      if (!w->cores || w->cores->fd() < 0) continue;
      p.push_back(pollfd{w->cores->fd(), POLLIN, 0});
      polled_worlds_.push_back(w.get());
    }
    const std::size_t nwatch = p.size();
    if (watch && watch->fd() >= 0) p.push_back(pollfd{watch->fd(), POLLIN, 0});
    int n = ::poll(p.data(), p.size(), poll_timeout_ms(0));
    if (n < 0 && errno != EINTR) throw_errno("poll");
    if (n > 0) bootstrap_->handle(p, nboot);
    if (n > 0) poll_worlds(p, nworlds);
    if (watch && watch->job_dir && job_dir() != dir) watch->job_dir(dir = job_dir());
    if (n > 0 && p.size() > nwatch && p[nwatch].revents) watch->on_ready();
    if (n > 0 && p[0].revents) {
      signalfd_siginfo si;
      while (::read(signal_fd, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
        handle_signal(static_cast<int>(si.ssi_signo));
      }
    }
    if (n > 0 && stdin_.active() && p[nfwd].revents) stdin_.on_ready();
    forwarder_.handle(p, 1);  // also when poll timed out: unfinished lines due
    check_output();
    double now = now_s();
    if (deadline_ > 0 && now >= deadline_ && !timed_out_) time_out();
    if (kill_at_ > 0 && now >= kill_at_) {
      kill_at_ = 0;
      kill_group(SIGKILL);
    }
    release_worlds();
  }
  // Nothing of the job may outlive it: kill what the ranks left behind in
  // their group (rank 0's zombie still pins the group id), then reap rank 0.
  kill_group(SIGKILL);
  kill_descendants();
  stdin_.close();
  drain_output(signal_fd);
  int status;
  while (::waitpid(ranks_[0].pid, &status, 0) < 0 && errno == EINTR) {
  }
  // The job's end for its history record: before "finished" lets the daemon
  // give its cores to the next job.
  ended_ns_ = realtime_ns();
  if (timed_out_) return 255;
  if (abort_code_) return *abort_code_;
  if (!exit_code_) warn_if_never_bootstrapped();
  return exit_code_.value_or(0);
}

Job::Ending Job::ending() const {
  if (timed_out_) return {JIFFY_OUTCOME_TIMED_OUT, 0, ended_ns_};
  if (stopped_by_) return {JIFFY_OUTCOME_SIGNALED, stopped_by_, ended_ns_};
  if (!abort_code_ && exit_code_ && failed_signal_) return {JIFFY_OUTCOME_SIGNALED, failed_signal_, ended_ns_};
  return {JIFFY_OUTCOME_EXITED, 0, ended_ns_};
}

}  // namespace jiffy
