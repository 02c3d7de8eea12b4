#include "launch/hosts.h"

#include <gtest/gtest.h>

#include "util/error.h"

namespace jiffy {
namespace {

TEST(Hosts, EntryLosesItsSlotCount) {
  EXPECT_EQ(host_of_entry("node1:4"), "node1");
  EXPECT_EQ(host_of_entry("  node1 slots=4 max_slots=8"), "node1");
  EXPECT_EQ(host_of_entry("::1"), "::1");
  EXPECT_EQ(host_of_entry("   "), "");
}

TEST(Hosts, ThisMachineByItsNamesAndLoopback) {
  for (const char* h : {"localhost", "127.0.0.1", "::1", "box", "box.example.org"}) {
    EXPECT_TRUE(is_this_host(h, "box.example.org")) << h;
    EXPECT_TRUE(is_this_host(h, "box")) << h;
  }
  EXPECT_FALSE(is_this_host("other", "box"));
  EXPECT_FALSE(is_this_host("boxer", "box"));
  EXPECT_FALSE(is_this_host("", "box"));
}

TEST(Hosts, HostFileOfBothDialects) {
  EXPECT_EQ(hostfile_hosts("# cluster\nnode1:2\n\nnode2 slots=4  # big one\n"),
            (std::vector<std::string>{"node1", "node2"}));
}

TEST(Hosts, NoHostOptionsNoCheck) { EXPECT_NO_THROW(check_hosts(LaunchOptions{})); }

TEST(Hosts, AnotherMachineIsRefused) {
  LaunchOptions o;
  o.hosts = {"localhost:2", "surely-not-this-host-4711"};
  try {
    check_hosts(o);
    FAIL() << "accepted another machine";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("surely-not-this-host-4711"), std::string::npos) << e.what();
  }
}

TEST(Hosts, MissingHostFileIsAnError) {
  LaunchOptions o;
  o.hostfile = "/nonexistent/hosts";
  EXPECT_THROW(check_hosts(o), Error);
}

}  // namespace
}  // namespace jiffy
