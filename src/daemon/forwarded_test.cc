#include "daemon/forwarded.h"

#include <gtest/gtest.h>

#include "util/error.h"

namespace jiffy {
namespace {

using Words = std::vector<std::string>;

proto::Json forward(bool own_job, const std::string& conf = "") {
  return {{"type", "forward"}, {"v", 1},           {"backend", "slurm"}, {"pid", 42},
          {"ntasks", 4},       {"command", "./a"}, {"step_name", "jiffy-0123abcd"},
          {"own_job", own_job}, {"slurm_conf", conf}};
}

proto::Json step(const std::string& id) { return {{"type", "step"}, {"step", id}, {"nodes", "n[1-2]"}}; }

TEST(Forwarded, StatusListsTheStepAndItsNodes) {
  Forwarded f;
  f.add(7, 3, forward(false), 10.0);
  EXPECT_TRUE(f.has(7));
  f.on_message(7, step("312.4"));
  proto::Json rows = f.status(12.5);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["job"], 3);
  EXPECT_EQ(rows[0]["step"], "312.4");
  EXPECT_EQ(rows[0]["nodes"], "n[1-2]");
  EXPECT_DOUBLE_EQ(rows[0]["age_s"].get<double>(), 2.5);
}

TEST(Forwarded, AFinishedLaunchCancelsNothing) {
  Forwarded f;
  f.add(7, 3, forward(false), 0);
  f.on_message(7, step("312.4"));
  f.on_message(7, {{"type", "finished"}, {"exit_code", 0}});
  EXPECT_TRUE(f.gone(7).empty());
  EXPECT_FALSE(f.has(7));
}

TEST(Forwarded, AVanishedLaunchersStepIsCancelledByIdWithItsConf) {
  Forwarded f;
  f.add(7, 3, forward(false, "/etc/slurm/x.conf"), 0);
  f.on_message(7, step("312.4"));
  EXPECT_EQ(f.gone(7), (Words{"env", "SLURM_CONF=/etc/slurm/x.conf", "sh", "-c",
                              "scancel --quiet \"$1\"", "sh", "312.4"}));
}

TEST(Forwarded, SrunsOwnJobGoesWholeAfterItsStep) {
  Forwarded f;
  f.add(7, 3, forward(true), 0);
  f.on_message(7, step("9.0"));
  Words c = f.gone(7);
  ASSERT_EQ(c.size(), 5u);
  EXPECT_EQ(c[2], "scancel --quiet \"$1\"; scancel --quiet \"${1%%.*}\"");
  EXPECT_EQ(c[4], "9.0");
}

TEST(Forwarded, AStepNeverToldIsFoundByName) {
  Forwarded f;
  f.add(7, 3, forward(true), 0);
  Words c = f.gone(7);
  ASSERT_EQ(c.size(), 5u);
  EXPECT_NE(c[2].find("squeue -h -s --name=\"$1\""), std::string::npos);
  EXPECT_NE(c[2].find("squeue -h --name=\"$1\""), std::string::npos);  // srun's own job
  EXPECT_EQ(c[4], "jiffy-0123abcd");
}

TEST(Forwarded, WhatReachesACommandLineIsChecked) {
  Forwarded f;
  proto::Json bad_name = forward(false);
  bad_name["step_name"] = "-rf";
  EXPECT_THROW(f.add(1, 1, bad_name, 0), Error);
  proto::Json bad_backend = forward(false);
  bad_backend["backend"] = "flux";
  EXPECT_THROW(f.add(1, 1, bad_backend, 0), Error);
  f.add(2, 2, forward(false), 0);
  for (const char* id : {"--all", "1", "1.", ".1", "1.2.3", "a.1", "1;2.0", "1 .0"}) {
    EXPECT_THROW(f.on_message(2, step(id)), Error) << id;
  }
  EXPECT_THROW(f.on_message(2, {{"type", "submit"}}), Error);
  EXPECT_TRUE(is_slurm_step_id("12+1.3"));
  EXPECT_TRUE(is_step_name("jiffy-00ff"));
  EXPECT_FALSE(is_step_name("jiffy-"));
  EXPECT_FALSE(is_step_name("jiffy-0G"));
}

}  // namespace
}  // namespace jiffy
