// Bootstrap: the MPI bootstrap servers of one job, living in the launcher.
//
//  - PMI-1 (MPICH family): one socketpair per rank, the rank's end inherited
//    as PMI_FD; lines go through pmi::SimpleEngine. Nearly free, so every
//    job gets it unless --mpi=none/pmix.
//  - PMIx (Open MPI): libpmix hosted in this process (pmi/pmix_server.h),
//    started only when a program links Open MPI, is an interpreter that may
//    load it, or --mpi=pmix says so.
//
// Both servers are polled by Job's loop. What they learn that ends a job
// (an abort, a protocol error) is reported through Events; whether a rank
// got through MPI_Init and MPI_Finalize is queried when it exits.
#pragma once

#include <poll.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "launch/mpi_detect.h"
#include "launch/options.h"
#include "util/fd.h"

namespace jiffy {

class Environment;
class PmixServer;
namespace pmi {
class SimpleEngine;
}

struct BootstrapPlan {
  bool pmi1 = true;
  bool pmix = false;
  MpiKind kind = MpiKind::None;  // what the programs look like (for messages and variables)
  std::string topology_file;     // the daemon's hwloc XML of the set ("" = none)
  bool topology_cache = false;   // opt-in: ranks load topology_file (HWLOC_XMLFILE)
  bool single_node_ompi = false; // opt-in: Open MPI's shared-memory-only transports
};

// Decides which servers a job needs. Pure.
BootstrapPlan plan_bootstrap(MpiMode mode, const std::vector<MpiKind>& app_kinds);

class Bootstrap {
 public:
  struct Events {
    std::function<void(int rank, int code, const std::string& message)> abort;
    std::function<void(int rank, const std::string& why)> protocol_error;
  };

  // appnum[r]: rank r's executable group. Starts PMIx if the plan says so.
  // Throws Error.
  Bootstrap(BootstrapPlan plan, unsigned long long job_id, std::vector<int> appnum, Events events);
  ~Bootstrap();

  // Adds rank r's variables to env and returns the fd the rank must inherit
  // (-1 when none).
  int prepare_rank(int rank, Environment& env);
  // Closes the launcher's copy of rank r's inherited fd.
  void rank_spawned(int rank);
  // Takes over rank r's PMI-1 channel from the front (fd -1: the rank had
  // already hung up). For a rank started by someone else in this process.
  void adopt_channel(int rank, int fd);

  // Appends the fds to poll; handle() takes the same entries back.
  void add_poll_fds(std::vector<pollfd>& fds);
  // REQUIRES: fds[first..] are the entries add_poll_fds appended.
  void handle(const std::vector<pollfd>& fds, std::size_t first);
  // Processes whatever is pending without waiting (call before reaping, so a
  // finalize that preceded an exit is seen first).
  void drain();

  // The rank got through MPI_Init (either protocol) but not MPI_Finalize.
  bool unfinalized(int rank) const;
  // The rank spoke to either server at all.
  bool contacted(int rank) const;
  const BootstrapPlan& plan() const { return plan_; }
  // The job's private directory ("" when none): the daemon removes it if we
  // are killed before we can.
  const std::string& job_dir() const { return dir_; }

 private:
  void read_pmi(int rank);
  void take_pmix_events();

  BootstrapPlan plan_;
  int size_;
  Events events_;
  std::string dir_;  // per-job directory (PMIx, Open MPI session and shm files)
  std::unique_ptr<pmi::SimpleEngine> engine_;
  std::vector<Fd> pmi_fds_;    // launcher's ends
  std::vector<Fd> child_fds_;  // ranks' ends until spawned
  std::unique_ptr<PmixServer> pmix_;
  std::vector<char> pmix_connected_;
  std::vector<char> pmix_finalized_;
  std::vector<int> polled_;  // ranks behind the PMI entries of the last add_poll_fds
};

}  // namespace jiffy
