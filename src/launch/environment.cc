#include "launch/environment.h"

#include <unistd.h>

#include <cstring>

namespace jiffy {

Environment Environment::inherited() {
  Environment e;
  for (char** p = ::environ; p && *p; ++p) {
    if (std::strchr(*p, '=')) e.entries_.emplace_back(*p);
  }
  return e;
}

std::size_t Environment::find(const std::string& name) const {
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    const std::string& e = entries_[i];
    if (e.size() > name.size() && e[name.size()] == '=' && e.compare(0, name.size(), name) == 0) {
      return i;
    }
  }
  return entries_.size();
}

void Environment::set(const std::string& name, const std::string& value) {
  std::size_t i = find(name);
  if (i == entries_.size()) {
    entries_.push_back(name + "=" + value);
  } else {
    entries_[i] = name + "=" + value;
  }
}

void Environment::unset(const std::string& name) {
  std::size_t i = find(name);
  if (i != entries_.size()) entries_.erase(entries_.begin() + static_cast<long>(i));
}

std::optional<std::string> Environment::get(const std::string& name) const {
  std::size_t i = find(name);
  if (i == entries_.size()) return std::nullopt;
  return entries_[i].substr(name.size() + 1);
}

void Environment::apply(const std::vector<EnvSetting>& settings, const Environment& caller) {
  for (const EnvSetting& s : settings) {
    if (s.value) {
      set(s.name, *s.value);
    } else if (auto v = caller.get(s.name)) {
      set(s.name, *v);
    }
  }
}

std::vector<char*> Environment::envp() {
  std::vector<char*> p;
  p.reserve(entries_.size() + 1);
  for (std::string& e : entries_) p.push_back(e.data());
  p.push_back(nullptr);
  return p;
}

Environment group_environment(const LaunchOptions& opt, std::size_t group, const Environment& caller) {
  EnvBase base = opt.apps[group].env_base.value_or(opt.env_base);
  Environment env = base == EnvBase::All ? caller : Environment();
  env.apply(opt.genv, caller);
  env.apply(opt.apps[group].env, caller);
  return env;
}

}  // namespace jiffy
