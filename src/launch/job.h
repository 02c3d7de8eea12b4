// Job: the ranks of one granted launch, from fork to the last reaped child.
//
// All ranks share one process group led by rank 0, so one killpg reaches
// them and their children. Rank 0 is reaped last: while it is a zombie its
// pid cannot be reused, so killing the group at the end can never hit an
// unrelated process. Signals arrive through a signalfd and are handled in the
// one poll loop, together with labelled output and the job's deadlines.
//
// Exit code: 0 when every rank exits 0; else the MPI_Abort code if a rank
// aborted, or the first failing rank's code, 128+signal for a signalled
// rank, 1 for a rank that exited between MPI_Init and MPI_Finalize; 255 on timeout (the message contains
// "APPLICATION TIMED OUT", as hydra's does). When a rank fails the others get
// SIGTERM, then SIGKILL after a grace period.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "launch/bootstrap.h"
#include "launch/handoff.h"
#include "launch/options.h"
#include "launch/output.h"
#include "launch/spawn.h"

namespace jiffy {

// What the daemon granted to one rank.
struct RankGrant {
  std::vector<int> cores;
  std::vector<int> cpus;
  std::vector<std::string> gpus;
};

// What makes Open MPI's ranks yield instead of spin (mpirun sets it when it
// oversubscribes); given to ranks that share CPUs.
inline constexpr const char* kYieldVar = "OMPI_MCA_mpi_yield_when_idle";

struct JobGrant {
  unsigned long long id = 0;
  bool exclusive = false;
  std::vector<RankGrant> ranks;
  // The grant as the daemon's ledger knows it, echoed back when re-attaching
  // to a new daemon.
  std::vector<std::pair<int, int>> slots;  // (core, slot)
  std::vector<int> gpu_ids;
};

// Whether some CPU (or, unbound, some core) is given to two of the job's
// ranks: they share CPUs, and get kYieldVar.
bool job_shares_cpus(const JobGrant& g, Bind bind);

// The order to start ranks in: rank 0 (it leads the process group), then
// the first rank of every other CPU set, then the rest.
std::vector<int> spawn_order(const JobGrant& grant);
// The rank, in that order, that is the last to be the first on its CPUs:
// the launcher spawns from its CPUs (Job::start, and src/front/job.c).
int last_first_on_cpu(const JobGrant& grant, const std::vector<int>& order);

// Each rank's executable group (MPI's appnum), in rank order.
std::vector<int> rank_appnums(const LaunchOptions& opt);

// Something else the job's loop watches: the daemon connection.
struct Watch {
  std::function<int()> fd;          // -1: nothing to watch now
  std::function<void()> on_ready;
  // The job made its directory after it started (the PMIx helper of a
  // rendezvous, launch/bootstrap.h): whoever must remove it if we die is told.
  std::function<void(const std::string& dir)> job_dir;
};

class SubRequest;

// What a spawn asks of the daemon: cores for ntasks more ranks (a
// SubRequest, launch/sub_request.h), for ranks of the spawn granted as job
// `asker` (0: the job's own). Throws Error.
using CoreAsker = std::function<std::unique_ptr<SubRequest>(int ntasks, unsigned long long asker)>;

class Job {
 public:
  // programs[g]: the resolved executable of app group g.
  // tag: the job's JIFFY_JOB_TAG, already given to the daemon with "submit".
  Job(const LaunchOptions& opt, std::vector<std::string> programs, JobGrant grant,
      BootstrapPlan bootstrap, std::string tag);
  ~Job();

  // The PMIx server prepared while queued (launch/bootstrap.h), for start().
  void use_prepared(std::unique_ptr<PreparedPmix> prepared) { prepared_ = std::move(prepared); }
  // How MPI_Comm_spawn gets cores; unset, every spawn fails.
  void allow_spawn(CoreAsker ask) { ask_cores_ = std::move(ask); }
  // Forks and execs every rank. Returns false (after cleaning up, with a
  // message on stderr) when a rank could not be started.
  bool start();
  // Instead of start(): takes over the ranks the front spawned in this
  // process (launch/handoff.h), with the deadline the front set them, if
  // any (else wait() starts the timeout afresh). Throws Error.
  void adopt(const Handoff& handoff);
  pid_t pgid() const { return pgid_; }
  std::string job_dir() const { return bootstrap_ ? bootstrap_->job_dir() : std::string(); }
  // Random, in every rank's environment as JIFFY_JOB_TAG: how the daemon
  // finds what is left of the job (setsid helpers included) if we die.
  const std::string& tag() const { return tag_; }
  // Runs the event loop until every rank is reaped. signal_fd delivers the
  // blocked signals (SIGCHLD, SIGINT, SIGTERM, SIGHUP, ...). Returns the exit code.
  int wait(int signal_fd, const Watch* watch = nullptr);

  // How the job ended, for its history record (proto/history.h): outcome
  // JIFFY_OUTCOME_TIMED_OUT, SIGNALED (signal: the launcher's that stopped
  // the job, else the signal that killed the first failing rank) or
  // EXITED. REQUIRES: wait() returned.
  struct Ending {
    int outcome = 0;
    int signal = 0;
    std::int64_t end_ns = 0;  // CLOCK_REALTIME: every process of the job gone; 0: wait() has not returned
  };
  Ending ending() const;

 private:
  struct Rank {
    pid_t pid = -1;
    int group = 0;  // its app (the job's own ranks)
    bool done = false;
    int code = 0;  // exit code, or 128+signal
    int world = 0;  // 0: the job's own; n: spawned world n (its rank: wrank)
    int wrank = 0;
    std::string program;  // spawned ranks: as the spawn named it
  };
  // The ranks one MPI_Comm_spawn asked for: first their cores, then
  // ranks_[first, first + size) as world `number` of the bootstrap.
  struct World {
    SpawnAsk ask;
    std::vector<std::string> programs;  // per app, resolved
    std::unique_ptr<SubRequest> cores;
    int number = 0;  // 0 until started
    std::size_t first = 0;
    std::size_t size = 0;
  };

  Spawned spawn_labelled(RankSpawn spec, Environment& env, const RankGrant& rg, int index, int group,
                         const std::function<std::string(const char*)>& prefix);
  void on_spawn(SpawnAsk ask);
  void spawn_failed(World& w, const std::string& why);
  void start_world(World& w);
  void poll_worlds(const std::vector<pollfd>& fds, std::size_t first);
  void release_worlds();
  static std::string world_rank_name(int world, int rank);
  std::string rank_name(std::size_t i) const;
  const std::string& rank_program(std::size_t i) const;
  void handle_signal(int signo);
  void on_abort(int world, int rank, int code, const std::string& message);
  void on_protocol_error(int world, int rank, const std::string& why);
  // culprit_alive: the failing rank has not exited (abort, protocol error).
  void fail(int code, const std::string& message, bool culprit_alive = false);
  void warn_if_never_bootstrapped() const;
  void reap();
  void record_exit(std::size_t rank, int code, bool signalled, int signo);
  void terminate();
  void kill_group(int signo);
  std::vector<pid_t> adopted_children() const;
  void kill_descendants();
  // give_up_at: another deadline (now_s() clock), 0 = none.
  int poll_timeout_ms(double give_up_at) const;
  void time_out();
  void check_output();
  void drain_output(int signal_fd);
  std::size_t live_ranks() const;

  const LaunchOptions& opt_;
  std::vector<std::string> programs_;
  JobGrant grant_;
  BootstrapPlan plan_;
  std::unique_ptr<PreparedPmix> prepared_;
  CoreAsker ask_cores_;
  std::vector<std::unique_ptr<World>> worlds_;  // spawned
  std::vector<World*> polled_worlds_;  // behind the entries poll_worlds reads
  std::unique_ptr<Bootstrap> bootstrap_;
  std::vector<Rank> ranks_;
  Forwarder forwarder_;
  OutputFiles files_;  // the job's output files, each opened once
  StdinPump stdin_;
  pid_t pgid_ = 0;
  std::string tag_;
  std::optional<int> exit_code_;  // the first failure, decides the job's code
  std::optional<int> abort_code_;  // MPI_Abort's code overrides it
  bool terminating_ = false;
  bool timed_out_ = false;
  std::int64_t ended_ns_ = 0;  // Ending::end_ns
  int interrupts_ = 0;
  int forwarded_signal_ = 0;
  int stopped_by_ = 0;   // the first signal that told the launcher to stop the job
  int failed_signal_ = 0;  // the signal that killed the rank whose failure is exit_code_
  double deadline_ = 0;    // job timeout (absolute), 0 = none
  double kill_at_ = 0;     // SIGKILL after the grace period, 0 = not pending
  double kill_grace_s_ = 2;
};

}  // namespace jiffy
