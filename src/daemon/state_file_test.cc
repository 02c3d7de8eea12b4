#include "daemon/state_file.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "util/error.h"

namespace jiffy {
namespace {

std::string record(const std::string& next_job, const std::string& job, const std::string& slots,
                   const std::string& tag) {
  return R"({"v":1,"next_job":)" + next_job + R"(,"jobs":[{"job":)" + job + R"(,"slots":)" + slots +
         R"(,"gpus":[],"exclusive":false,"pid":1,"pid_start":1,"pgid":0,"sid":0,"leader_start":0,"tag":")" +
         tag + R"(","ntasks":1,"command":"x"}]})" + "\n";
}

TEST(StateFileDecode, AcceptsWhatItWrites) {
  StoredState s = decode_state(record("8", "7", "[[1,0]]", "0123456789abcdef"));
  EXPECT_EQ(s.next_job, 8u);
  ASSERT_EQ(s.jobs.size(), 1u);
  EXPECT_EQ(s.jobs[0].grant.id, 7u);
  EXPECT_EQ(s.jobs[0].grant.slots, (std::vector<SlotRef>{{1, 0}}));
  EXPECT_EQ(decode_state(encode_state(s)).jobs[0].group.tag, "0123456789abcdef");
}

// Ids at or beyond the stand-ins for lent slots, numbers that would be
// truncated into small ones, tags that are not tags: the whole file is
// refused (never half-trusted).
TEST(StateFileDecode, RefusesOutOfRangeIdsSlotsAndTags) {
  const std::string huge = std::to_string(JobId(1) << 60);
  EXPECT_THROW(decode_state(record("8", huge, "[[1,0]]", "")), Error);
  EXPECT_THROW(decode_state(record(huge, "7", "[[1,0]]", "")), Error);
  EXPECT_THROW(decode_state(record("8", std::to_string(kMaxJobId + 1), "[[1,0]]", "")), Error);
  EXPECT_NO_THROW(decode_state(record(std::to_string(kMaxJobId + 1), "7", "[[1,0]]", "")));
  EXPECT_THROW(decode_state(record("8", "7", "[[4294967296,0]]", "")), Error);
  EXPECT_THROW(decode_state(record("8", "7", "[[0,4294967296]]", "")), Error);
  EXPECT_THROW(decode_state(record("8", "7", "[]", "")), Error);
  EXPECT_THROW(decode_state(record("8", "7", "[[1,0]]", "not-a-tag-at-all")), Error);
  EXPECT_THROW(decode_state(record("8", "7", "[[1,0]]", "0123456789ABCDEF")), Error);
}

// A spawn's cores name their parent job; a file from before spawns has no
// "parent" (a launch), and one out of range is refused like any id.
TEST(StateFileDecode, KeepsASpawnsParent) {
  EXPECT_EQ(decode_state(record("8", "7", "[[1,0]]", "")).jobs[0].parent, 0u);
  StoredState s = decode_state(record("8", "7", "[[1,0]]", ""));
  s.jobs[0].parent = 5;
  EXPECT_EQ(decode_state(encode_state(s)).jobs[0].parent, 5u);
  auto with_parent = [](const std::string& parent) {
    std::string r = record("8", "7", "[[1,0]]", "");
    return r.insert(r.find(R"("ntasks")"), R"("parent":)" + parent + ",");
  };
  EXPECT_EQ(decode_state(with_parent("3")).jobs[0].parent, 3u);
  EXPECT_THROW(decode_state(with_parent(std::to_string(kMaxJobId + 1))), Error);
  EXPECT_THROW(decode_state(with_parent("-1")), Error);
  EXPECT_THROW(decode_state(with_parent("7")), Error);  // its own parent
}

class StateFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/jfstate-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/k.state";
  }
  void TearDown() override {
    ::unlink(path_.c_str());
    ::unlink((dir_ + "/elsewhere").c_str());
    ::rmdir(dir_.c_str());
  }
  void write_file(const std::string& path, const std::string& text, mode_t mode) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, mode);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
    ::fchmod(fd, mode);
    ::close(fd);
  }
  std::string dir_, path_;
};

TEST_F(StateFileTest, LoadsOnlyARegularFileOfOursWithMode0600) {
  const std::string text = record("8", "7", "[[1,0]]", "");
  write_file(path_, text, 0600);
  EXPECT_EQ(StateFile(path_).load().jobs.size(), 1u);
  ::chmod(path_.c_str(), 0644);
  EXPECT_TRUE(StateFile(path_).load().jobs.empty());
  ::unlink(path_.c_str());
  write_file(dir_ + "/elsewhere", text, 0600);
  ASSERT_EQ(::symlink((dir_ + "/elsewhere").c_str(), path_.c_str()), 0);
  EXPECT_TRUE(StateFile(path_).load().jobs.empty());
}

// A FIFO would block open() for good (no writer ever comes): it is opened
// without blocking, refused, and replaced by the first save.
TEST_F(StateFileTest, FifoIsIgnoredWithoutBlockingAndReplaced) {
  ASSERT_EQ(::mkfifo(path_.c_str(), 0600), 0);
  StateFile f(path_);
  EXPECT_TRUE(f.load().jobs.empty());
  StoredState s;
  s.next_job = 3;
  EXPECT_TRUE(f.save(s));
  struct stat st;
  ASSERT_EQ(::lstat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(StateFile(path_).load().next_job, 3u);
}

}  // namespace
}  // namespace jiffy
