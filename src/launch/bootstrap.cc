#include "launch/bootstrap.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "launch/client.h"
#include "launch/environment.h"
#include "launch/rank_defaults.h"
#include "pmi/pmix_server.h"
#include "pmi/simple_engine.h"
#include "util/error.h"
#include "util/sys.h"

namespace jiffy {

namespace {

std::string make_job_dir(unsigned long long job_id) {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/jiffy-" +
                      std::to_string(::geteuid()) + "-job" + std::to_string(job_id) + "-XXXXXX";
  if (!::mkdtemp(templ.data())) throw_errno("cannot create the job directory " + templ);
  return templ;
}

// Sets name unless the user already chose a value for it.
void set_default(Environment& env, const std::string& name, const std::string& value) {
  if (!env.get(name)) env.set(name, value);
}

// A loopback TCP socket listening on a port of the kernel's choosing (the
// only transport libpmix 4 clients speak).
Fd open_rendezvous() {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) throw_errno("PMIx rendezvous: socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd.get(), SOMAXCONN) != 0) {
    throw_errno("PMIx rendezvous: bind/listen on 127.0.0.1");
  }
  return fd;
}

int port_of(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0 || a.sin_family != AF_INET) {
    throw Error("PMIx rendezvous: not a TCP socket");
  }
  return ntohs(a.sin_port);
}

std::string join_ints(const std::vector<int>& v) {
  std::string s;
  for (int x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

// jiffy binds the ranks itself, as Flux does: Open MPI must not rebind.
void ompi_binding_defaults(Environment& env) {
  set_default(env, "OMPI_MCA_hwloc_base_binding_policy", "none");
  set_default(env, "OMPI_MCA_orte_externally_bound", "1");
}

// An Open MPI 4 rank opens (dlopen) every component of each framework it
// initialises and closes those not selected. For a rank served by jiffy's
// PMIx server the choice in these is fixed: ess pmi, pmix ext*, state app,
// errmgr default_app, schizo ompi. The rest are mpirun's and its daemons'
// (hnp, orted), tools', singletons', batch systems' (slurm, alps, lsf, tm,
// flux, jsm, moab) and containers' (singularity; schizo orte is B7's).
// Excluding them (an exclusion names none that must exist, so every build
// of Open MPI 4 takes it) saves ~8 ms of each rank's CPU, ~14% of a short
// test's (bench/README.md). mpirun gives its ranks the same kind of list
// (OMPI_MCA_pmix=^s1,s2,cray,isolated). A user's own value wins.
constexpr std::pair<const char*, const char*> kOmpiAppProcess[] = {
    {"OMPI_MCA_ess", "^env,hnp,singleton,tool,slurm,alps,lsf,tm"},
    {"OMPI_MCA_pmix", "^isolated,flux,s1,s2,cray"},
    {"OMPI_MCA_state", "^hnp,orted,novm,tool,dvm"},
    {"OMPI_MCA_errmgr", "^default_hnp,default_orted,default_tool,dvm"},
    {"OMPI_MCA_schizo", "^orte,slurm,flux,jsm,alps,moab,singularity"},
};

// What an Open MPI rank learns of its place (mpirun's variables, which
// scripts and tools read). Open MPI programs and --mpi=pmix jobs only: a
// program that may merely wrap one (the rendezvous) does not get them, as
// Open MPI needs none of them under PMIx, and harnesses tell the mpiexec's
// family by them (PETSc's configure runs `mpiexec -n 1 printenv` and stops
// when it finds OMPI_COMM_WORLD_SIZE while PETSc's MPI is MPICH).
void ompi_rank_environment(Environment& env, const std::string& r, const std::string& n) {
  ompi_binding_defaults(env);
  env.set("OMPI_COMM_WORLD_SIZE", n);
  env.set("OMPI_COMM_WORLD_RANK", r);
  env.set("OMPI_COMM_WORLD_LOCAL_RANK", r);
  env.set("OMPI_COMM_WORLD_LOCAL_SIZE", n);
  env.set("OMPI_COMM_WORLD_NODE_RANK", r);
}

}  // namespace

std::string pmix_namespace(const std::string& tag) {
  if (tag.empty()) throw Error("a PMIx namespace needs the job's tag");
  return "jiffy." + tag;
}

void rendezvous_environment(Environment& env, int rank, int size, const std::string& nspace, int port) {
  const std::string r = std::to_string(rank);
  const std::string n = std::to_string(size);
  // What setup_fork would say (pmi.md B5), less what only a running server
  // knows: "hash" keeps the data in the connection instead of in the
  // server's shared-memory store files.
  const std::string uri = "pmix-server.0;tcp4://127.0.0.1:" + std::to_string(port);
  env.set("PMIX_NAMESPACE", nspace);
  env.set("PMIX_RANK", r);
  for (const char* v : {"PMIX_SERVER_URI41", "PMIX_SERVER_URI4", "PMIX_SERVER_URI3", "PMIX_SERVER_URI2",
                        "PMIX_SERVER_URI21"}) {
    env.set(v, uri);
  }
  env.set("PMIX_SECURITY_MODE", "native");
  env.set("PMIX_BFROP_BUFFER_TYPE", "PMIX_BFROP_BUFFER_NON_DESC");
  env.set("PMIX_GDS_MODULE", "hash");
  // As prepare_rank gives a PMIx job's ranks (the reasons are there).
  set_default(env, "OMPI_MCA_schizo", "^orte");
  set_default(env, "OMPI_MCA_pml", "^cm");
  ompi_binding_defaults(env);
}

BootstrapPlan plan_bootstrap(MpiMode mode, const std::vector<MpiKind>& app_kinds) {
  BootstrapPlan p;
  for (MpiKind k : app_kinds) {
    // The strongest claim wins: Open MPI > unknown > MPICH > none.
    auto rank = [](MpiKind x) {
      switch (x) {
        case MpiKind::None: return 0;
        case MpiKind::Mpich: return 1;
        case MpiKind::Unknown: return 2;
        case MpiKind::OpenMpi: return 3;
      }
      return 0;
    };
    if (rank(k) > rank(p.kind)) p.kind = k;
  }
  switch (mode) {
    case MpiMode::None: p.pmi1 = false; p.pmix = false; break;
    case MpiMode::Pmi1: p.pmi1 = true; p.pmix = false; break;
    case MpiMode::Pmix: p.pmi1 = false; p.pmix = true; break;
    case MpiMode::Auto:
      p.pmi1 = true;
      p.pmix = p.kind == MpiKind::OpenMpi || p.kind == MpiKind::Unknown;
      // Any program that may hide an Open MPI one (not MPICH's: it is
      // served by PMI-1 whatever runs it).
      for (MpiKind k : app_kinds) p.rendezvous = p.rendezvous || (!p.pmix && k == MpiKind::None);
      break;
  }
  // Not for a wrapper (a script may run mpirun, whose daemons need what
  // kOmpiAppProcess leaves out) nor for --mpi=pmix on another program.
  p.ompi_app = p.pmix && !app_kinds.empty() &&
               std::all_of(app_kinds.begin(), app_kinds.end(), [](MpiKind k) { return k == MpiKind::OpenMpi; });
  return p;
}

PreparedPmix::PreparedPmix(const BootstrapPlan& plan, unsigned long long job_id, const std::string& tag,
                           std::vector<int> appnum)
    : topology_file_(plan.topology_file), tag_(tag), appnum_(std::move(appnum)),
      dir_(make_job_dir(job_id)) {}

void PreparedPmix::start() {
  PmixJob job;
  job.nspace = pmix_namespace(tag_);
  job.size = static_cast<int>(appnum_.size());
  job.appnum = appnum_;
  job.dir = dir_;
  job.uid = ::geteuid();
  job.gid = ::getegid();
  job.topology_xml = read_file_or_empty(topology_file_);
  server_ = PmixServer::start(job);
}

PreparedPmix::~PreparedPmix() {
  server_.reset();  // deregisters and finalizes before its directory goes
  if (!dir_.empty()) remove_tree(dir_);
}

Bootstrap::Bootstrap(BootstrapPlan plan, unsigned long long job_id, std::vector<int> appnum,
                     Events events, std::unique_ptr<PreparedPmix> prepared)
    : plan_(plan), size_(static_cast<int>(appnum.size())), events_(std::move(events)) {
  kvs_prefix_ = "jiffy_" + std::to_string(job_id) + "_" + std::to_string(::getpid());
  pmi1_.resize(1);
  if (plan_.pmi1) {
    pmi::JobInfo info;
    info.size = size_;
    info.kvsname = kvs_prefix_;
    info.appnum = appnum;
    info.universe_size = size_;
    pmi1_[0] = make_pmi1_world(0, std::move(info));
  }
  if (plan_.pmix) {
    if (!prepared) prepared = std::make_unique<PreparedPmix>(plan_, job_id, plan_.tag, appnum);
    if (!prepared->started()) prepared->start();  // on failure, its destructor cleans up
    dir_ = std::exchange(prepared->dir_, std::string());
    pmix_ = std::move(prepared->server_);
    pmix_connected_.assign(1, std::vector<char>(static_cast<std::size_t>(size_), 0));
    pmix_finalized_ = pmix_connected_;
  }
  if (plan_.rendezvous && !plan_.pmix) {
    job_id_ = job_id;
    appnum_ = appnum;
    if (plan_.rendezvous_fd >= 0) {
      rendezvous_.reset(plan_.rendezvous_fd);
      ::fcntl(rendezvous_.get(), F_SETFD, FD_CLOEXEC);
      ::fcntl(rendezvous_.get(), F_SETFL, ::fcntl(rendezvous_.get(), F_GETFL) | O_NONBLOCK);
    } else {
      try {
        rendezvous_ = open_rendezvous();
      } catch (const Error&) {
        // No loopback TCP (a bare network namespace): plain programs still
        // run, and neither could an Open MPI rank reach any PMIx server.
      }
    }
    if (rendezvous_) port_ = port_of(rendezvous_.get());
    pmix_connected_.assign(1, std::vector<char>(static_cast<std::size_t>(size_), 0));
    pmix_finalized_ = pmix_connected_;
  }
}

Bootstrap::Pmi1World Bootstrap::make_pmi1_world(int world, pmi::JobInfo info) {
  Pmi1World w;
  const auto n = static_cast<std::size_t>(info.size);
  pmi::SimpleEngine::Callbacks cb;
  cb.send = [this, world](int rank, std::string_view reply) {
    try {
      write_all(pmi1_[static_cast<std::size_t>(world)].fds[static_cast<std::size_t>(rank)].get(), reply, "PMI reply");
    } catch (const Error&) {
      // The rank is gone; its exit is reported through SIGCHLD.
    }
  };
  cb.abort = [this, world](int rank, int code) { events_.abort(world, rank, code, ""); };
  cb.finalized = [](int) {};
  cb.protocol_error = [this, world](int rank, const std::string& why) { events_.protocol_error(world, rank, why); };
  if (events_.spawn) {
    cb.spawn = [this, world](int rank, pmi::SpawnRequest request) { on_pmi1_spawn(world, rank, std::move(request)); };
  }
  w.engine = std::make_unique<pmi::SimpleEngine>(std::move(info), std::move(cb));
  w.fds.resize(n);
  w.child_fds.resize(n);
  return w;
}

const pmi::SimpleEngine* Bootstrap::engine(int world) const {
  const auto w = static_cast<std::size_t>(world);
  return w < pmi1_.size() ? pmi1_[w].engine.get() : nullptr;
}

// A PMI-1 spawn, in the launcher's terms: the "path" info is where the
// program is (hydra's meaning), "wdir" where it runs; "host", "hosts" and
// "hostfile" can only name this machine (Job checks), and other keys mean
// nothing here (hydra ignores them too).
void Bootstrap::on_pmi1_spawn(int world, int rank, pmi::SpawnRequest request) {
  SpawnAsk ask;
  ask.world = world;
  ask.rank = rank;
  for (const pmi::SpawnApp& a : request.apps) {
    PmixSpawnApp app;
    app.command = a.execname;
    app.nprocs = a.nprocs;
    for (const auto& [key, value] : a.info) {
      if (key == "wdir") app.wdir = value;
      if (key == "host" || key == "hosts") app.hosts.push_back(value);
      if (key == "hostfile") app.hostfile = value;
      if (key == "path" && !value.empty() && a.execname.find('/') == std::string::npos) {
        app.command = value + "/" + a.execname;
      }
    }
    app.argv.push_back(a.execname);
    app.argv.insert(app.argv.end(), a.args.begin(), a.args.end());
    ask.apps.push_back(std::move(app));
  }
  ask.id = ++last_spawn_;
  spawns_[ask.id] = PendingSpawn{true, world, rank, 0, std::move(request.preput)};
  events_.spawn(std::move(ask));
}

Bootstrap::~Bootstrap() {
  pmix_.reset();  // deregisters and finalizes before its directory goes
  if (!dir_.empty()) remove_tree(dir_);
}

int Bootstrap::prepare_rank(int rank, Environment& env) {
  int inherit = plan_.pmi1 ? open_pmi1_channel(0, rank, env) : -1;
  rank_defaults(env);
  if (plan_.pmix && plan_.single_node_ompi) {
    // As behind the rendezvous (rank_defaults), plus TCP on loopback for
    // MPI_Comm_spawn: vader connects a job's own ranks only, and the
    // parents need the transport to their children from their own
    // MPI_Init (prepare_world_rank).
    set_default(env, "OMPI_MCA_btl", JIFFY_OMPI_SINGLE_NODE_BTL);
    set_default(env, "OMPI_MCA_btl_tcp_if_include", JIFFY_OMPI_TCP_IF);
  }
  if (rendezvous_) {
    if (plan_.single_node_ompi) set_default(env, "OMPI_MCA_pml", "ob1");
    rendezvous_environment(env, rank, size_, pmix_namespace(plan_.tag), port_);
  }
  if (plan_.pmix) {
    pmix_->prepare_rank(rank, env);
    pmix_rank_environment(rank, size_, env);
  }
  return inherit;
}

int Bootstrap::open_pmi1_channel(int world, int rank, Environment& env) {
  Pmi1World& w = pmi1_.at(static_cast<std::size_t>(world));
  const std::string r = std::to_string(rank);
  const std::string n = std::to_string(w.fds.size());
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) throw_errno("socketpair");
  w.fds[static_cast<std::size_t>(rank)].reset(sv[0]);
  w.child_fds[static_cast<std::size_t>(rank)].reset(sv[1]);
  env.set("PMI_FD", std::to_string(sv[1]));
  env.set("PMI_RANK", r);
  env.set("PMI_SIZE", n);
  // What hydra gives its ranks, and what tools read to learn the layout.
  env.set("MPI_LOCALNRANKS", n);
  env.set("MPI_LOCALRANKID", r);
  return sv[1];
}

// What every rank of an MPI job gets, whichever server: the topology cache,
// MPICH's UCX on one node, Open MPI's single-node transports.
void Bootstrap::rank_defaults(Environment& env) const {
  if (plan_.topology_cache && !plan_.topology_file.empty() && (plan_.pmi1 || plan_.pmix || plan_.rendezvous) &&
      !env.get("HWLOC_XMLFILE")) {
    // hwloc in the rank (MPICH, Open MPI, any hwloc user) loads the daemon's
    // XML instead of crawling /sys and PCI; THISSYSTEM makes binding still
    // work. The XML holds what discovery would find (core/topology.h), so
    // the rank sees the same machine. A user's own XML is left alone, and
    // so is its THISSYSTEM (it may describe another machine).
    env.set("HWLOC_XMLFILE", plan_.topology_file);
    set_default(env, "HWLOC_THISSYSTEM", "1");
    // Loading XML needs none of hwloc's plugins (the XML already holds the
    // I/O devices), yet hwloc_topology_init dlopens them all: libxml2 with
    // ICU and libstdc++, OpenCL, X11 for GL, libpciaccess. An empty plugin
    // path (the built-in XML reader takes over) saves ~5 ms of each rank's
    // MPI_Init (bench/README.md).
    set_default(env, "HWLOC_PLUGINS_PATH", JIFFY_NO_HWLOC_PLUGINS);
  }
  if (plan_.ucx_shm && plan_.pmi1 && plan_.kind == MpiKind::Mpich) {
    // MPICH here is ch4:ucx. On one node UCX needs loopback and shared
    // memory only; without this it opens and probes every transport it
    // knows (TCP on each interface, InfiniBand, ...) in each rank's
    // MPI_Init: ~4 ms of CPU per job measured (bench/README.md). Not for a
    // job with GPUs (its transfers need UCX's cuda/rocm transports), and a
    // user's UCX_TLS wins.
    if (!env.get("UCX_TLS")) {
      env.set("UCX_TLS", JIFFY_UCX_SHM_TLS);
      // Nor need it load the InfiniBand and RDMA-CM modules (libibverbs,
      // librdmacm and theirs) that those transports would come from.
      set_default(env, "UCX_MODULES", JIFFY_UCX_SHM_MODULES);
      // The shared-memory transports (posix and sysv, each) grow their
      // receive pools 512 buffers of 8 KB at a time: MPI_Init faults in
      // megabytes it does not use, expensive in a VM (a 2-rank job: 43 ms
      // of each rank's CPU before, 29 ms after; wall 38 -> 24 ms; a flood
      // of 2,000 eager messages and an allreduce loop unchanged;
      // bench/README.md). Only with our UCX_TLS: under another, UCX warns
      // about a variable no transport of it reads.
      set_default(env, "UCX_MM_RX_BUFS_GROW", JIFFY_UCX_SHM_RX_BUFS_GROW);
    }
  }
  if (rendezvous_ && plan_.single_node_ompi) {
    // One node: shared memory and self only (pml ob1, below), skipping UCX's
    // start-up (a 2-rank hello: 0.38x mpirun's wall without, 0.34x with).
    // Not for a job with GPUs (UCX's GPU-aware transports), and a user's
    // own choice of pml or btl wins. (Behind the rendezvous no rank can
    // spawn: its server is a helper with no launcher loop.)
    set_default(env, "OMPI_MCA_btl", "self,vader");
  }
}

void Bootstrap::pmix_rank_environment(int rank, int size, Environment& env) const {
  if (plan_.ompi_app) {
    for (const auto& [name, value] : kOmpiAppProcess) set_default(env, name, value);
  }
  // Open MPI 4.1 takes a direct launch for a singleton unless schizo/orte
  // is out of the way (pmi.md B7).
  set_default(env, "OMPI_MCA_schizo", "^orte");
  // Concurrent jobs must never share Open MPI's shared-memory files.
  set_default(env, "OMPI_MCA_btl_vader_backing_directory", dir_);
  set_default(env, "OMPI_MCA_orte_tmpdir_base", dir_);
  // The cm PML drives NIC-offloaded matching (PSM, PSM2, OFI MTLs). A
  // single-node job never needs it, yet probing those MTLs costs ~200 ms
  // of MPI_Init on a machine without such a NIC (measured: a 2-rank hello
  // takes 300 ms with it, 100 ms without). UCX and ob1 stay available.
  set_default(env, "OMPI_MCA_pml", plan_.single_node_ompi ? "ob1" : "^cm");
  ompi_rank_environment(env, std::to_string(rank), std::to_string(size));
}

int Bootstrap::add_world(int spawn_id, const std::vector<int>& appnum) {
  auto it = spawns_.find(spawn_id);
  if (it == spawns_.end()) throw Error("no such spawn request");
  const int world = worlds_;
  const auto w = static_cast<std::size_t>(world);
  pmi1_.resize(w + 1);
  pmix_connected_.resize(w + 1);
  pmix_finalized_.resize(w + 1);
  if (it->second.pmi1) {
    pmi::JobInfo info;
    info.size = static_cast<int>(appnum.size());
    info.kvsname = kvs_prefix_ + "_" + std::to_string(world);
    info.appnum = appnum;
    info.universe_size = info.size;
    info.preput = it->second.preput;
    pmi1_[w] = make_pmi1_world(world, std::move(info));
  } else {
    if (!pmix_) throw Error("spawning needs the job's PMIx server");
    pmix_->add_world(world, appnum, it->second.host_id);
    pmix_connected_[w].assign(appnum.size(), 0);
    pmix_finalized_[w].assign(appnum.size(), 0);
  }
  ++worlds_;
  return world;
}

int Bootstrap::prepare_world_rank(int world, int rank, Environment& env) {
  const std::size_t w = static_cast<std::size_t>(world);
  if (engine(world)) {
    int fd = open_pmi1_channel(world, rank, env);
    env.set("PMI_SPAWNED", "1");  // as hydra tells a spawned world
    rank_defaults(env);
    return fd;
  }
  // (Open MPI copies the parent's OMPI_MCA_* into the children's app
  // environment: btl as prepare_rank set it.)
  pmix_->prepare_world_rank(world, rank, env);
  pmix_rank_environment(rank, static_cast<int>(pmix_connected_.at(w).size()), env);
  return -1;
}

void Bootstrap::spawn_answer(int spawn_id, bool ok, int world, const std::string& why) {
  auto it = spawns_.find(spawn_id);
  if (it == spawns_.end()) return;
  PendingSpawn p = std::move(it->second);
  spawns_.erase(it);
  if (!p.pmi1) {
    if (pmix_) pmix_->spawn_done(p.host_id, ok, world);
    return;
  }
  auto& asker = pmi1_.at(static_cast<std::size_t>(p.world));
  if (asker.engine) asker.engine->spawn_done(p.rank, ok, why);
}

void Bootstrap::world_rank_lost(const std::string& port) {
  if (pmix_ && !port.empty()) pmix_->abandon_port(port);
}

void Bootstrap::adopt_channel(int rank, int fd) {
  if (!plan_.pmi1) throw Error("a handed-over job needs the PMI-1 server");
  if (fd < 0) {
    pmi1_[0].engine->on_disconnect(rank);
    return;
  }
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  pmi1_[0].fds[static_cast<std::size_t>(rank)].reset(fd);
}

void Bootstrap::rank_spawned(int rank, int world) {
  if (engine(world)) pmi1_[static_cast<std::size_t>(world)].child_fds[static_cast<std::size_t>(rank)].reset();
}

void Bootstrap::add_poll_fds(std::vector<pollfd>& fds) {
  polled_.clear();
  for (std::size_t w = 0; w < pmi1_.size(); ++w) {
    for (std::size_t r = 0; r < pmi1_[w].fds.size(); ++r) {
      if (!pmi1_[w].fds[r]) continue;
      fds.push_back(pollfd{pmi1_[w].fds[r].get(), POLLIN, 0});
      polled_.emplace_back(static_cast<int>(w), static_cast<int>(r));
    }
  }
  if (pmix_) fds.push_back(pollfd{pmix_->event_fd(), POLLIN, 0});
  rendezvous_polled_ = rendezvous_ && !helper_;
  if (rendezvous_polled_) fds.push_back(pollfd{rendezvous_.get(), POLLIN, 0});
  helper_polled_ = static_cast<bool>(helper_);
  if (helper_polled_) fds.push_back(pollfd{helper_.get(), POLLIN, 0});
}

void Bootstrap::handle(const std::vector<pollfd>& fds, std::size_t first) {
  for (std::size_t i = 0; i < polled_.size(); ++i) {
    if (fds[first + i].revents) read_pmi(polled_[i].first, polled_[i].second);
  }
  std::size_t at = first + polled_.size();
  if (pmix_ && fds[at++].revents) take_pmix_events();
  bool connection = rendezvous_polled_ && fds[at++].revents;
  if (helper_polled_ && fds[at].revents) read_helper();
  if (connection && plan_.rendezvous_refuses) {
    rendezvous_.reset();
    events_.failure("a rank is an Open MPI program (it asked for a PMIx server), but --mpi=pmi1 serves "
                    "PMI-1 only: its world would split into singletons; without --mpi=pmi1 jiffy serves it");
  } else if (connection) {
    start_helper();
  }
}

void Bootstrap::drain() {
  if (pmix_) take_pmix_events();
  if (helper_) read_helper();
  for (std::size_t w = 0; w < pmi1_.size(); ++w) {
    for (std::size_t r = 0; r < pmi1_[w].fds.size(); ++r) {
      if (!pmi1_[w].fds[r]) continue;
      pollfd p{pmi1_[w].fds[r].get(), POLLIN, 0};
      if (::poll(&p, 1, 0) > 0) read_pmi(static_cast<int>(w), static_cast<int>(r));
    }
  }
}

void Bootstrap::read_pmi(int world, int rank) {
  Pmi1World& w = pmi1_[static_cast<std::size_t>(world)];
  Fd& fd = w.fds[static_cast<std::size_t>(rank)];
  char buf[8192];
  ssize_t n;
  do {
    n = ::read(fd.get(), buf, sizeof buf);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    w.engine->on_data(rank, std::string_view(buf, static_cast<std::size_t>(n)));
    return;
  }
  // EOF: the rank exited or closed the fd. A disconnect between init and
  // finalize is judged when the rank's exit is reaped (unfinalized()).
  fd.reset();
  w.engine->on_disconnect(rank);
}

void Bootstrap::take_pmix_events() {
  for (const PmixEvent& e : pmix_->take_events()) apply(e);
}

void Bootstrap::apply(const PmixEvent& e) {
  if (e.kind == PmixEvent::Kind::Lost) {
    events_.failure("the shared PMIx server of this job's Open MPI ranks (" + e.message +
                    ") went away: they cannot go on");
    return;
  }
  if (e.world < 0 || static_cast<std::size_t>(e.world) >= pmix_connected_.size()) return;
  std::vector<char>& connected = pmix_connected_[static_cast<std::size_t>(e.world)];
  if (e.rank < 0 || static_cast<std::size_t>(e.rank) >= connected.size()) return;
  std::size_t r = static_cast<std::size_t>(e.rank);
  switch (e.kind) {
    case PmixEvent::Kind::Connected: connected[r] = 1; break;
    case PmixEvent::Kind::Finalized: pmix_finalized_[static_cast<std::size_t>(e.world)][r] = 1; break;
    case PmixEvent::Kind::Abort:  // a spawned world's too: one job, one fate
      events_.abort(e.world, e.rank, e.status, e.message);
      break;
    case PmixEvent::Kind::Spawn: {
      const int id = ++last_spawn_;
      spawns_[id] = PendingSpawn{false, e.world, e.rank, e.spawn_id, {}};
      if (events_.spawn) {
        events_.spawn(SpawnAsk{id, e.world, e.rank, e.apps});
      } else {
        spawn_answer(id, false);
      }
      break;
    }
    case PmixEvent::Kind::Lost: break;  // above
  }
}

// A rank connected to the rendezvous: it is an Open MPI rank (behind a
// wrapper, as a rule), waiting in PMIx_Init for the server. It gets one:
// jiffy-pmix in a helper process of ours, handed the rendezvous socket, the
// connection still waiting on it. The helper dies with us (and is killed
// with whatever the job leaves, as one of our children).
void Bootstrap::start_helper() {
  if (helper_ || !rendezvous_) return;
  try {
    dir_ = make_job_dir(job_id_);
  } catch (const Error& e) {
    rendezvous_.reset();  // the ranks' connections fail: they stop
    events_.failure(std::string("an Open MPI rank needs a PMIx server: ") + e.what());
    return;
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) throw_errno("socketpair");
  Fd ours(sv[0]), theirs(sv[1]);
  std::string exe = daemon_executable();
  exe = exe.substr(0, exe.rfind('/') + 1) + "jiffy-pmix";
  std::vector<std::string> args = {exe,
                                   "--jiffy-pmix-host",
                                   std::to_string(rendezvous_.get()),
                                   std::to_string(theirs.get()),
                                   dir_,
                                   plan_.topology_file,
                                   join_ints(appnum_)};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // The namespace in the environment: anyone can read a process's arguments.
  std::string nspace = std::string(PmixServer::kNamespaceVar) + "=" + pmix_namespace(plan_.tag);
  std::vector<char*> envp;
  for (char** e = environ; *e; ++e) envp.push_back(*e);
  envp.push_back(nspace.data());
  envp.push_back(nullptr);
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork");
  if (pid == 0) {
    // Out of the ranks' group and of the terminal's signals; never our orphan.
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);
    ::fcntl(rendezvous_.get(), F_SETFD, 0);
    ::fcntl(theirs.get(), F_SETFD, 0);
    ::execve(exe.c_str(), argv.data(), envp.data());
    std::fprintf(stderr, "jiffy: cannot run %s: %s\n", exe.c_str(), std::strerror(errno));
    ::_exit(127);
  }
  ::fcntl(ours.get(), F_SETFL, O_NONBLOCK);
  helper_ = std::move(ours);
  rendezvous_.reset();  // the helper's now
}

void Bootstrap::read_helper() {
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(helper_.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) {
      helper_.reset();
      events_.failure("the PMIx server of this job's Open MPI ranks (jiffy-pmix) ended; "
                      "they cannot form their world");
      return;
    }
    helper_buf_.append(buf, static_cast<std::size_t>(n));
  }
  for (std::size_t nl; (nl = helper_buf_.find('\n')) != std::string::npos;) {
    PmixEvent e;
    if (parse_pmix_event(helper_buf_.substr(0, nl), &e)) apply(e);
    helper_buf_.erase(0, nl + 1);
  }
}

bool Bootstrap::unfinalized(int rank, int world) const {
  std::size_t r = static_cast<std::size_t>(rank), w = static_cast<std::size_t>(world);
  if (const pmi::SimpleEngine* e = engine(world); e && e->initialized(rank) && !e->finalized(rank)) return true;
  return w < pmix_connected_.size() && r < pmix_connected_[w].size() && pmix_connected_[w][r] && !pmix_finalized_[w][r];
}

bool Bootstrap::contacted(int rank, int world) const {
  std::size_t r = static_cast<std::size_t>(rank), w = static_cast<std::size_t>(world);
  const pmi::SimpleEngine* e = engine(world);
  return (e && e->ever_connected(rank)) ||
         (w < pmix_connected_.size() && r < pmix_connected_[w].size() && pmix_connected_[w][r]);
}

}  // namespace jiffy
