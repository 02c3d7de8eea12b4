// Bootstrap's PMI-1 spawn path (launch/bootstrap.h): a rank's spawn blocks
// become one SpawnAsk in the launcher's terms, the new world gets a PMI-1
// server of its own (its KVS seeded with the preput pairs), and the asker
// gets its answer. Real socketpairs, no processes: the test plays the
// ranks on the channels' far ends.
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <optional>
#include <string>

#include "launch/bootstrap.h"
#include "launch/environment.h"
#include "util/error.h"

namespace jiffy {
namespace {

void say(int fd, const std::string& text) { ASSERT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size())); }

// The next reply line on a rank's end of its channel.
std::string reply(int fd) {
  std::string line;
  char c;
  pollfd p{fd, POLLIN, 0};
  while (::poll(&p, 1, 2000) == 1 && ::read(fd, &c, 1) == 1 && c != '\n') line += c;
  return line;
}

struct Harness {
  std::optional<SpawnAsk> ask;
  std::string failure;
  Bootstrap boot;
  Harness()
      : boot(BootstrapPlan{}, 42, {0},
             Bootstrap::Events{[this](int, int, int, const std::string&) { failure = "abort"; },
                               [this](int, int, const std::string& why) { failure = why; },
                               [this](const std::string& why) { failure = why; },
                               [this](SpawnAsk a) { ask = std::move(a); }}) {}
};

const std::string kSpawnBlock =
    "mcmd=spawn\nnprocs=2\nexecname=prog\ntotspawns=1\nspawnssofar=1\narg1=a b=c\nargcnt=1\n"
    "preput_num=1\npreput_key_0=PARENT_ROOT_PORT_NAME\npreput_val_0=tag#0$port$\n"
    "info_num=2\ninfo_key_0=path\ninfo_val_0=/opt/bin\ninfo_key_1=wdir\ninfo_val_1=/tmp\nendcmd\n";

TEST(BootstrapSpawn, Pmi1SpawnBecomesANewWorld) {
  Harness h;
  Environment env;
  const int parent = h.boot.prepare_rank(0, env);
  say(parent, "cmd=init pmi_version=1 pmi_subversion=1\n");
  h.boot.drain();
  EXPECT_EQ(reply(parent), "cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1");
  say(parent, kSpawnBlock);
  h.boot.drain();
  ASSERT_TRUE(h.ask) << h.failure;
  ASSERT_EQ(h.ask->apps.size(), 1u);
  const PmixSpawnApp& app = h.ask->apps[0];
  EXPECT_EQ(app.command, "/opt/bin/prog");  // hydra's "path": where the program is
  EXPECT_EQ(app.argv, (std::vector<std::string>{"prog", "a b=c"}));
  EXPECT_EQ(app.wdir, "/tmp");
  EXPECT_EQ(app.nprocs, 2);
  EXPECT_EQ(h.ask->world, 0);
  EXPECT_EQ(h.ask->rank, 0);

  const int world = h.boot.add_world(h.ask->id, {0, 0});
  EXPECT_EQ(world, 1);
  Environment child_env;
  const int inherited = h.boot.prepare_world_rank(world, 1, child_env);
  EXPECT_EQ(*child_env.get("PMI_SPAWNED"), "1");
  EXPECT_EQ(*child_env.get("PMI_RANK"), "1");
  EXPECT_EQ(*child_env.get("PMI_SIZE"), "2");
  ASSERT_GE(inherited, 0);
  const int child = ::dup(inherited);  // what the rank keeps across its exec
  h.boot.rank_spawned(1, world);       // the launcher's copy goes
  h.boot.spawn_answer(h.ask->id, true, world);
  EXPECT_EQ(reply(parent), "cmd=spawn_result rc=0");

  // The child's own KVS holds its parent's port; the parent's does not.
  say(child, "cmd=init pmi_version=1 pmi_subversion=1\ncmd=get_my_kvsname\n");
  h.boot.drain();
  EXPECT_EQ(reply(child), "cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1");
  const std::string kvs = reply(child);
  ASSERT_EQ(kvs.rfind("cmd=my_kvsname rc=0 kvsname=", 0), 0u) << kvs;
  const std::string name = kvs.substr(kvs.find("kvsname=") + 8);
  say(child, "cmd=get kvsname=" + name + " key=PARENT_ROOT_PORT_NAME\n");
  h.boot.drain();
  EXPECT_EQ(reply(child), "cmd=get_result rc=0 value=tag#0$port$");
  EXPECT_TRUE(h.boot.contacted(1, world));
  EXPECT_FALSE(h.boot.contacted(0, world));
  EXPECT_TRUE(h.failure.empty()) << h.failure;
  ::close(child);
}

TEST(BootstrapSpawn, AFailedSpawnAnswersMinusOneWithTheReason) {
  Harness h;
  Environment env;
  const int parent = h.boot.prepare_rank(0, env);
  say(parent, "cmd=init pmi_version=1 pmi_subversion=1\n" + kSpawnBlock);
  h.boot.drain();
  reply(parent);
  ASSERT_TRUE(h.ask);
  h.boot.spawn_answer(h.ask->id, false, 0, "prog: No such file");
  EXPECT_EQ(reply(parent), "cmd=spawn_result rc=-1 msg=prog:_No_such_file");
  // Answered once: a second answer is not sent.
  h.boot.spawn_answer(h.ask->id, true, 0);
  pollfd p{parent, POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 50), 0);
}

TEST(BootstrapSpawn, WithoutAHandlerSpawnsAreRefused) {
  Bootstrap boot(BootstrapPlan{}, 7, {0},
                 Bootstrap::Events{[](int, int, int, const std::string&) {}, [](int, int, const std::string&) {},
                                   [](const std::string&) {}, {}});
  Environment env;
  const int parent = boot.prepare_rank(0, env);
  say(parent, "cmd=init pmi_version=1 pmi_subversion=1\n" + kSpawnBlock);
  boot.drain();
  reply(parent);
  EXPECT_EQ(reply(parent).rfind("cmd=spawn_result rc=-1", 0), 0u);
}

}  // namespace
}  // namespace jiffy
