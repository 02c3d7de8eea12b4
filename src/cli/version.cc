#include "cli/version.h"

#include "build_info.h"

namespace jiffy {

std::string version_text() {
  std::string text = "jiffy " JIFFY_VERSION "\n";
  text += "revision " JIFFY_REVISION "\n";
  text += "built with PMIx " JIFFY_PMIX_VERSION ", hwloc " JIFFY_HWLOC_VERSION ", " JIFFY_COMPILER "\n";
  return text;
}

}  // namespace jiffy
