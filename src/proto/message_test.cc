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

// A number is checked before it is narrowed: 2^32 is not slot 0.
TEST(ProtoFields, IntegersAreRangeCheckedBeforeNarrowing) {
  auto msg = [](const Json& v) { return Json{{"type", "reattach"}, {"slots", v}}; };
  EXPECT_EQ(get_int_pairs(msg(Json::parse("[[0, 1], [3, 0]]")), "slots", 8, 0, 100),
            (std::vector<std::pair<int, int>>{{0, 1}, {3, 0}}));
  for (const char* bad : {"[[4294967296, 0]]", "[[0, 4294967297]]", "[[18446744073709551615, 0]]",
                          "[[-1, 0]]", "[[101, 0]]", "[[0]]", "[[0, 1, 2]]", "[[0.5, 1]]", "[7]",
                          "{}", "[[-9223372036854775808, 0]]"}) {
    EXPECT_THROW(get_int_pairs(msg(Json::parse(bad)), "slots", 8, 0, 100), Error) << bad;
  }
  EXPECT_THROW(get_int_pairs(msg(Json::parse("[[0,0],[0,1],[0,2]]")), "slots", 2, 0, 100), Error);
  auto list = [](const char* v) { return Json{{"type", "x"}, {"l", Json::parse(v)}}; };
  EXPECT_EQ(get_int_list(list("[0, 5]"), "l", 8, 0, 5), (std::vector<int>{0, 5}));
  for (const char* bad : {"[4294967296]", "[18446744073709551615]", "[-1]", "[6]"}) {
    EXPECT_THROW(get_int_list(list(bad), "l", 8, 0, 5), Error) << bad;
  }
  EXPECT_EQ(get_int_list(list("[-3]"), "l", 8, -5, 5), (std::vector<int>{-3}));
}

}  // namespace
}  // namespace jiffy::proto
