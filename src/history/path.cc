#include "history/path.h"

#include <pwd.h>
#include <unistd.h>

namespace jiffy::history {

std::string default_db_path(EnvGet env) {
  std::optional<std::string> state = env ? env("XDG_STATE_HOME") : std::nullopt;
  if (state && !state->empty() && (*state)[0] == '/') return *state + "/jiffy/history.db";
  std::optional<std::string> home = env ? env("HOME") : std::nullopt;
  std::string h = home && !home->empty() && (*home)[0] == '/' ? *home : std::string();
  if (h.empty()) {
    if (const passwd* pw = ::getpwuid(::geteuid()); pw && pw->pw_dir && pw->pw_dir[0] == '/') h = pw->pw_dir;
  }
  return h.empty() ? std::string() : h + "/.local/state/jiffy/history.db";
}

}  // namespace jiffy::history
