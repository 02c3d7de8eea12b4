// Where a user's history database lives (docs/history.md): one definition
// for the daemon that writes it and the views that read it.
#pragma once

#include <optional>
#include <string>

namespace jiffy::history {

// $XDG_STATE_HOME/jiffy/history.db when that is an absolute path, else
// $HOME/.local/state/jiffy/history.db (the home from the password database
// when HOME is unset or relative). "" when neither is known.
using EnvGet = std::optional<std::string> (*)(const char* name);
std::string default_db_path(EnvGet env);

}  // namespace jiffy::history
