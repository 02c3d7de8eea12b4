// The shared PMIx server's protocol: a launcher (pmi/pmix_remote.cc) and
// `jiffy-pmix --jiffy-pmix-serve` (pmi/pmix_service.cc), over a Unix stream
// socket in the user's runtime directory (<key>.pmix.sock), framed as the
// daemon's messages are (proto/message.h). One connection is one job: the
// launcher registers it, the server answers with every rank's variables,
// then tells the job's events as they happen; the job ends when the
// launcher closes the connection (the server deregisters its namespaces).
//
//   launcher                              server
//   job {v, nspace, appnum, dir}     ->
//                                    <-   vars {world: 0, ranks}  | error
//                                    <-   event {...}  (any time after)
//   world {world, appnum, spawn_id}  ->                (MPI_Comm_spawn)
//                                    <-   vars {world, ranks}     | error
//   spawn_done {spawn_id, ok, world} ->
//   abandon_port {port}              ->
//   stop                             ->   (jiffy stop: no more jobs)
//                                    <-   ok
//   status                           ->   (jiffy status)
//                                    <-   ok {pid, jobs, served, stopping}
//
// Encoding and parsing are pure; parsing validates (Error on a malformed
// message), as each side is only as trusted as its peer's uid.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "pmi/pmix_server.h"
#include "proto/message.h"

namespace jiffy::pmix_wire {

using proto::Json;
using Vars = std::vector<std::pair<std::string, std::string>>;

namespace type {
inline constexpr const char* kJob = "job";
inline constexpr const char* kWorld = "world";
inline constexpr const char* kSpawnDone = "spawn_done";
inline constexpr const char* kAbandonPort = "abandon_port";
inline constexpr const char* kStop = "stop";
inline constexpr const char* kStatus = "status";
inline constexpr const char* kVars = "vars";
inline constexpr const char* kEvent = "event";
}  // namespace type

// The protocol's version, in every job message: a server from another
// build of jiffy (still running across an upgrade) refuses the job with a
// message rather than misread it.
inline constexpr int kVersion = 1;

// Frames up to this size (a vars message for thousands of ranks).
inline constexpr std::size_t kMaxFrame = proto::kMaxStatusFrame;

struct JobRequest {
  std::string nspace;
  std::vector<int> appnum;  // per rank
  std::string dir;          // the job's private directory (absolute)
};
Json job_message(const JobRequest& job);
JobRequest parse_job(const Json& msg);

struct WorldRequest {
  int world = 0;
  std::vector<int> appnum;
  int spawn_id = 0;
};
Json world_message(const WorldRequest& w);
WorldRequest parse_world(const Json& msg);

Json spawn_done_message(int spawn_id, bool ok, int world);
Json abandon_port_message(const std::string& port);

// Every rank's variables of one world.
Json vars_message(int world, const std::vector<Vars>& ranks);
// REQUIRES: msg is a vars message; nranks is how many ranks the world has.
std::vector<Vars> parse_vars(const Json& msg, int world, std::size_t nranks);

Json event_message(const PmixEvent& e);
PmixEvent parse_event(const Json& msg);

}  // namespace jiffy::pmix_wire
