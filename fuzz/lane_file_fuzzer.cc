// Fuzzes the lane file as the daemon reads it (daemon/lane.h): anyone who
// can open <key>.lane can write anything into it, cut it short or grow it,
// and the daemon must neither crash nor trust what it reads.
//
// Input: byte 0 picks how the file is made, the rest is its content:
//   mode 0  the bytes are the whole file a daemon starts on (kept or remade);
//   mode 1  a good file (as a daemon made it) with the bytes laid over its
//           records, before the daemon starts on it (the file is kept);
//   mode 2  the same overlay written while the daemon runs on the file;
//   mode 3  as 2, then the file is cut to a length the next two bytes give
//           (an access beyond its end is a SIGBUS the Lane must catch).
//
// Drives: the constructor, hold_daemon_byte, verify, job_at and record_at
// of every slot, take/lend/held_by_other, clear_job, and the id functions.
// Invariants: a whole record names slots inside the lane that hold it, its
// tag is hex, its command printable; job ids only grow and are never 0;
// once verify() fails, the lane stays unusable.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "daemon/lane.h"
#include "fuzz_util.h"
#include "proto/lane.h"

namespace {

void quiet(const std::string&, void*) {}

const std::string& lane_path() {
  static const std::string path = [] {
    char tmpl[] = "/tmp/jiffy-lane-fuzz-XXXXXX";
    if (!::mkdtemp(tmpl)) __builtin_trap();
    return std::string(tmpl) + "/k.lane";
  }();
  return path;
}

void write_file(const uint8_t* data, std::size_t size, off_t at, bool truncate) {
  int fd = ::open(lane_path().c_str(), O_RDWR | O_CREAT | (truncate ? O_TRUNC : 0) | O_CLOEXEC, 0600);
  if (fd < 0) __builtin_trap();
  if (size) (void)!::pwrite(fd, data, size, at);
  ::close(fd);
}

void check_records(jiffy::Lane& lane) {
  for (int u = 0; u < lane.size(); ++u) {
    std::optional<jiffy::LaneJob> r = lane.record_at(u);
    std::optional<jiffy::LaneJob> j = lane.job_at(u);
    FUZZ_CHECK(!j || (r && r->whole));
    if (!r) continue;
    FUZZ_CHECK(r->job != 0);
    FUZZ_CHECK(r->tag.empty() || (r->tag.size() >= 16 && r->tag.size() <= 64 &&
                                  r->tag.find_first_not_of("0123456789abcdef") == std::string::npos));
    for (char c : r->command) FUZZ_CHECK(c >= 0x20 && c <= 0x7e);
    FUZZ_CHECK(r->command.size() <= sizeof(jiffy_lane_job{}.command));
    if (r->whole) {
      FUZZ_CHECK(r->first >= 0 && r->count >= 1 && r->first + r->count <= lane.size());
      FUZZ_CHECK(u >= r->first && u < r->first + r->count);
      FUZZ_CHECK(!r->tag.empty() && r->pid > 0);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const int mode = data[0] & 3;
  ++data;
  --size;
  const jiffy::ResourceSet set = jiffy::fuzz::machine();
  ::unlink(lane_path().c_str());
  if (mode == 0) {
    write_file(data, size, 0, true);
  } else {
    jiffy::Lane made(lane_path(), set, 1, quiet, nullptr);  // a good file
    FUZZ_CHECK(made.usable());
  }
  const off_t records = static_cast<off_t>(sizeof(jiffy_lane_header) +
                                           static_cast<std::size_t>(set.total_slots()) * sizeof(jiffy_lane_slot));
  if (mode == 1) write_file(data, size, records, false);
  std::size_t cut = 0;
  if (mode == 3 && size >= 2) {
    cut = (static_cast<std::size_t>(data[0]) << 8 | data[1]) % 4096;
    data += 2;
    size -= 2;
  }

  jiffy::Lane lane(lane_path(), set, 5, quiet, nullptr);
  lane.hold_daemon_byte();
  if (mode >= 2) write_file(data, size, 8, false);
  if (mode == 3) (void)!::truncate(lane_path().c_str(), static_cast<off_t>(cut));

  jiffy::JobId last = 0;
  for (int round = 0; round < 2; ++round) {
    bool sane = lane.verify(round == 1);
    FUZZ_CHECK(!sane || lane.usable());
    check_records(lane);
    jiffy::JobId id = lane.new_job_id();
    FUZZ_CHECK(id != 0 && id > last);
    last = id;
    FUZZ_CHECK(lane.peek_next_job() > id);
    for (int u = 0; u < lane.size(); ++u) {
      if (std::optional<jiffy::LaneJob> r = lane.record_at(u)) lane.clear_job(u, r->job);
      if (lane.usable()) {
        lane.lend(u);
        FUZZ_CHECK(lane.take(u));
      }
    }
    lane.raise_next_job(last + 1);
    lane.resync();
    if (!sane) FUZZ_CHECK(!lane.usable() && !lane.verify(true));
  }
  return 0;
}
