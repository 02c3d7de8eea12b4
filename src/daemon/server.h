// Server: the daemon's event loop. One thread, epoll over the listening
// socket, the clients and a signalfd; the scheduler decides, the server only
// moves messages and enforces the lifecycle (daemon/job_state.h).
//
// A client connection is one launcher's request for its whole life: closing
// it (normally, by crash or SIGKILL) cancels a queued request or, for a
// granted one without "finished", kills the job's process group and then
// releases its resources. Bad input from one client (oversized or malformed
// frames, wrong uid) drops that client only; the daemon never exits because
// of a client.
#pragma once

#include <map>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "core/resources.h"
#include "daemon/history_writer.h"
#include "daemon/forwarded.h"
#include "daemon/lane.h"
#include "daemon/rendezvous.h"
#include "daemon/run_times.h"
#include "daemon/state_file.h"
#include "daemon/tags.h"
#include "proto/message.h"
#include "sched/layout.h"
#include "sched/scheduler.h"
#include "util/fd.h"
#include "util/process.h"
#include "util/runtime_dir.h"

namespace jiffy {

struct ServerConfig {
  ResourceSet resources;
  SchedPolicy policy;
  double idle_timeout_s = 60;  // exit after this long with no client; 0 = never
  DaemonPaths paths;
  bool log_to_stderr = true;
  // The predecessor died without cleaning up (its socket file was left):
  // hold grants a moment for launchers to re-attach, even if its state file
  // says nothing (it may have been unwritable).
  bool unclean_start = false;
  // The lifetime lock (daemon/rendezvous.h), held for our whole life: its
  // name's probes are accepted and closed; its file is taken anew when the
  // runtime directory is re-made.
  LifetimeLock lock;
  // The history thread (daemon/history_writer.h), or none (tests, fuzzers):
  // then `history` is answered at once, saying so.
  std::unique_ptr<HistoryService> history;
  // Runs a command detached (util/process.h: spawn_detached): how the step
  // of a forwarded launch whose launcher vanished is cancelled (scancel).
  // Fuzzers and tests replace it: they must not run Slurm's commands.
  std::function<bool(const std::vector<std::string>&)> run_detached = spawn_detached;
};

class Server {
 public:
  // REQUIRES: listener is a bound, listening, non-blocking Unix socket.
  Server(ServerConfig config, Fd listener);
  ~Server();
  // Serves until stopped (jiffy stop, SIGTERM/SIGINT/SIGHUP, or idle timeout).
  void run();

 private:
  struct Client;
  // A job whose launcher vanished: its process group was SIGKILLed and its
  // resources are held until the group is empty (or give_up_at passes).
  struct LostJob {
    StoredJob job;  // what it holds, for the state file
    double give_up_at = 0;
    bool lane = false;  // its slots are the lane's: the locks tell when they are free
    history::Row row;   // its history row (LOST), stored once the group is empty
  };

  void accept_clients();
  void on_readable(Client& c);
  void on_writable(Client& c);
  void dispatch(Client& c, const proto::Json& msg);
  void handle_submit(Client& c, const proto::Json& msg);
  void adopt_parent(Client& c, const proto::Json& msg, Request& r);
  void handle_preparing(Client& c, const proto::Json& msg);
  void handle_started(Client& c, const proto::Json& msg);
  void handle_finished(Client& c, const proto::Json& msg);
  void handle_status(Client& c, const proto::Json& msg);
  void handle_stop(Client& c, const proto::Json& msg);
  void handle_reattach(Client& c, const proto::Json& msg);
  void handle_lane(Client& c, const proto::Json& msg);
  void handle_history(Client& c, const proto::Json& msg);
  void history_done();
  proto::Json history_state() const;
  history::Row history_row(const Client& c, int outcome, const char* reason) const;
  history::Row history_row(const StoredJob& job) const;
  void record_lane_lost(const LaneJob& job);
  void record(history::Row row);
  bool launcher_lives_on(const Client& c) const;
  std::vector<int> lane_held(const Grant& g, pid_t launcher) const;
  void claim(Client& c, JobId job, const std::vector<int>& units);
  void unclaim(Client& c, bool clear_records = true);
  void lend_free();
  void take_back();
  void open_lane();
  std::map<JobId, LaneJob> lane_jobs() const;
  bool lane_busy() const;
  void check_lane_jobs();
  void kill_tagged(const std::string& tag, JobId job);
  bool tag_free_for(const std::string& tag, JobId job) const;
  void claim_tag(const std::string& tag, JobId job);
  bool clean_slot(int u);
  bool return_slot(int u);
  void check_stale();
  void lane_verify(bool full);
  bool lent(int u) const;
  bool lent_unclaimed(int u) const;
  void attach(Client& c, const StoredJob& job);
  void recover();
  void check_detached();
  void maybe_end_recovery();
  void lose(const StoredJob& job, bool lane = false, std::optional<history::Row> row = std::nullopt);
  void finish_lost(const StoredJob& job, history::Row row);
  void forget_taken_family_tag(StoredJob& job) const;
  void persist();
  void heal();
  void pause_accepting();
  StoredJob stored(const Client& c) const;
  void send(Client& c, const proto::Json& msg);
  void shed_output(Client& c);
  void forget_output(Client& c);
  bool flush(Client& c);
  void watch(Client& c, bool writable);
  void drop(Client& c, const std::string& why);
  void client_gone(Client& c);
  void handle_forward(Client& c, const proto::Json& msg);
  void reap_lost_jobs();
  void schedule_pass();
  void send_positions();
  proto::Json status_json() const;
  void log(const std::string& line) const;
  double next_wakeup_ms() const;

  ServerConfig config_;
  Scheduler sched_;
  Fd listener_;
  Fd epoll_;
  Fd signals_;
  std::map<int, std::unique_ptr<Client>> clients_;  // by fd
  std::map<JobId, Client*> jobs_;                   // submitted and not yet released
  std::map<JobId, LostJob> lost_;                   // killed, waiting for the group to empty
  // Jobs a crashed predecessor granted whose launchers live but have not
  // re-attached yet: their resources stay held.
  std::map<JobId, StoredJob> detached_;
  // The tags of the jobs above (jobs_, lost_, detached_): each one job's.
  TagRegistry tags_;
  // While recovering, nothing is granted: submits wait here, to be queued
  // in their original order once every surviving job is back.
  bool recovering_ = false;
  JobId predecessor_next_job_ = 0;  // ids below it were handed out before we started
  double recovery_deadline_ = 0;
  double recovery_hold_until_ = 0;  // after an unclean start, wait at least this long
  std::vector<Client*> parked_;
  double next_liveness_check_ = 0;
  StateFile state_file_;
  // Run times of earlier launches, from the history thread: each request's
  // prediction (Request::predicted_s), which backfill needs.
  RunTimes run_times_;
  // Slots lent to launchers (daemon/lane.h): slot u is lent while the
  // Scheduler holds it for the stand-in Lane::lent_id(u); claim_[u] is the
  // job a connected launcher said it runs there.
  Lane lane_;
  std::vector<JobId> claim_;
  // Launches forwarded to Slurm: listed, never scheduled (daemon/forwarded.h).
  Forwarded forwarded_;
  bool lane_retry_ = false;  // a slot wanted back is still held: try again soon
  double next_lane_check_ = 0;
  std::map<JobId, double> lane_orphans_;  // lane jobs whose launcher died: last killed at
  // Per lane slot: the job named by a record its dead launcher left there.
  // We hold the slot (it stays lent in the Scheduler) until nothing of that
  // job runs; then the record is cleared and the slot goes back.
  std::vector<JobId> stale_;
  std::map<JobId, LaneJob> stale_jobs_;  // their records, for status
  double next_stale_check_ = 0;
  // Identity of the socket file we listen on, to notice it removed or replaced.
  unsigned long socket_dev_ = 0, socket_ino_ = 0;
  double next_heal_check_ = 0;
  std::size_t pending_out_ = 0;     // bytes in every client's `out`
  bool positions_due_ = false;      // the queue moved since positions were last sent
  double next_positions_at_ = 0;
  double accept_paused_until_ = 0;  // out of descriptors: stop accepting a while
  std::uint64_t next_serial_ = 0;  // Client::serial: which client a history reply is for
  double started_at_;
  double idle_since_;
  bool stopping_ = false;
};

}  // namespace jiffy
