// The shared PMIx server of a user's resource set, from a launcher's side:
// reaching it, starting it, stopping it. It is `jiffy-pmix
// --jiffy-pmix-serve` (pmi/pmix_service.cc), one libpmix server that
// registers a namespace per job for every launcher of the set, so that an
// Open MPI launch neither loads libpmix nor initialises a server (~12 ms
// of CPU each, bench/README.md). It listens on <key>.pmix.sock in the
// runtime directory, holds <key>.pmix.lock while it lives, is started
// under <key>.pmix.start the way the daemon is (launch/client.h), and
// exits when `jiffy stop` says so or after a minute without a job. Its
// protocol is pmi/pmix_wire.h.
#pragma once

#include <optional>

#include "proto/message.h"
#include "util/fd.h"
#include "util/runtime_dir.h"

namespace jiffy {

// A connection to the set's shared server (its peer checked to be of our
// uid), started first if none listens and start_if_missing; an invalid Fd
// when none runs (and none was to be started). Throws Error when one
// cannot be started.
Fd connect_shared_pmix(const DaemonPaths& paths, bool start_if_missing);

// `jiffy stop`: the set's shared server takes no more jobs and exits once
// its last one has ended. Returns whether one was running.
bool stop_shared_pmix(const DaemonPaths& paths);

// `jiffy status`: what the set's shared server says of itself ({pid, jobs,
// served, stopping}: pmi/pmix_wire.h), or nullopt when none answers within
// a second.
std::optional<proto::Json> shared_pmix_status(const DaemonPaths& paths);

}  // namespace jiffy
