#include "util/process.h"

#include <sys/prctl.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace jiffy {
namespace {

TEST(ProcStat, OwnProcess) {
  auto st = read_proc_stat(::getpid());
  ASSERT_TRUE(st);
  EXPECT_EQ(st->state, 'R');
  EXPECT_EQ(st->ppid, ::getppid());
  EXPECT_EQ(st->pgrp, ::getpgrp());
  EXPECT_EQ(st->session, ::getsid(0));
  EXPECT_GT(st->start, 0u);
  EXPECT_EQ(process_start_time(::getpid()), st->start);
  EXPECT_TRUE(process_alive(::getpid(), st->start));
  EXPECT_FALSE(process_alive(::getpid(), st->start + 1));
}

TEST(ProcStat, CommandNameWithSpacesAndParentheses) {
  char old[17] = {};
  ::prctl(PR_GET_NAME, old);
  ::prctl(PR_SET_NAME, "a) b ( c) 1 2 3");
  auto st = read_proc_stat(::getpid());
  ::prctl(PR_SET_NAME, old);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->ppid, ::getppid());
  EXPECT_EQ(st->session, ::getsid(0));
}

TEST(ProcStat, NoSuchProcess) {
  EXPECT_FALSE(read_proc_stat(0));
  EXPECT_FALSE(read_proc_stat(-5));
  EXPECT_FALSE(read_proc_stat(0x3fffffff));
}

}  // namespace
}  // namespace jiffy
