// PmixNames: the host's side of PMIx_Publish / PMIx_Lookup / PMIx_Unpublish,
// which Open MPI's MPI_Comm_spawn and MPI_Comm_accept/connect use to swap
// the two worlds' members ("<port>:accept", "<port>:connect", ...; see
// docs/spawn-research.md 2.1). One launcher, one node, one user: every
// range is the whole job, so the store is a map from key to value.
//
// A lookup asked to wait (PMIX_WAIT) for a key nobody published yet is
// held and answered by the publish that brings it, or failed: by fail_all
// (the server is going), or because its key is one of a port abandoned
// (abandon: a spawned world's rank left before it connected, and its parent
// would otherwise wait for it in MPI_Comm_spawn for PMIX_TIMEOUT, 600 s in
// Open MPI 4.1; the keys of a connect/accept start with "<port>:").
//
// Called on libpmix's progress thread (the upcalls) and on the launcher's
// (fail_all); a mutex guards the store, and libpmix's callbacks are called
// with it released.
#pragma once

#include <pmix_server.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace jiffy {

class PmixNames {
 public:
  PmixNames() = default;
  ~PmixNames();
  PmixNames(const PmixNames&) = delete;
  PmixNames& operator=(const PmixNames&) = delete;

  pmix_status_t publish(const pmix_proc_t* proc, const pmix_info_t info[], size_t ninfo);
  pmix_status_t lookup(const pmix_proc_t* proc, char** keys, const pmix_info_t info[], size_t ninfo,
                       pmix_lookup_cbfunc_t cbfunc, void* cbdata);
  pmix_status_t unpublish(char** keys);
  // Every waiting lookup fails (PMIX_ERR_NOT_FOUND).
  void fail_all();
  // Lookups of keys "<port>:..." fail, now and from now on.
  void abandon(const std::string& port);

 private:
  struct Entry {
    pmix_proc_t owner{};
    pmix_value_t value{};
    bool first_read = false;  // PMIX_PERSIST_FIRST_READ: gone once looked up
  };
  struct Waiter {
    std::vector<std::string> keys;
    pmix_lookup_cbfunc_t cbfunc = nullptr;
    void* cbdata = nullptr;
  };
  // Answers waiter w if all its keys are there (taking first-read ones);
  // false otherwise. REQUIRES: mutex_ held.
  bool try_answer(const Waiter& w, std::vector<pmix_pdata_t>* out);
  void erase(std::map<std::string, Entry>::iterator it);

  std::mutex mutex_;
  std::map<std::string, Entry> entries_;
  bool abandoned(const Waiter& w) const;  // REQUIRES: mutex_ held

  std::vector<Waiter> waiters_;
  std::vector<std::string> abandoned_;  // "<port>:" prefixes
};

}  // namespace jiffy
