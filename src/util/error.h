// jiffy's one error currency.
//
// Every failure that a caller may report or recover from is a jiffy::Error: a
// one-line, human-readable message plus, where the failure came from the
// kernel, the errno it carried. errno is converted exactly once, at the
// syscall boundary, by throw_errno(). Library code never exits the process;
// the executables catch Error at the top and print "jiffy: <message>".
#pragma once

#include <stdexcept>
#include <string>

namespace jiffy {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, int sys_errno = 0)
      : std::runtime_error(message), errno_(sys_errno) {}
  // The errno behind this error, or 0 when it did not come from a syscall.
  int sys_errno() const { return errno_; }

 private:
  int errno_;
};

// Throws Error("<what>: <strerror(errno)>") carrying the current errno.
[[noreturn]] void throw_errno(const std::string& what);

}  // namespace jiffy
