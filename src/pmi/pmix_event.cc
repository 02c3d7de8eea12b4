// The helper's event lines (pmix_server.h), shared by both ends, and what
// every PmixServer gives a rank.
#include <cstdlib>

#include "launch/environment.h"
#include "pmi/pmix_server.h"

namespace jiffy {

void PmixServer::prepare_world_rank(int world, int rank, Environment& env) {
  for (const auto& [name, value] : rank_variables(world, rank)) env.set(name, value);
}

std::string format_pmix_event(const PmixEvent& e) {
  switch (e.kind) {
    case PmixEvent::Kind::Connected: return "c " + std::to_string(e.rank);
    case PmixEvent::Kind::Finalized: return "f " + std::to_string(e.rank);
    case PmixEvent::Kind::Abort: {
      std::string m = e.message;
      for (char& c : m) {
        if (c == '\n' || c == '\r') c = ' ';
      }
      return "a " + std::to_string(e.rank) + " " + std::to_string(e.status) + " " + m;
    }
    case PmixEvent::Kind::Spawn: break;  // a helper's server refuses spawns
    case PmixEvent::Kind::Lost: break;   // the shared server's (pmix_remote.cc)
  }
  return {};
}

bool parse_pmix_event(const std::string& line, PmixEvent* e) {
  if (line.size() < 3 || line[1] != ' ') return false;
  const char* p = line.c_str() + 2;
  char* end = nullptr;
  long rank = std::strtol(p, &end, 10);
  if (end == p || rank < 0 || rank > (1 << 24)) return false;
  e->rank = static_cast<int>(rank);
  e->status = 0;
  e->message.clear();
  switch (line[0]) {
    case 'c': e->kind = PmixEvent::Kind::Connected; return *end == '\0';
    case 'f': e->kind = PmixEvent::Kind::Finalized; return *end == '\0';
    case 'a': {
      if (*end != ' ') return false;
      p = end + 1;
      long status = std::strtol(p, &end, 10);
      if (end == p || (*end != ' ' && *end != '\0')) return false;
      e->kind = PmixEvent::Kind::Abort;
      e->status = static_cast<int>(status);
      if (*end == ' ') e->message = end + 1;
      return true;
    }
  }
  return false;
}

}  // namespace jiffy
