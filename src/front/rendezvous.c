/* The PMIx rendezvous of a plain program's job (src/launch/bootstrap.h says
 * why and how): a loopback TCP socket listening, and what each rank is told
 * about it, as jiffy-launch's open_rendezvous and rendezvous_environment
 * make them (tests/e2e/test_front.py checks that both launchers give a rank
 * the same). The front never accepts on it: a rank that connects is an Open
 * MPI rank behind a wrapper, and its first connection hands the job over
 * (job.c), as a rank that speaks PMI-1 does. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "front/front.h"

int rendezvous_open(int* port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  if (bind(fd, (struct sockaddr*)&a, sizeof a) != 0 || listen(fd, SOMAXCONN) != 0 ||
      getsockname(fd, (struct sockaddr*)&a, &len) != 0) {
    close(fd);
    return -1;
  }
  *port = ntohs(a.sin_port);
  return fd;
}

void rendezvous_environment(int rank, int size, const char* tag, int port, int single_node,
                            void (*set)(void* ctx, const char* name, const char* value), void* ctx) {
  char r[16], nspace[64], uri[64];
  (void)size; /* the world's size is the PMIx server's to tell */
  snprintf(r, sizeof r, "%d", rank);
  snprintf(nspace, sizeof nspace, "jiffy.%s", tag);
  snprintf(uri, sizeof uri, "pmix-server.0;tcp4://127.0.0.1:%d", port);
  set(ctx, "PMIX_NAMESPACE", nspace);
  set(ctx, "PMIX_RANK", r);
  static const char* uris[] = {"PMIX_SERVER_URI41", "PMIX_SERVER_URI4", "PMIX_SERVER_URI3",
                               "PMIX_SERVER_URI2", "PMIX_SERVER_URI21"};
  for (size_t i = 0; i < sizeof uris / sizeof uris[0]; ++i) set(ctx, uris[i], uri);
  set(ctx, "PMIX_SECURITY_MODE", "native");
  set(ctx, "PMIX_BFROP_BUFFER_TYPE", "PMIX_BFROP_BUFFER_NON_DESC");
  set(ctx, "PMIX_GDS_MODULE", "hash");
  /* Defaults: a value the caller chose stays. */
  /* Bootstrap::prepare_rank's single-node profile (pml ob1, btl self,vader),
   * else no cm PML. */
  const char* defaults[][2] = {{"OMPI_MCA_btl", single_node ? "self,vader" : NULL},
                               {"OMPI_MCA_pml", single_node ? "ob1" : "^cm"},
                               {"OMPI_MCA_schizo", "^orte"},
                               {"OMPI_MCA_hwloc_base_binding_policy", "none"},
                               {"OMPI_MCA_orte_externally_bound", "1"}};
  for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; ++i) {
    if (defaults[i][1] && !getenv(defaults[i][0])) set(ctx, defaults[i][0], defaults[i][1]);
  }
  /* No OMPI_COMM_WORLD_*: see ompi_rank_environment (launch/bootstrap.cc). */
}
