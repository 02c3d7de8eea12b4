// The environment each rank starts with: the caller's (or none, -genvnone),
// then the global settings (-genv, -x, -genvlist), then its group's (-env),
// then the variables jiffy itself gives every rank.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "launch/options.h"

namespace jiffy {

// An environment under construction: "NAME=value" strings, one per name.
class Environment {
 public:
  // The caller's environment (environ).
  static Environment inherited();
  void set(const std::string& name, const std::string& value);
  void unset(const std::string& name);
  std::optional<std::string> get(const std::string& name) const;
  void apply(const std::vector<EnvSetting>& settings, const Environment& caller);
  // A NULL-terminated array for execve; valid while *this is unchanged.
  std::vector<char*> envp();
  const std::vector<std::string>& entries() const { return entries_; }

 private:
  std::size_t find(const std::string& name) const;
  std::vector<std::string> entries_;
};

// The environment shared by the ranks of app group `group`, before per-rank
// variables. `caller` is the launcher's own environment.
Environment group_environment(const LaunchOptions& opt, std::size_t group, const Environment& caller);

}  // namespace jiffy
