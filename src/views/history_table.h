// The table `jiffy history` prints: one line per job, the newest last,
// no wider than the width it is given (the command is cut to fit).
// Pure but for the local time zone (times are shown in local time).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "history/row.h"

namespace jiffy::views {

// "0.25s", "12s", "5m03s", "2h05m", "3d04h"; "-" for a negative value.
std::string format_duration(double seconds);
// "12-04 10:00:05" in local time.
std::string format_clock(std::int64_t ns);
// What the EXIT column shows: "ok", "exit 3", "signal 9", "timeout",
// "refused", "lost", "cancelled".
std::string outcome_text(const history::Row& row);
// Cuts `text` to at most `width` characters (UTF-8 aware), ending in "…"
// when cut; control characters become spaces.
std::string fit(const std::string& text, std::size_t width);

// The header and one line per row. `width` >= 60.
std::string render_table(const std::vector<history::Row>& rows, int width);

}  // namespace jiffy::views
