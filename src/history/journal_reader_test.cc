#include "history/journal_reader.h"

#include <gtest/gtest.h>

#include <string>

namespace jiffy::history {
namespace {

Row row(const std::string& tag) {
  Row r;
  r.tag = tag;
  r.ntasks = 1;
  r.end_ns = 5;
  return r;
}

std::string bytes(const Row& r) {
  jiffy_history_record rec = to_record(r);
  return std::string(reinterpret_cast<const char*>(&rec), sizeof rec);
}

std::vector<std::string> tags(const JournalScan& s) {
  std::vector<std::string> out;
  for (const Row& r : s.rows) out.push_back(r.tag);
  return out;
}

TEST(JournalReader, ReadsWholeRecordsInOrder) {
  std::string buf = bytes(row("a")) + bytes(row("b"));
  JournalScan s = scan_journal(buf, true);
  EXPECT_EQ(tags(s), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(s.consumed, buf.size());
  EXPECT_EQ(s.skipped, 0u);
}

TEST(JournalReader, GarbageBetweenRecordsIsSkippedUpToTheNextMagic) {
  std::string buf = bytes(row("a")) + std::string(23, 'x') + bytes(row("b"));
  JournalScan s = scan_journal(buf, true);
  EXPECT_EQ(tags(s), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(s.skipped, 23u);
}

TEST(JournalReader, TornRecordIsSkippedAndTheNextOneFound) {
  // A full disk cut a record short (at any byte), the next writer's record follows.
  std::string torn = bytes(row("torn")).substr(0, 1001);
  std::string buf = bytes(row("a")) + torn + bytes(row("b"));
  JournalScan s = scan_journal(buf, true);
  EXPECT_EQ(tags(s), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(s.skipped, 1001u);
}

TEST(JournalReader, CorruptChecksumIsSkipped) {
  std::string bad = bytes(row("bad"));
  bad[200] ^= 1;
  JournalScan s = scan_journal(bad + bytes(row("good")), true);
  EXPECT_EQ(tags(s), (std::vector<std::string>{"good"}));
}

TEST(JournalReader, PartialTailWaitsForMoreUnlessAtEnd) {
  std::string buf = bytes(row("a")) + bytes(row("b")).substr(0, 100);
  JournalScan s = scan_journal(buf, false);
  EXPECT_EQ(tags(s), (std::vector<std::string>{"a"}));
  EXPECT_EQ(s.consumed, sizeof(jiffy_history_record));
  JournalScan end = scan_journal(buf, true);
  EXPECT_EQ(end.consumed, buf.size());
  EXPECT_EQ(end.skipped, 100u);
}

TEST(JournalReader, ChunkedFeedingFindsTheSameRecords) {
  std::string file = bytes(row("a")) + std::string(16, '\0') + bytes(row("b")) + bytes(row("c"));
  std::vector<std::string> got;
  std::string buf;
  for (std::size_t at = 0; at < file.size(); at += 1000) {
    buf += file.substr(at, 1000);
    JournalScan s = scan_journal(buf, at + 1000 >= file.size());
    for (const Row& r : s.rows) got.push_back(r.tag);
    buf.erase(0, s.consumed);
  }
  EXPECT_EQ(got, (std::vector<std::string>{"a", "b", "c"}));
}

TEST(JournalReader, EmptyInputYieldsNothing) {
  JournalScan s = scan_journal("", true);
  EXPECT_TRUE(s.rows.empty());
  EXPECT_EQ(s.consumed, 0u);
}

}  // namespace
}  // namespace jiffy::history
