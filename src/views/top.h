// `jiffy top`: the daemon's status, redrawn in the terminal every interval.
//
// Each refresh sends one `status` request on a connection kept open
// between refreshes (reopened when the daemon goes and comes back) and
// draws the reply with render_top (views/top_render.h). At most one request
// is outstanding: a daemon slow to answer is shown as such, never asked
// again before it answers, so a watcher can never add to a busy daemon's
// load more than one cheap request per interval. No daemon: the screen
// says so and the view keeps looking for one.
//
// On a terminal (stdout a tty, no --batch) it takes the alternate screen,
// hides the cursor and puts the terminal (stdin, when a tty) in a raw-ish
// mode: no echo, no line buffering, signals still generated (Ctrl-C,
// Ctrl-Z). Everything it changed is restored on every way out: q, Ctrl-C,
// SIGTERM, SIGHUP, SIGQUIT, --iterations run out, an error (thrown through
// the restoring destructor). Ctrl-Z restores the terminal before stopping
// and takes it again on SIGCONT. Otherwise (batch) it prints plain frames,
// each followed by an empty line, and leaves signals alone.
//
// Signals are handled in one place, the loop's poll, through a signalfd
// (SIGWINCH included: the size is read again with TIOCGWINSZ).
#pragma once

#include "cli/command.h"

namespace jiffy {

// Runs the view until q/Ctrl-C (returns 0), opts.iterations frames
// (returns 0) or SIGTERM/SIGHUP/SIGQUIT (returns 128 + the signal). Throws
// Error when the terminal cannot be written or set up, after restoring it.
int run_top(const TopOptions& opts);

}  // namespace jiffy
