#include "daemon/tags.h"

#include <gtest/gtest.h>

#include "util/error.h"

namespace jiffy {
namespace {

const std::string kTag = "0123456789abcdef";

TEST(TagRegistry, ATagBelongsToOneJob) {
  TagRegistry tags;
  tags.claim(kTag, 7);
  tags.claim(kTag, 7);  // again, by its owner: fine
  EXPECT_EQ(tags.owner(kTag), 7u);
  EXPECT_THROW(tags.claim(kTag, 8), Error);
  EXPECT_EQ(tags.owner(kTag), 7u);  // unchanged by the refusal
}

TEST(TagRegistry, OnlyTheOwnerReleases) {
  TagRegistry tags;
  tags.claim(kTag, 7);
  tags.release(kTag, 8);  // a stale or forged release
  EXPECT_EQ(tags.owner(kTag), 7u);
  tags.release(kTag, 7);
  EXPECT_EQ(tags.owner(kTag), 0u);
  tags.claim(kTag, 8);  // free again
  EXPECT_EQ(tags.owner(kTag), 8u);
}

TEST(TagRegistry, EmptyTagIsNoTag) {
  TagRegistry tags;
  tags.claim("", 7);
  tags.claim("", 8);
  EXPECT_EQ(tags.owner(""), 0u);
  EXPECT_EQ(tags.size(), 0u);
}

}  // namespace
}  // namespace jiffy
