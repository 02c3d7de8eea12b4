// One launch as the history knows it: the row of the database
// (history/schema.h), decoded from a journal record (proto/history.h), and
// shown as `jiffy history --json` prints it (docs/history.md, "Fields").
// Pure: no I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "proto/history.h"
#include "proto/message.h"

namespace jiffy::history {

struct Row {
  std::int64_t id = 0;  // the database's row id; 0 before it is stored
  std::string tag;
  std::uint64_t job = 0;
  int source = JIFFY_HISTORY_FROM_LAUNCHER;
  int outcome = JIFFY_OUTCOME_EXITED;
  int exit_code = 0;
  int signal = 0;
  int pid = 0;
  int ntasks = 0;
  int ngroups = 1;
  std::uint32_t flags = 0;
  std::int64_t submit_ns = 0, start_ns = 0, end_ns = 0;
  std::int64_t user_us = 0, sys_us = 0, maxrss_kb = 0;
  std::string label, command, cwd;
  std::string cores;  // per rank, ';'-separated core lists: "0-1;2-3"
  std::string gpus;   // per rank, ';'-separated GPU names lists
  std::string reason;
  std::string step, nodes;  // a Slurm step's id and nodes (JIFFY_HISTORY_SLURM); "" otherwise
};

// The row a journal record carries, or nullopt when the record is not
// whole and valid (magic, size, version, checksum, NUL-terminated strings,
// known source and outcome, a tag).
std::optional<Row> from_record(const jiffy_history_record& r);

// The record for a row (checksum set): what launchers and the daemon append.
jiffy_history_record to_record(const Row& row);

// "ok", "failed", "signaled", "timeout", "refused", "lost", "cancelled".
const char* outcome_name(const Row& row);

// "0-1;2-3" -> {{0,1},{2,3}}. Malformed parts are skipped.
std::vector<std::vector<int>> parse_core_lists(const std::string& text);
// "a,b;c" -> {{"a","b"},{"c"}}.
std::vector<std::vector<std::string>> parse_name_lists(const std::string& text);

// The object `jiffy history --json` prints for the row (docs/history.md).
proto::Json to_json(const Row& row);

}  // namespace jiffy::history
