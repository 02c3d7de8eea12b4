#include "launch/hosts.h"

#include <unistd.h>

#include <fstream>
#include <sstream>

#include "util/error.h"

namespace jiffy {

std::string host_of_entry(std::string_view entry) {
  std::size_t start = entry.find_first_not_of(" \t");
  if (start == std::string_view::npos) return "";
  entry.remove_prefix(start);
  std::size_t end = entry.find_first_of(" \t");
  std::string_view host = entry.substr(0, end);
  // "node:4": a slot count; but an IPv6 address ("::1") is all colons.
  if (std::size_t colon = host.rfind(':'); colon != std::string_view::npos && host.find(':') == colon) {
    host = host.substr(0, colon);
  }
  return std::string(host);
}

bool is_this_host(std::string_view host, std::string_view hostname) {
  if (host == "localhost" || host == "localhost.localdomain" || host == "::1" || host.starts_with("127.")) {
    return true;
  }
  if (host.empty() || hostname.empty()) return false;
  auto short_name = [](std::string_view n) { return n.substr(0, n.find('.')); };
  return host == hostname || host == short_name(hostname) || short_name(host) == hostname;
}

std::vector<std::string> hostfile_hosts(std::string_view text) {
  std::vector<std::string> hosts;
  std::istringstream in{std::string(text)};
  for (std::string line; std::getline(in, line);) {
    line = line.substr(0, line.find('#'));
    if (std::string h = host_of_entry(line); !h.empty()) hosts.push_back(std::move(h));
  }
  return hosts;
}

void check_hosts(const LaunchOptions& opt) {
  if (opt.hosts.empty() && opt.hostfile.empty()) return;
  char buf[256] = {};
  std::string hostname = ::gethostname(buf, sizeof buf - 1) == 0 ? buf : "";
  std::vector<std::string> hosts;
  for (const std::string& h : opt.hosts) hosts.push_back(host_of_entry(h));
  if (!opt.hostfile.empty()) {
    std::ifstream in(opt.hostfile);
    if (!in) throw_errno("cannot read host file " + opt.hostfile);
    std::stringstream text;
    text << in.rdbuf();
    std::vector<std::string> listed = hostfile_hosts(text.str());
    if (listed.empty()) throw Error("host file " + opt.hostfile + " lists no host");
    hosts.insert(hosts.end(), listed.begin(), listed.end());
  }
  for (const std::string& h : hosts) {
    if (!is_this_host(h, hostname)) {
      throw Error("jiffy runs jobs on this machine (" + hostname + ") only, and '" + h +
                  "' is another; for several machines, use the site's scheduler (srun, flux run)");
    }
  }
}

}  // namespace jiffy
