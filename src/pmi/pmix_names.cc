#include "pmi/pmix_names.h"

#include <cstring>

namespace jiffy {

namespace {

// Directives that come with a publish or lookup, not data (as PRRTE's data
// server tells them apart); libpmix adds the caller's uid and gid itself.
bool is_directive(const char* key) {
  for (const char* d : {PMIX_RANGE, PMIX_PERSISTENCE, PMIX_USERID, PMIX_GRPID, PMIX_TIMEOUT, PMIX_WAIT}) {
    if (std::strncmp(key, d, PMIX_MAX_KEYLEN) == 0) return true;
  }
  return false;
}

bool wants_wait(const pmix_info_t info[], size_t ninfo) {
  for (size_t i = 0; i < ninfo; ++i) {
    if (std::strncmp(info[i].key, PMIX_WAIT, PMIX_MAX_KEYLEN) != 0) continue;
    // Open MPI passes a bool; the standard once said int: either, non-zero.
    if (info[i].value.type == PMIX_BOOL) return info[i].value.data.flag;
    if (info[i].value.type == PMIX_INT) return info[i].value.data.integer != 0;
    return true;
  }
  return false;
}

void release(std::vector<pmix_pdata_t>& data) {
  for (pmix_pdata_t& d : data) PMIx_Value_destruct(&d.value);
  data.clear();
}

}  // namespace

PmixNames::~PmixNames() {
  for (auto& [key, e] : entries_) PMIx_Value_destruct(&e.value);
}

void PmixNames::erase(std::map<std::string, Entry>::iterator it) {
  PMIx_Value_destruct(&it->second.value);
  entries_.erase(it);
}

pmix_status_t PmixNames::publish(const pmix_proc_t* proc, const pmix_info_t info[], size_t ninfo) {
  bool first_read = false;
  for (size_t i = 0; i < ninfo; ++i) {
    if (std::strncmp(info[i].key, PMIX_PERSISTENCE, PMIX_MAX_KEYLEN) == 0 &&
        info[i].value.type == PMIX_PERSIST) {
      first_read = info[i].value.data.persist == PMIX_PERSIST_FIRST_READ;
    }
  }
  struct Answer {
    Waiter w;
    std::vector<pmix_pdata_t> data;
  };
  std::vector<Answer> answers;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < ninfo; ++i) {
      if (is_directive(info[i].key)) continue;
      std::string key(info[i].key, strnlen(info[i].key, PMIX_MAX_KEYLEN));
      if (entries_.count(key)) return PMIX_ERR_DUPLICATE_KEY;
    }
    for (size_t i = 0; i < ninfo; ++i) {
      if (is_directive(info[i].key)) continue;
      std::string key(info[i].key, strnlen(info[i].key, PMIX_MAX_KEYLEN));
      Entry e;
      if (proc) e.owner = *proc;
      e.first_read = first_read;
      if (PMIx_Value_xfer(&e.value, &info[i].value) != PMIX_SUCCESS) return PMIX_ERR_NOMEM;
      entries_.emplace(std::move(key), e);
    }
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      Answer a{*it, {}};
      if (try_answer(*it, &a.data)) {
        answers.push_back(std::move(a));
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (Answer& a : answers) {
    a.w.cbfunc(PMIX_SUCCESS, a.data.data(), a.data.size(), a.w.cbdata);
    release(a.data);
  }
  return PMIX_OPERATION_SUCCEEDED;
}

bool PmixNames::try_answer(const Waiter& w, std::vector<pmix_pdata_t>* out) {
  for (const std::string& k : w.keys) {
    if (!entries_.count(k)) return false;
  }
  for (const std::string& k : w.keys) {
    auto it = entries_.find(k);
    pmix_pdata_t d;
    PMIX_PDATA_CONSTRUCT(&d);
    d.proc = it->second.owner;
    std::strncpy(d.key, k.c_str(), PMIX_MAX_KEYLEN);
    PMIx_Value_xfer(&d.value, &it->second.value);
    out->push_back(d);
    if (it->second.first_read) erase(it);
  }
  return true;
}

pmix_status_t PmixNames::lookup(const pmix_proc_t*, char** keys, const pmix_info_t info[], size_t ninfo,
                                pmix_lookup_cbfunc_t cbfunc, void* cbdata) {
  Waiter w{{}, cbfunc, cbdata};
  for (char** k = keys; k && *k; ++k) w.keys.emplace_back(*k);
  if (w.keys.empty() || !cbfunc) return PMIX_ERR_BAD_PARAM;
  std::vector<pmix_pdata_t> data;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (abandoned(w)) return PMIX_ERR_NOT_FOUND;
    if (!try_answer(w, &data)) {
      if (!wants_wait(info, ninfo)) return PMIX_ERR_NOT_FOUND;
      waiters_.push_back(std::move(w));
      return PMIX_SUCCESS;  // answered by a publish, or fail_all
    }
  }
  // libpmix packs the answer before the call returns (pmix_server.c
  // lookup_cbfunc), so the data need live no longer.
  cbfunc(PMIX_SUCCESS, data.data(), data.size(), cbdata);
  release(data);
  return PMIX_SUCCESS;
}

pmix_status_t PmixNames::unpublish(char** keys) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (char** k = keys; k && *k; ++k) {
    auto it = entries_.find(*k);
    if (it != entries_.end()) erase(it);
  }
  return PMIX_OPERATION_SUCCEEDED;
}

bool PmixNames::abandoned(const Waiter& w) const {
  for (const std::string& k : w.keys) {
    for (const std::string& prefix : abandoned_) {
      if (k.compare(0, prefix.size(), prefix) == 0) return true;
    }
  }
  return false;
}

void PmixNames::abandon(const std::string& port) {
  std::vector<Waiter> failed;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    abandoned_.push_back(port + ":");
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (abandoned(*it)) {
        failed.push_back(*it);
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const Waiter& w : failed) w.cbfunc(PMIX_ERR_NOT_FOUND, nullptr, 0, w.cbdata);
}

void PmixNames::fail_all() {
  std::vector<Waiter> waiting;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    waiting.swap(waiters_);
  }
  for (const Waiter& w : waiting) w.cbfunc(PMIX_ERR_NOT_FOUND, nullptr, 0, w.cbdata);
}

}  // namespace jiffy
