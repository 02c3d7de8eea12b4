#include "daemon/tags.h"

#include "util/error.h"

namespace jiffy {

JobId TagRegistry::owner(const std::string& tag) const {
  auto it = owner_.find(tag);
  return it == owner_.end() ? 0 : it->second;
}

void TagRegistry::claim(const std::string& tag, JobId job) {
  if (tag.empty()) return;
  auto [it, added] = owner_.emplace(tag, job);
  if (!added && it->second != job) {
    throw Error("tag " + tag + " belongs to job " + std::to_string(it->second));
  }
}

void TagRegistry::release(const std::string& tag, JobId job) {
  auto it = owner_.find(tag);
  if (it != owner_.end() && it->second == job) owner_.erase(it);
}

}  // namespace jiffy
