#include "history/journal_reader.h"

#include <cstdint>
#include <cstring>

namespace jiffy::history {

JournalScan scan_journal(std::string_view buf, bool at_end) {
  constexpr std::size_t kSize = JIFFY_HISTORY_RECORD_SIZE;
  // Byte by byte: a write cut short by a full disk can end anywhere.
  constexpr std::size_t kStep = 1;
  JournalScan out;
  std::size_t at = 0;
  while (buf.size() - at >= kSize) {
    std::uint64_t magic;
    std::memcpy(&magic, buf.data() + at, sizeof magic);
    if (magic == JIFFY_HISTORY_MAGIC) {
      jiffy_history_record r;
      std::memcpy(&r, buf.data() + at, kSize);
      if (std::optional<Row> row = from_record(r)) {
        out.rows.push_back(std::move(*row));
        at += kSize;
        continue;
      }
    }
    at += kStep;
    out.skipped += kStep;
  }
  if (at_end) {
    out.skipped += buf.size() - at;
    at = buf.size();
  }
  out.consumed = at;
  return out;
}

}  // namespace jiffy::history
