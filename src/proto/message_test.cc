#include "proto/message.h"

#include <gtest/gtest.h>

#include "util/error.h"

namespace jiffy::proto {
namespace {

TEST(ProtoFields, Tag) {
  EXPECT_EQ(get_tag(Json{{"type", "submit"}, {"tag", "0123456789abcdef"}}), "0123456789abcdef");
  EXPECT_EQ(get_tag(Json{{"type", "submit"}, {"tag", std::string(64, 'a')}}), std::string(64, 'a'));
  for (const Json& bad : {Json("0123456789abcde"), Json(std::string(65, 'a')), Json("0123456789ABCDEF"),
                          Json("0123456789abcdeg"), Json("0123456789abcd\\n"), Json(7), Json(nullptr)}) {
    EXPECT_THROW(get_tag(Json{{"type", "submit"}, {"tag", bad}}), Error) << bad.dump();
  }
  EXPECT_THROW(get_tag(Json{{"type", "submit"}}), Error);
}

}  // namespace
}  // namespace jiffy::proto
