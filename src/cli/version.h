#pragma once
// `jiffy --version`: the version, the source revision and what the build
// used (cmake/build_info.cmake writes the facts at every build).

#include <string>

namespace jiffy {

std::string version_text();

}  // namespace jiffy
