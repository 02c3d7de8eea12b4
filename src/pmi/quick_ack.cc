// Immediate ACKs on libpmix's client sockets (jiffy-pmix only).
//
// Why. An Open MPI rank talks to our PMIx server over TCP on 127.0.0.1
// (libpmix 4.2 has no other transport), and libpmix leaves Nagle on for its
// client socket. In MPI_Finalize the rank sends three event deregistrations,
// which get no answer, and then the finalize request, which it waits for.
// Our end of the socket, having answered every request so far, is in
// Linux's "pingpong" mode and delays its ACK of an unanswered message by up
// to 40 ms (TCP_DELACK_MIN) for a reply to ride on; the rank's Nagle holds
// the finalize request until that ACK comes. Measured: every Open MPI rank
// spent 40 ms idle in MPI_Finalize (bench/suite_bench.py: 53 ms of a rank's
// wall beyond its CPU time), mpirun's ranks alike.
//
// How. libpmix reads its sockets with read(2), from its own thread, and
// offers no hook for the socket (the host's listener callback only sees the
// accept). So this executable interposes read(): after each read that
// returned data, it sets TCP_QUICKACK on the descriptor, which sends any
// ACK still pending at once. Linux clears the flag again by itself (it is
// not sticky), hence after every read. On anything that is not a TCP
// socket the call fails with ENOTSOCK or EOPNOTSUPP, and is ignored: one
// cheap system call per read, which on this process's descriptors (PMIx
// messages, a few pipes) is noise. errno is what read() left.
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace {

using ReadFn = ssize_t (*)(int, void*, size_t);

// The read() this one stands in front of: libc's, or a sanitizer's
// interceptor of it (which must still see every read).
ssize_t next_read(int fd, void* buf, size_t count) {
  static const ReadFn next = reinterpret_cast<ReadFn>(::dlsym(RTLD_NEXT, "read"));
  if (next) return next(fd, buf, count);
  return static_cast<ssize_t>(::syscall(SYS_read, fd, buf, count));
}

}  // namespace

// The executable's definition is the one the dynamic linker binds libpmix's
// (and libevent's) calls to; glibc's own internal reads are unaffected.
extern "C" ssize_t read(int fd, void* buf, size_t count) {
  const ssize_t n = next_read(fd, buf, count);
  if (n > 0) {
    const int saved = errno;
    const int one = 1;
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
    errno = saved;
  }
  return n;
}
