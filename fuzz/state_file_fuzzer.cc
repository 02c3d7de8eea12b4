// Fuzzes the daemon's state file decoder (daemon/state_file.h), which a new
// daemon runs on whatever its crashed predecessor (or anyone able to write
// the runtime directory) left behind.
//
// Input: the file's bytes.
//
// Invariants: a decoded state encodes and decodes again to the same state;
// its jobs' slots and GPUs are in range; adopting them as Server::recover
// does, into a real Scheduler on a fake machine, either refuses a job
// without changing anything or takes exactly its slots, and releasing
// everything frees the whole machine.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <string_view>

#include "daemon/state_file.h"
#include "fuzz_util.h"
#include "sched/scheduler.h"
#include "util/error.h"

namespace {

bool same(const jiffy::StoredState& a, const jiffy::StoredState& b) {
  if (a.next_job != b.next_job || a.jobs.size() != b.jobs.size()) return false;
  for (std::size_t i = 0; i < a.jobs.size(); ++i) {
    const jiffy::StoredJob& x = a.jobs[i];
    const jiffy::StoredJob& y = b.jobs[i];
    if (x.grant.id != y.grant.id || x.grant.slots != y.grant.slots || x.grant.gpus != y.grant.gpus ||
        x.grant.exclusive != y.grant.exclusive || x.pid != y.pid || x.pid_start != y.pid_start ||
        x.group.pgid != y.group.pgid ||
        x.group.sid != y.group.sid || x.group.leader_start != y.group.leader_start ||
        x.group.tag != y.group.tag || x.ntasks != y.ntasks || x.command != y.command || x.jobdir != y.jobdir) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  jiffy::StoredState st;
  try {
    st = jiffy::decode_state(text);
  } catch (const jiffy::Error&) {
    return 0;
  } catch (const std::exception&) {
    // A missing "jobs" or "slots" comes out of nlohmann::json::at();
    // StateFile::load catches std::exception, so the daemon only warns.
    return 0;
  }
  FUZZ_CHECK(st.next_job >= 1);
  for (const jiffy::StoredJob& j : st.jobs) {
    FUZZ_CHECK(j.grant.id >= 1 && !j.grant.slots.empty());
    for (const jiffy::SlotRef& s : j.grant.slots) FUZZ_CHECK(s.core >= 0 && s.slot >= 0);
    for (int g : j.grant.gpus) FUZZ_CHECK(g >= 0);
    FUZZ_CHECK(j.pid >= 0 && j.group.pgid >= 0 && j.group.sid >= 0 && j.ntasks >= 0);
  }
  std::string again = jiffy::encode_state(st);
  FUZZ_CHECK(!again.empty() && again.back() == '\n');
  FUZZ_CHECK(same(jiffy::decode_state(again), st));

  jiffy::ResourceSet rs = jiffy::fuzz::machine();
  jiffy::Scheduler sched(rs, jiffy::SchedPolicy{});
  for (const jiffy::StoredJob& j : st.jobs) {
    int free_before = sched.free_slots();
    try {
      sched.adopt(j.grant);
    } catch (const jiffy::Error&) {
      FUZZ_CHECK(sched.free_slots() == free_before);
      continue;
    }
    FUZZ_CHECK(sched.free_slots() == free_before - static_cast<int>(j.grant.slots.size()));
    for (const jiffy::SlotRef& s : j.grant.slots) FUZZ_CHECK(sched.slot_holder(s) == j.grant.id);
  }
  for (const jiffy::StoredJob& j : st.jobs) sched.release(j.grant.id);
  FUZZ_CHECK(sched.running() == 0);
  FUZZ_CHECK(sched.free_slots() == rs.total_slots());
  FUZZ_CHECK(sched.free_gpus() == static_cast<int>(rs.gpus.size()));
  return 0;
}
