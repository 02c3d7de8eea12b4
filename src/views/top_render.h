// The screen of `jiffy top`, as text: a pure function of the daemon's status
// reply (daemon/server.cc status_json, docs/history.md), the terminal's size
// and the time. views/top.h draws it; tests call it with replies they build.
//
// What the screen holds, top to bottom: a header (daemon pid, uptime, busy
// cores and GPUs, queue length), totals since the daemon started and any
// history problem, the cores and GPUs with the job on each, the running
// jobs, the queue, the last finished jobs. With few cores each core has a
// line of its own ("core 3  job 12  1:03  mylabel"); with many, each core is
// a cell of a grid ("17A" = core 17 held by the job listed as A below), so
// that 64 cores take 4 lines of 80 columns. What does not fit in the height
// is cut by section, each cut section ending with "... N more".
//
// The reply is read defensively: every field may be missing or of another
// type (an older daemon, the fields docs/history.md adds to status_reply
// arriving later), and what is missing is left out, never an error. Two
// shapes are read for a running job's `cores` and `gpus`: today's flat
// lists of ids, and the per-rank lists ([[0,1],[2,3]], [["0"],["1"]]).
//
// Every line is cut to the width (never wrapped), with control characters
// replaced by '?': a command line may hold anything, and must not be able to
// move the cursor or retitle the terminal.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "proto/message.h"

namespace jiffy {

struct TermSize {
  int cols = 80;
  int rows = 24;  // 0: no limit (batch frames)
};

// What the view knows at one refresh.
struct TopSnapshot {
  // The last status_reply, or null when there is none (no daemon running).
  const proto::Json* reply = nullptr;
  // A line saying what is wrong, shown under the header: no daemon, the
  // daemon slow to answer, an error it sent. Empty when all is well.
  std::string problem;
};

// REQUIRES: size.cols >= 1. Returns at most size.rows lines (when rows > 0),
// none wider than size.cols columns, none empty. now_unix: the wall clock
// (Unix seconds), against which `start`/`submit` fields are aged. Pure, but
// for the clock in the header, which is local time.
std::vector<std::string> render_top(const TopSnapshot& snapshot, TermSize size, double now_unix);

// A duration as top shows it: "4.2s", "42s", "12:05", "3:02:05", "2d03h".
std::string format_duration(double seconds);

// text cut to at most cols terminal columns at a character boundary, with
// control characters (C0, DEL, C1) and invalid UTF-8 replaced by '?'.
// Characters from U+1100 up count as two columns, so that wide (CJK)
// characters never wrap; some narrow ones are then cut a little early.
std::string fit_to_width(std::string_view text, int cols);
// The columns text takes, counted as fit_to_width counts them.
int display_width(std::string_view text);

}  // namespace jiffy
