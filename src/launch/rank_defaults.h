/* Environment defaults that both launchers (the front, in C, and
 * jiffy-launch's Bootstrap::prepare_rank) give ranks: one spelling for both.
 * Each is given only where the user set nothing of the kind; why each pays
 * off is said where it is set (launch/bootstrap.cc). */
#ifndef JIFFY_LAUNCH_RANK_DEFAULTS_H
#define JIFFY_LAUNCH_RANK_DEFAULTS_H

/* HWLOC_PLUGINS_PATH where a topology XML is given: no such directory, so
 * hwloc loads no plugin and reads the XML with its built-in parser. */
#define JIFFY_NO_HWLOC_PLUGINS "/nonexistent-jiffy-no-hwloc-plugins"

/* UCX_TLS and UCX_MODULES for MPICH (ch4:ucx) ranks of a job without GPUs. */
#define JIFFY_UCX_SHM_TLS "self,sm"
#define JIFFY_UCX_SHM_MODULES "^ib,rdmacm"
/* UCX_MM_RX_BUFS_GROW for the same ranks: the shared-memory transports'
 * receive pools grow 32 buffers at a time instead of UCX's 512, so MPI_Init
 * touches far less memory (grown on demand, never capped lower). */
#define JIFFY_UCX_SHM_RX_BUFS_GROW "32"

/* OMPI_MCA_btl and OMPI_MCA_btl_tcp_if_include for the spawned worlds of
 * a single-node Open MPI job: vader connects a job's own ranks only, so
 * the worlds of an MPI_Comm_spawn reach each other over TCP on loopback. */
#define JIFFY_OMPI_SINGLE_NODE_BTL "self,vader,tcp"
#define JIFFY_OMPI_TCP_IF "lo"

#endif
