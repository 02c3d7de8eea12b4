// No PMIx at all: the unit tests' PmixServer. See pmix_server.h.
#include "pmi/pmix_server.h"
#include "util/error.h"

namespace jiffy {

bool PmixServer::available() { return false; }
bool PmixServer::open_shared() { return false; }

std::unique_ptr<PmixServer> PmixServer::start(const PmixJob&) {
  throw Error("this executable has no PMIx support (use jiffy-pmix)");
}

int PmixServer::host_main(const std::vector<std::string>&) {
  throw Error("this executable has no PMIx support (use jiffy-pmix)");
}

int PmixServer::serve_main(const std::vector<std::string>&) {
  throw Error("this executable has no PMIx support (use jiffy-pmix)");
}

}  // namespace jiffy
