#include "daemon/lane.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "proto/lane.h"

namespace jiffy {
namespace {

// A lane file in a fresh directory, and a stand-in for a launcher: another
// open file description of it (OFD locks conflict between descriptions,
// also within one process, which is what these tests rely on).
class LaneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/jflane-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/k.lane";
  }
  void TearDown() override {
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }

  static ResourceSet cores(int n, int slots = 1) {
    ResourceSet set;
    for (int i = 0; i < n; ++i) set.cores.push_back(Core{0, {i, i + n}, slots});
    return set;
  }
  static void quiet(const std::string&, void*) {}

  // The launcher's side: lock [first, first+count), as src/front/lane.c does.
  bool launcher_takes(int fd, int first, int count) {
    struct flock fl{};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = first;
    fl.l_len = count;
    return ::fcntl(fd, F_OFD_SETLK, &fl) == 0;
  }
  int launcher_opens() { return ::open(path_.c_str(), O_RDWR | O_CLOEXEC); }

  std::string dir_, path_;
};

TEST_F(LaneTest, TableDescribesEachSlotAsAGrantWould) {
  Lane lane(path_, cores(2, 2), 7, quiet, nullptr);
  ASSERT_TRUE(lane.usable());
  ASSERT_EQ(lane.size(), 4);  // core-major: (0,0) (0,1) (1,0) (1,1)
  EXPECT_EQ(lane.slot(2).core, 1);
  EXPECT_EQ(lane.slot(2).slot, 0);
  EXPECT_EQ(lane.index(SlotRef{1, 1}), 3);
  EXPECT_EQ(lane.index(SlotRef{2, 0}), -1);
  int fd = launcher_opens();
  struct stat st;
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  void* map = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
  ASSERT_NE(map, MAP_FAILED);
  auto* h = static_cast<jiffy_lane_header*>(map);
  auto* t = reinterpret_cast<jiffy_lane_slot*>(h + 1);
  EXPECT_EQ(h->magic, JIFFY_LANE_MAGIC);
  EXPECT_EQ(h->nslots, 4u);
  EXPECT_EQ(h->open, 0u);  // closed until the daemon lends
  EXPECT_EQ(h->next_job, 7u);
  EXPECT_EQ(t[3].core, 1);
  ASSERT_EQ(t[3].ncpus, 2);  // bound to the whole core: both its threads
  EXPECT_EQ(t[3].cpus[0], 1);
  EXPECT_EQ(t[3].cpus[1], 3);
  ::munmap(map, static_cast<std::size_t>(st.st_size));
  ::close(fd);
}

TEST_F(LaneTest, OnlyLentSlotsCanBeTakenAndTakenOnesNotTakenBack) {
  Lane lane(path_, cores(3), 1, quiet, nullptr);
  int fd = launcher_opens();
  EXPECT_FALSE(launcher_takes(fd, 0, 1));  // the daemon holds every slot at first
  lane.lend(0);
  lane.lend(1);
  EXPECT_TRUE(launcher_takes(fd, 0, 2));
  EXPECT_TRUE(lane.held_by_other(0));
  EXPECT_FALSE(lane.take(1));  // the launcher has it
  EXPECT_FALSE(lane.held_by_other(2));
  ::close(fd);  // the launcher (and its ranks) gone: the locks go with it
  EXPECT_FALSE(lane.held_by_other(0));
  EXPECT_TRUE(lane.take(0));
  EXPECT_TRUE(lane.take(1));
}

TEST_F(LaneTest, JobIdsAreSharedWithLaunchers) {
  Lane lane(path_, cores(1), 5, quiet, nullptr);
  EXPECT_EQ(lane.new_job_id(), 5u);
  int fd = launcher_opens();
  void* map = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(map, MAP_FAILED);
  auto* h = static_cast<jiffy_lane_header*>(map);
  EXPECT_EQ(__atomic_fetch_add(&h->next_job, 1, __ATOMIC_SEQ_CST), 6u);  // a launcher takes 6
  EXPECT_EQ(lane.new_job_id(), 7u);
  lane.raise_next_job(100);
  lane.raise_next_job(50);  // never lowered
  EXPECT_EQ(lane.peek_next_job(), 100u);
  ::munmap(map, 4096);
  ::close(fd);
}

// A counter a stray writer (or a corrupted file) put at or beyond the
// stand-in ids must never hand out such an id: it goes on just above the
// highest id the daemon knows, with one warning.
TEST_F(LaneTest, CorruptJobCounterRecoversAboveKnownIds) {
  int warnings = 0;
  auto count = [](const std::string&, void* n) { ++*static_cast<int*>(n); };
  Lane lane(path_, cores(1), 5, count, &warnings);
  ASSERT_TRUE(lane.usable());
  EXPECT_EQ(lane.new_job_id(), 5u);
  lane.raise_next_job(40);
  int fd = launcher_opens();
  void* map = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(map, MAP_FAILED);
  auto* h = static_cast<jiffy_lane_header*>(map);
  for (JobId bad : {Lane::kLentBase - 1, kMaxJobId + 1, ~JobId{0}}) {
    __atomic_store_n(&h->next_job, bad, __ATOMIC_SEQ_CST);
    JobId id = lane.new_job_id();
    EXPECT_TRUE(valid_job_id(id)) << id;
    EXPECT_GE(id, 40u);
    EXPECT_LE(id, 45u);
    __atomic_store_n(&h->next_job, bad, __ATOMIC_SEQ_CST);
    EXPECT_TRUE(valid_job_id(lane.peek_next_job()));
  }
  EXPECT_EQ(warnings, 1);
  EXPECT_GT(lane.new_job_id(), 40u);  // no id twice
  ::munmap(map, 4096);
  ::close(fd);
}

TEST_F(LaneTest, RecordsAreReadWholeOrNotAtAll) {
  Lane lane(path_, cores(2), 1, quiet, nullptr);
  int fd = launcher_opens();
  struct stat st;
  ASSERT_EQ(::fstat(fd, &st), 0);
  void* map = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(map, MAP_FAILED);
  auto* h = static_cast<jiffy_lane_header*>(map);
  auto* r = reinterpret_cast<jiffy_lane_job*>(reinterpret_cast<char*>(h + 1) + 2 * sizeof(jiffy_lane_slot));
  EXPECT_FALSE(lane.job_at(1));
  r[1].pid = 1234;
  r[1].first = 0;
  r[1].count = 2;
  r[1].claimed_ns = 2'500'000'000;
  std::strcpy(r[1].tag, "0123456789abcdef0123456789abcdef");
  std::strcpy(r[1].command, "sleep 1");
  EXPECT_FALSE(lane.job_at(1));  // job 0: none (or not written yet)
  r[1].job = 42;
  std::optional<LaneJob> j = lane.job_at(1);
  ASSERT_TRUE(j);
  EXPECT_EQ(j->job, 42u);
  EXPECT_EQ(j->pid, 1234);
  EXPECT_EQ(j->count, 2);
  EXPECT_DOUBLE_EQ(j->claimed_s, 2.5);
  EXPECT_EQ(j->tag, "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(j->command, "sleep 1");
  lane.clear_job(1, 41);  // not the job this record names: left alone
  EXPECT_TRUE(lane.job_at(1));
  lane.clear_job(1, 42);
  EXPECT_FALSE(lane.job_at(1));
  r[1].job = 42;
  r[1].first = 1;  // claims slots [1, 3) of a 2-slot lane: nonsense
  EXPECT_FALSE(lane.job_at(1));
  ::munmap(map, static_cast<std::size_t>(st.st_size));
  ::close(fd);
}

TEST_F(LaneTest, ASuccessorKeepsTheFileAndFindsWhatLaunchersHold) {
  int fd = -1;
  {
    Lane first(path_, cores(2), 1, quiet, nullptr);
    ASSERT_TRUE(first.hold_daemon_byte());
    first.lend(1);
    fd = launcher_opens();
    ASSERT_TRUE(launcher_takes(fd, 1, 1));
    first.new_job_id();
  }  // the daemon dies; the launcher's lock stays
  Lane second(path_, cores(2), 1, quiet, nullptr);
  ASSERT_TRUE(second.usable());
  EXPECT_EQ(second.held_elsewhere(), std::vector<int>{1});
  EXPECT_EQ(second.peek_next_job(), 2u);  // ids go on
  EXPECT_TRUE(second.hold_daemon_byte());
  ::close(fd);
  EXPECT_TRUE(second.take(1));
}

TEST_F(LaneTest, AFileOfOtherResourcesIsRemadeOnlyWhenNobodyHoldsIt) {
  int fd = -1;
  {
    Lane first(path_, cores(2), 1, quiet, nullptr);
    first.lend(0);
    fd = launcher_opens();
    ASSERT_TRUE(launcher_takes(fd, 0, 1));
  }
  {
    Lane other(path_, cores(4), 1, quiet, nullptr);
    EXPECT_FALSE(other.usable());  // a launcher still runs on the old layout
    EXPECT_EQ(other.size(), 0);
    EXPECT_GE(other.new_job_id(), 1u);  // ids still come
  }
  ::close(fd);
  Lane other(path_, cores(4), 1, quiet, nullptr);
  EXPECT_TRUE(other.usable());
  EXPECT_EQ(other.size(), 4);
}

TEST_F(LaneTest, TheDaemonByteTellsLaunchersTheDaemonLives) {
  int fd = launcher_opens();
  auto daemon_alive = [&] {
    struct flock fl{};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = JIFFY_LANE_DAEMON_BYTE;
    fl.l_len = 1;
    return ::fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
  };
  {
    Lane lane(path_, cores(1), 1, quiet, nullptr);
    if (fd < 0) fd = launcher_opens();
    EXPECT_FALSE(daemon_alive());  // not before it holds what it may grant
    ASSERT_TRUE(lane.hold_daemon_byte());
    EXPECT_TRUE(daemon_alive());
  }
  EXPECT_FALSE(daemon_alive());
  ::close(fd);
}


TEST_F(LaneTest, AFileCutShortShutsTheLaneAndIdsGoOn) {
  std::string warned;
  auto warn = [](const std::string& line, void* out) { *static_cast<std::string*>(out) += line; };
  Lane lane(path_, cores(2), 1, warn, &warned);
  ASSERT_TRUE(lane.hold_daemon_byte());
  JobId a = lane.new_job_id();
  ASSERT_EQ(::truncate(path_.c_str(), 0), 0);
  EXPECT_FALSE(lane.job_at(0));         // a SIGBUS, caught: reads as nothing
  JobId b = lane.new_job_id();          // and the counter goes on, beyond any taken
  EXPECT_GT(b, a);
  EXPECT_FALSE(lane.verify(false));
  EXPECT_TRUE(lane.damaged());
  EXPECT_FALSE(lane.usable());
  EXPECT_NE(warned.find("cut short"), std::string::npos) << warned;
  EXPECT_GT(lane.new_job_id(), b);
  EXPECT_EQ(lane.size(), 2);  // the locks stay: lent slots come back
  EXPECT_TRUE(lane.take(0));
}

TEST_F(LaneTest, AnOverwrittenHeaderCounterOrTableShutsTheLane) {
  for (int what = 0; what < 3; ++what) {
    std::string warned;
    auto warn = [](const std::string& line, void* out) { *static_cast<std::string*>(out) += line; };
    Lane lane(path_, cores(2), 1, warn, &warned);
    JobId a = lane.new_job_id();
    EXPECT_TRUE(lane.verify(true));
    int fd = launcher_opens();
    if (what == 0) {
      ASSERT_EQ(::pwrite(fd, "progress\n", 9, 0), 9);
    } else if (what == 1) {
      std::uint64_t big = 7'000'000'000'000'000'000ULL;
      ASSERT_EQ(::pwrite(fd, &big, 8, 16), 8);
    } else {
      ASSERT_EQ(::pwrite(fd, "xx", 2, sizeof(jiffy_lane_header) + 4), 2);
    }
    ::close(fd);
    EXPECT_FALSE(lane.verify(true)) << what;
    EXPECT_TRUE(lane.damaged());
    JobId b = lane.new_job_id();
    EXPECT_GT(b, a);
    EXPECT_LE(b, a + 2 * Lane::kIdMargin);
    ::unlink(path_.c_str());
  }
}

TEST_F(LaneTest, ARecordIsCopiedOnceAndItsFieldsCheckedInTheCopy) {
  Lane lane(path_, cores(2), 1, quiet, nullptr);
  int fd = launcher_opens();
  jiffy_lane_job r;
  std::memset(&r, 'z', sizeof r);  // no NUL anywhere
  r.job = 9;
  r.first = 0;
  r.count = 1;
  r.pid = 5;
  r.pgid = 0;
  r.command[3] = '\n';
  off_t at = sizeof(jiffy_lane_header) + 2 * sizeof(jiffy_lane_slot) + sizeof r;  // slot 1
  ASSERT_EQ(::pwrite(fd, &r, sizeof r, at), static_cast<ssize_t>(sizeof r));
  std::optional<LaneJob> j = lane.record_at(1);
  ASSERT_TRUE(j);
  EXPECT_EQ(j->job, 9u);
  EXPECT_FALSE(j->whole);       // names slot 0 only; and no tag of ours
  EXPECT_TRUE(j->tag.empty());  // 'z' is no hex digit
  EXPECT_EQ(j->command.size(), sizeof r.command);
  EXPECT_EQ(j->command[3], '?');
  EXPECT_FALSE(lane.job_at(1));
  ::close(fd);
}
}  // namespace
}  // namespace jiffy
