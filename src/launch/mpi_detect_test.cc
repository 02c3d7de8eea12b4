#include "launch/mpi_detect.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

namespace jiffy {
namespace {

std::string write_script(const std::string& name, const std::string& text) {
  std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << text;
  ::chmod(path.c_str(), 0755);
  return path;
}

TEST(DetectMpi, PlainProgramIsNone) { EXPECT_EQ(detect_mpi("/bin/true"), MpiKind::None); }

TEST(DetectMpi, ShellScriptIsNone) {
  EXPECT_EQ(detect_mpi(write_script("s.sh", "#!/bin/sh\necho hi\n")), MpiKind::None);
}

TEST(DetectMpi, PythonScriptIsUnknown) {
  EXPECT_EQ(detect_mpi(write_script("p.py", "#!/usr/bin/env python3\nprint(1)\n")),
            MpiKind::Unknown);
}

TEST(DetectMpi, MissingOrGarbageFileIsNone) {
  EXPECT_EQ(detect_mpi("/nonexistent/prog"), MpiKind::None);
  EXPECT_EQ(detect_mpi(write_script("g.bin", std::string("\x7f" "ELF garbage", 11))), MpiKind::None);
}

}  // namespace
}  // namespace jiffy
