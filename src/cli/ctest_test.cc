// CTest's resource environment and what it makes of a launch.
#include "cli/ctest.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "util/error.h"

namespace jiffy {
namespace {

std::map<std::string, std::string> g_env;

std::optional<std::string> fake_env(const char* name) {
  auto it = g_env.find(name);
  if (it == g_env.end()) return std::nullopt;
  return it->second;
}

CtestGpus gpus_of(std::map<std::string, std::string> env) {
  g_env = std::move(env);
  return ctest_gpus(fake_env);
}

std::string error_of(std::map<std::string, std::string> env) {
  try {
    gpus_of(std::move(env));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

LaunchOptions ranks(int n, int gpus_per_task = 0, int gpus_per_job = 0) {
  LaunchOptions opt;
  opt.apps.emplace_back();
  opt.apps.back().ntasks = n;
  opt.gpus_per_task = gpus_per_task;
  opt.gpus_per_job = gpus_per_job;
  return opt;
}

TEST(CtestGpus, NoneWithoutCtest) {
  EXPECT_TRUE(gpus_of({}).ids.empty());
  EXPECT_TRUE(gpus_of({{"CTEST_RESOURCE_GROUP_COUNT", "1"}, {"CTEST_RESOURCE_GROUP_0", "crypto_chips"}}).ids.empty());
}

TEST(CtestGpus, GroupsInOrder) {
  CtestGpus g = gpus_of({{"CTEST_RESOURCE_GROUP_COUNT", "2"},
                         {"CTEST_RESOURCE_GROUP_0", "gpus"},
                         {"CTEST_RESOURCE_GROUP_0_GPUS", "id:3,slots:1"},
                         {"CTEST_RESOURCE_GROUP_1", "crypto_chips,gpus"},
                         {"CTEST_RESOURCE_GROUP_1_GPUS", "id:1,slots:2;id:GPU-abc,slots:1"},
                         {"CTEST_RESOURCE_GROUP_1_CRYPTO_CHIPS", "id:card0,slots:2"}});
  EXPECT_EQ(g.ids, (std::vector<std::string>{"3", "1", "GPU-abc"}));
  EXPECT_EQ(g.per_group, (std::vector<int>{1, 2}));
}

TEST(CtestGpus, AnIdGivenTwiceCountsOnce) {
  CtestGpus g = gpus_of({{"CTEST_RESOURCE_GROUP_COUNT", "2"},
                         {"CTEST_RESOURCE_GROUP_0", "gpus"},
                         {"CTEST_RESOURCE_GROUP_0_GPUS", "id:0,slots:1"},
                         {"CTEST_RESOURCE_GROUP_1", "gpus"},
                         {"CTEST_RESOURCE_GROUP_1_GPUS", "id:0,slots:1"}});
  EXPECT_EQ(g.ids, (std::vector<std::string>{"0"}));
}

TEST(CtestGpus, MalformedIsNamed) {
  EXPECT_NE(error_of({{"CTEST_RESOURCE_GROUP_COUNT", "x"}}).find("CTEST_RESOURCE_GROUP_COUNT"), std::string::npos);
  EXPECT_NE(error_of({{"CTEST_RESOURCE_GROUP_COUNT", "-1"}}), "");
  EXPECT_NE(error_of({{"CTEST_RESOURCE_GROUP_COUNT", "1"}}).find("CTEST_RESOURCE_GROUP_0 is not set"),
            std::string::npos);
  EXPECT_NE(error_of({{"CTEST_RESOURCE_GROUP_COUNT", "1"}, {"CTEST_RESOURCE_GROUP_0", "gpus"}})
                .find("CTEST_RESOURCE_GROUP_0_GPUS is not set"),
            std::string::npos);
  for (const char* bad : {"", "id:1", "slots:1", "id:,slots:1", "id:1,slots:1,x:2", "id:1;"}) {
    EXPECT_NE(error_of({{"CTEST_RESOURCE_GROUP_COUNT", "1"},
                        {"CTEST_RESOURCE_GROUP_0", "gpus"},
                        {"CTEST_RESOURCE_GROUP_0_GPUS", bad}})
                  .find("CTEST_RESOURCE_GROUP_0_GPUS"),
              std::string::npos)
        << bad;
  }
}

TEST(ApplyCtestGpus, OneGroupPerRankMeansPerRankGpus) {
  LaunchOptions opt = ranks(2);
  apply_ctest_gpus(opt, {{"2", "0"}, {1, 1}});
  EXPECT_EQ(opt.gpus_per_task, 1);
  EXPECT_EQ(opt.gpus_per_job, 0);
  EXPECT_EQ(opt.gpu_names, (std::vector<std::string>{"2", "0"}));
}

TEST(ApplyCtestGpus, OtherwiseSharedByTheJob) {
  LaunchOptions opt = ranks(4);
  apply_ctest_gpus(opt, {{"2", "0"}, {2}});
  EXPECT_EQ(opt.gpus_per_task, 0);
  EXPECT_EQ(opt.gpus_per_job, 2);
}

TEST(ApplyCtestGpus, ExplicitCountsMustMatch) {
  LaunchOptions ok = ranks(2, 1);
  apply_ctest_gpus(ok, {{"0", "1"}, {2}});
  EXPECT_EQ(ok.gpus_per_task, 1);
  LaunchOptions shared = ranks(3, 0, 2);
  apply_ctest_gpus(shared, {{"0", "1"}, {1, 1}});
  EXPECT_EQ(shared.gpus_per_job, 2);
  LaunchOptions bad = ranks(2, 1);
  try {
    apply_ctest_gpus(bad, {{"0"}, {1}});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("CTest gave this test 1 GPU(s)"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("-n 2 -g 1 asks for 2"), std::string::npos) << e.what();
  }
}

TEST(ApplyCtestGpus, NothingChosenChangesNothing) {
  LaunchOptions opt = ranks(2, 1);
  apply_ctest_gpus(opt, {});
  EXPECT_EQ(opt.gpus_per_task, 1);
  EXPECT_TRUE(opt.gpu_names.empty());
}

}  // namespace
}  // namespace jiffy
