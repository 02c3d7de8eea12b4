// The PMIx rendezvous (launch/bootstrap.h): who gets it, what a rank is
// told, and the helper's event lines.
#include <gtest/gtest.h>

#include "launch/bootstrap.h"
#include "launch/environment.h"
#include "pmi/pmix_server.h"
#include "util/error.h"

namespace jiffy {
namespace {

TEST(Rendezvous, OnlyForProgramsThatMayHideOpenMpi) {
  EXPECT_TRUE(plan_bootstrap(MpiMode::Auto, {MpiKind::None}).rendezvous);
  EXPECT_FALSE(plan_bootstrap(MpiMode::Auto, {MpiKind::Mpich}).rendezvous);
  // Served by the PMIx server from the start.
  EXPECT_FALSE(plan_bootstrap(MpiMode::Auto, {MpiKind::OpenMpi}).rendezvous);
  EXPECT_FALSE(plan_bootstrap(MpiMode::Auto, {MpiKind::Unknown, MpiKind::None}).rendezvous);
  // MPMD: a wrapper in one group.
  EXPECT_TRUE(plan_bootstrap(MpiMode::Auto, {MpiKind::Mpich, MpiKind::None}).rendezvous);
  // The user chose.
  for (MpiMode m : {MpiMode::None, MpiMode::Pmi1, MpiMode::Pmix}) {
    EXPECT_FALSE(plan_bootstrap(m, {MpiKind::None}).rendezvous);
  }
}

// The Open MPI application-process profile (kOmpiAppProcess): only where
// every program is an Open MPI one that jiffy's PMIx serves directly.
TEST(BootstrapPlan, OmpiAppProfileOnlyForOpenMpiProgramsServedByPmix) {
  EXPECT_TRUE(plan_bootstrap(MpiMode::Auto, {MpiKind::OpenMpi}).ompi_app);
  EXPECT_TRUE(plan_bootstrap(MpiMode::Pmix, {MpiKind::OpenMpi, MpiKind::OpenMpi}).ompi_app);
  // A wrapper (it may run mpirun), another program, or no PMIx at all.
  EXPECT_FALSE(plan_bootstrap(MpiMode::Auto, {MpiKind::OpenMpi, MpiKind::None}).ompi_app);
  EXPECT_FALSE(plan_bootstrap(MpiMode::Auto, {MpiKind::Unknown}).ompi_app);
  EXPECT_FALSE(plan_bootstrap(MpiMode::Pmix, {MpiKind::None}).ompi_app);
  EXPECT_FALSE(plan_bootstrap(MpiMode::Pmi1, {MpiKind::OpenMpi}).ompi_app);
  EXPECT_FALSE(plan_bootstrap(MpiMode::None, {MpiKind::OpenMpi}).ompi_app);
  EXPECT_FALSE(plan_bootstrap(MpiMode::Auto, {}).ompi_app);
}

TEST(Rendezvous, Environment) {
  Environment env;
  env.set("OMPI_MCA_pml", "ucx");  // the caller's choice stays
  env.set("PMIX_RANK", "7");       // a stale one does not
  rendezvous_environment(env, 1, 3, pmix_namespace("ab12"), 4242);
  EXPECT_EQ(*env.get("PMIX_NAMESPACE"), "jiffy.ab12");
  EXPECT_EQ(*env.get("PMIX_RANK"), "1");
  for (const char* v : {"PMIX_SERVER_URI41", "PMIX_SERVER_URI4", "PMIX_SERVER_URI3"}) {
    EXPECT_EQ(*env.get(v), "pmix-server.0;tcp4://127.0.0.1:4242") << v;
  }
  EXPECT_EQ(*env.get("PMIX_GDS_MODULE"), "hash");
  EXPECT_EQ(*env.get("OMPI_MCA_schizo"), "^orte");
  EXPECT_EQ(*env.get("OMPI_MCA_pml"), "ucx");
  EXPECT_EQ(env.get("OMPI_MCA_orte_externally_bound").value_or(""), "1");
  // Not Open MPI's mpirun: harnesses tell the family by these (PETSc).
  EXPECT_FALSE(env.get("OMPI_COMM_WORLD_SIZE"));
  EXPECT_FALSE(env.get("OMPI_COMM_WORLD_RANK"));
}

TEST(Rendezvous, EventLines) {
  PmixEvent e;
  ASSERT_TRUE(parse_pmix_event("c 3", &e));
  EXPECT_EQ(e.kind, PmixEvent::Kind::Connected);
  EXPECT_EQ(e.rank, 3);
  ASSERT_TRUE(parse_pmix_event("f 0", &e));
  EXPECT_EQ(e.kind, PmixEvent::Kind::Finalized);
  PmixEvent a = pmix_event(PmixEvent::Kind::Abort, 2, -7, "bad\nthing here");
  ASSERT_TRUE(parse_pmix_event(format_pmix_event(a), &e));
  EXPECT_EQ(e.kind, PmixEvent::Kind::Abort);
  EXPECT_EQ(e.rank, 2);
  EXPECT_EQ(e.status, -7);
  EXPECT_EQ(e.message, "bad thing here");
  EXPECT_EQ(format_pmix_event(pmix_event(PmixEvent::Kind::Finalized, 5)), "f 5");
  for (const char* bad : {"", "c", "c x", "x 1", "c 1 2", "a 1", "a 1 z", "c -1"}) {
    EXPECT_FALSE(parse_pmix_event(bad, &e)) << bad;
  }
}

// A job's PMIx namespace is its tag and nothing else (no job id, no pid:
// both public), and there is none without a tag.
TEST(Rendezvous, NamespaceIsTheTag) {
  EXPECT_EQ(pmix_namespace("0123456789abcdef0123456789abcdef"), "jiffy.0123456789abcdef0123456789abcdef");
  EXPECT_THROW(pmix_namespace(""), Error);
}

}  // namespace
}  // namespace jiffy
