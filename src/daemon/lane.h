// Lane: the daemon's side of the lane file (proto/lane.h), the slots it
// lends to launchers while nothing is queued.
//
// The daemon holds the lock of every lane slot it has not lent, and grants
// only slots it holds. lend() lets go of a slot; take() gets it back, which
// fails while a launcher (or a rank of its job) holds it. The Server keeps
// the bookkeeping: a lent slot is held in the Scheduler by a stand-in job
// (lent_id), so nothing is granted on it until it is taken back.
//
// When the file cannot be used (another daemon's file that launchers still
// hold, no OFD locks, a full disk) the lane stays closed: every slot is the
// daemon's and launchers ask as before. Job ids still come from here.
//
// Anyone who can open the file can rewrite or truncate it. Nothing read
// from it is trusted: a record is copied once into local memory and checked
// there (record_at), and verify() checks the header, the counter and the
// table. An access beyond the file's end (it was cut short) is a SIGBUS,
// which a handler turns into "the lane is damaged" (see lane.cc for why the
// file stays mapped). A damaged file is given up for good (shut): the
// daemon logs once, stops lending, keeps the locks it has (slots still lent
// come back once their launchers let go) and every launch asks.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/resources.h"
#include "sched/request.h"
#include "util/fd.h"

struct jiffy_lane_header;
struct jiffy_lane_slot;
struct jiffy_lane_job;

namespace jiffy {

// A job a launcher runs on lane slots, as its records say (proto/lane.h).
struct LaneJob {
  JobId job = 0;
  int pid = 0;
  int pgid = 0;
  int first = 0;
  int count = 0;
  double claimed_s = 0;  // CLOCK_BOOTTIME
  std::string tag;       // empty unless 16 to 64 hex digits (a tag of ours)
  std::string command;   // printable ASCII only
  bool whole = false;    // names slots [first, first + count) of the lane, u among them
};

class Lane {
 public:
  // Stand-in job ids for lent slots: above kMaxJobId, so that no id a
  // client or a file supplies (all checked against it) can name one.
  static constexpr JobId kLentBase = JobId(1) << 60;
  static_assert(kLentBase > kMaxJobId);
  static JobId lent_id(int u) { return kLentBase + static_cast<JobId>(u); }
  static bool is_lent_id(JobId id) { return id >= kLentBase; }

  // Opens or makes the lane file at path for the slots of set (core-major),
  // closes the lane and takes every slot it can. A file left by a
  // predecessor is kept when it describes the same slots: launchers may
  // still hold some of them, which held_elsewhere() then reports. The lane
  // opens to launchers only once hold_daemon_byte() is done. warn receives
  // one-line warnings.
  Lane(const std::string& path, const ResourceSet& set, JobId next_job,
       void (*warn)(const std::string&, void*), void* warn_arg);
  ~Lane();
  Lane(const Lane&) = delete;
  Lane& operator=(const Lane&) = delete;

  bool usable() const { return usable_; }
  int size() const { return static_cast<int>(slots_.size()); }
  SlotRef slot(int u) const { return slots_[static_cast<std::size_t>(u)]; }
  // The lane index of a slot, -1 when it is not one (the lane is unusable).
  int index(SlotRef s) const;
  // Slots the constructor could not take.
  const std::vector<int>& held_elsewhere() const { return elsewhere_; }
  // Marks the daemon alive for launchers (JIFFY_LANE_DAEMON_BYTE). Call once
  // every slot the daemon may grant is held. false: the lane stays off.
  bool hold_daemon_byte();
  // The job slot u's holder wrote, if the record is whole and names one.
  std::optional<LaneJob> job_at(int u) const;
  // The record on slot u if it names a job (job != 0), whole or not: on a
  // slot nobody holds, the proof that a dead launcher's job may still have
  // processes (proto/lane.h). Copied once; every field checked in the copy.
  std::optional<LaneJob> record_at(int u) const;
  // Clears slot u's record if it still names job.
  void clear_job(int u, JobId job);

  // Lets go of slot u. REQUIRES: the daemon holds it.
  void lend(int u);
  // Takes slot u back; false while someone else holds it.
  bool take(int u);
  // Whether another open file (a launcher, a rank) holds slot u's lock.
  bool held_by_other(int u) const;
  // Whether launchers may take lent slots.
  void set_open(bool open);

  // Whether the file is still as made: not cut short, header and job-id
  // counter sane (the counter moved forward, by less than kIdMargin, since
  // the last look); full: the slot table too. When not, the lane is shut
  // (see above) and false returned; false too once shut or never usable.
  bool verify(bool full);
  // Takes the counter as it is now as sane (after the daemon raised it).
  void resync();
  // Whether the lane was shut because its file was damaged.
  bool damaged() const { return damaged_; }
  // How far launchers may move the counter between two looks; after a
  // shut, ids go on this far above the last sane value.
  static constexpr JobId kIdMargin = JobId(1) << 20;

  // Job ids, shared with launchers (the counter is in the file, where
  // launchers increment it). Always in [1, kMaxJobId]: a counter found out
  // of range (a corrupted file) is put back just above the highest id this
  // daemon knows, with one warning. new_job_id throws Error once every id
  // is used. REQUIRES for raise_next_job: at_least <= kMaxJobId + 1.
  JobId new_job_id();
  JobId peek_next_job();
  void raise_next_job(JobId at_least);

 private:
  bool lock(long u, short type);
  JobId repair_next_job();
  void shut(const std::string& why);

  std::vector<SlotRef> slots_;
  std::vector<std::vector<int>> slot_index_;  // [core][slot] -> u
  Fd fd_;
  jiffy_lane_header* header_ = nullptr;  // the file's, or local_ when unusable
  jiffy_lane_job* jobs_ = nullptr;  // the records, in the file
  std::size_t map_size_ = 0;
  bool usable_ = false;
  std::vector<int> elsewhere_;
  std::vector<unsigned char> local_;
  std::vector<jiffy_lane_slot> table_;  // as written into the file
  std::string path_;
  void (*warn_)(const std::string&, void*);
  void* warn_arg_;
  JobId known_next_ = 1;  // above every id handed out or raised to
  bool warned_ids_ = false;
  int guard_ = -1;     // our entry in lane.cc's SIGBUS guard
  JobId seen_ = 0;     // the counter at the last look
  bool damaged_ = false;
};

}  // namespace jiffy
