// Hosts: jiffy runs jobs on this machine only. Host options users carry over
// from their mpiexec lines (-hosts, -host, -H, -f, -hostfile, -machinefile)
// are accepted when every host they name is this machine, and refused with
// a clear message otherwise: running a job meant for two machines on one,
// silently, is a wrong result.
//
// A name is this machine when it is localhost, a loopback address, or this
// host's name (full or short). Nothing is resolved: the launch path does no
// DNS.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "launch/options.h"

namespace jiffy {

// The host of one entry: "node1:4" (hydra), "node1 slots=4" (Open MPI) ->
// "node1".
std::string host_of_entry(std::string_view entry);
// Whether host names this machine, whose name is hostname.
bool is_this_host(std::string_view host, std::string_view hostname);
// The hosts a host file lists (one per line; '#' starts a comment).
std::vector<std::string> hostfile_hosts(std::string_view text);

// Throws Error unless every host opt names (and its host file lists) is
// this machine.
void check_hosts(const LaunchOptions& opt);

}  // namespace jiffy
