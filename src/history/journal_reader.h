// Reading the history journal (proto/history.h): bytes in, rows out. Pure:
// the daemon's history thread (daemon/history_writer.h) does the file's
// I/O and locking, and feeds what it read here chunk by chunk.
//
// The file is not trusted. A record counts only if from_record() accepts
// it; anything else (garbage, a record torn by a full disk, a bad
// checksum) is skipped a byte at a time until the next magic that starts
// a valid record, as proto/history.h says.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

#include "history/row.h"

namespace jiffy::history {

struct JournalScan {
  std::vector<Row> rows;       // the valid records, in file order
  std::size_t consumed = 0;    // bytes of the input done with 
  std::size_t skipped = 0;     // of those, bytes that were not part of a valid record
};

// Scans buf, which starts anywhere in the file. Stops
// where fewer than a record's bytes are left, unless at_end (the file
// ends there: the rest is a torn record, skipped). The caller keeps
// buf[consumed:] and feeds it again, followed by what it reads next.
JournalScan scan_journal(std::string_view buf, bool at_end);

}  // namespace jiffy::history
