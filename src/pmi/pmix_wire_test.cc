#include "pmi/pmix_wire.h"

#include <gtest/gtest.h>

#include "util/error.h"

namespace jiffy::pmix_wire {
namespace {

// What goes on the wire comes back as it was sent.
template <typename T>
Json through_the_wire(const T& msg) {
  proto::FrameDecoder d(kMaxFrame);
  d.feed(proto::encode(msg));
  std::optional<Json> m = d.next();
  EXPECT_TRUE(m.has_value());
  return m.value_or(Json::object());
}

TEST(PmixWire, JobRoundTrips) {
  JobRequest j = parse_job(through_the_wire(job_message({"jiffy.abc", {0, 0, 1}, "/tmp/jiffy-0-job1-x"})));
  EXPECT_EQ(j.nspace, "jiffy.abc");
  EXPECT_EQ(j.appnum, (std::vector<int>{0, 0, 1}));
  EXPECT_EQ(j.dir, "/tmp/jiffy-0-job1-x");
}

TEST(PmixWire, JobNeedsRanksAndAnAbsoluteDirectory) {
  EXPECT_THROW(parse_job(job_message({"jiffy.abc", {}, "/tmp/x"})), Error);
  EXPECT_THROW(parse_job(job_message({"jiffy.abc", {0}, "tmp/x"})), Error);
  EXPECT_THROW(parse_job(job_message({"", {0}, "/tmp/x"})), Error);
  EXPECT_THROW(parse_job(Json{{"type", "job"}, {"v", kVersion}, {"nspace", "n"}, {"appnum", {-1}}, {"dir", "/d"}}),
               Error);
  EXPECT_THROW(parse_job(Json{{"type", "job"}, {"v", kVersion}, {"nspace", 5}, {"appnum", {0}}, {"dir", "/d"}}),
               Error);
}

TEST(PmixWire, AJobOfAnotherProtocolVersionIsRefusedSayingWhy) {
  Json m = job_message({"jiffy.abc", {0}, "/tmp/x"});
  m["v"] = kVersion + 1;
  try {
    parse_job(m);
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("jiffy stop"), std::string::npos) << e.what();
  }
}

TEST(PmixWire, WorldRoundTripsAndWorldZeroIsNotASpawn) {
  WorldRequest w = parse_world(through_the_wire(world_message({2, {0, 1}, 7})));
  EXPECT_EQ(w.world, 2);
  EXPECT_EQ(w.appnum, (std::vector<int>{0, 1}));
  EXPECT_EQ(w.spawn_id, 7);
  EXPECT_THROW(parse_world(world_message({0, {0}, 1})), Error);
}

TEST(PmixWire, VarsComeBackPerRankAndMustMatchTheWorld) {
  std::vector<Vars> ranks = {{{"PMIX_RANK", "0"}, {"PMIX_NAMESPACE", "jiffy.a"}}, {{"PMIX_RANK", "1"}}};
  Json m = through_the_wire(vars_message(3, ranks));
  EXPECT_EQ(parse_vars(m, 3, 2), ranks);
  EXPECT_THROW(parse_vars(m, 0, 2), Error);  // another world's
  EXPECT_THROW(parse_vars(m, 3, 3), Error);  // not one entry per rank
  Json bad = m;
  bad["ranks"][0][0] = Json::array({"", "x"});  // a variable with no name
  EXPECT_THROW(parse_vars(bad, 3, 2), Error);
}

TEST(PmixWire, EventsRoundTripSpawnsIncluded) {
  PmixEvent a = pmix_event(PmixEvent::Kind::Abort, 1, 7, "bye");
  a.world = 2;
  PmixEvent back = parse_event(through_the_wire(event_message(a)));
  EXPECT_EQ(back.kind, PmixEvent::Kind::Abort);
  EXPECT_EQ(back.world, 2);
  EXPECT_EQ(back.rank, 1);
  EXPECT_EQ(back.status, 7);
  EXPECT_EQ(back.message, "bye");

  PmixEvent s = pmix_event(PmixEvent::Kind::Spawn, 0);
  s.spawn_id = 4;
  PmixSpawnApp app;
  app.command = "./child";
  app.argv = {"./child", "x"};
  app.nprocs = 3;
  app.env = {{"OMPI_PARENT_PORT", "p"}};
  app.wdir = "/w";
  app.hosts = {"localhost"};
  s.apps = {app};
  back = parse_event(through_the_wire(event_message(s)));
  EXPECT_EQ(back.kind, PmixEvent::Kind::Spawn);
  EXPECT_EQ(back.spawn_id, 4);
  ASSERT_EQ(back.apps.size(), 1u);
  EXPECT_EQ(back.apps[0].command, "./child");
  EXPECT_EQ(back.apps[0].argv, app.argv);
  EXPECT_EQ(back.apps[0].nprocs, 3);
  EXPECT_EQ(back.apps[0].env, app.env);
  EXPECT_EQ(back.apps[0].wdir, "/w");
  EXPECT_EQ(back.apps[0].hosts, app.hosts);
}

TEST(PmixWire, AMalformedEventIsRefused) {
  Json e = event_message(pmix_event(PmixEvent::Kind::Connected, 0));
  e["kind"] = 99;
  EXPECT_THROW(parse_event(e), Error);
  Json s = event_message(pmix_event(PmixEvent::Kind::Spawn, 0));
  EXPECT_THROW(parse_event(s), Error);  // a spawn without programs
  Json lost = event_message(pmix_event(PmixEvent::Kind::Lost, 0));
  EXPECT_THROW(parse_event(lost), Error);  // never sent: the launcher's own
}

}  // namespace
}  // namespace jiffy::pmix_wire
