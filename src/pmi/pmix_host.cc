// PmixServer on libpmix 4.2 (Debian 12): see pmix_server.h for the threading
// contract and ../shared/reference/pmi.md part B for the facts relied on.
#include <hwloc.h>
#include <pmix.h>
#include <pmix_server.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "launch/environment.h"
#include "launch/rank_defaults.h"
#include "pmi/pmix_names.h"
#include "pmi/pmix_server.h"
#include "util/error.h"
#include "util/sys.h"

namespace jiffy {

namespace {

class Host;

// Every job's Host, found by namespace from libpmix's callbacks (which
// carry no context of ours). A callback holds g_mutex while it uses a Host,
// and a Host leaves g_hosts under it once its namespaces are deregistered:
// no callback can then reach it. Lock order: g_mutex, then a Host's own.
// The launcher's thread never holds g_mutex across a libpmix call (which
// may wait for the progress thread, which may wait for g_mutex).
std::mutex g_mutex;
std::vector<Host*> g_hosts;

// libpmix's server: initialised once per process, by the first Host (its
// directory and topology) or by a PmixLibrary (the shared server), and
// finalized when the last user goes.
struct Library {
  int users = 0;
  std::string topology_xml;
  hwloc_topology_t topology = nullptr;
  pmix_topology_t pmix_topology{};
};
Library g_lib;

void library_acquire(const std::string& dir, const std::string& topology_xml, bool rendezvous);
void library_release();

[[noreturn]] void fail(const std::string& what, pmix_status_t rc) {
  throw Error("PMIx: " + what + ": " + PMIx_Error_string(rc));
}

// A pmix_info_t array built with the list API, freed on destruction.
class InfoList {
 public:
  InfoList() : list_(PMIx_Info_list_start()) {}
  ~InfoList() {
    if (list_) PMIx_Info_list_release(list_);
    if (array_.array) PMIx_Data_array_destruct(&array_);
  }
  InfoList(const InfoList&) = delete;
  InfoList& operator=(const InfoList&) = delete;

  void add(const char* key, const void* value, pmix_data_type_t type) {
    pmix_status_t rc = PMIx_Info_list_add(list_, key, value, type);
    if (rc != PMIX_SUCCESS) fail(std::string("adding ") + key, rc);
  }
  void add_string(const char* key, const std::string& v) { add(key, v.c_str(), PMIX_STRING); }
  void add_u32(const char* key, uint32_t v) { add(key, &v, PMIX_UINT32); }
  void add_u16(const char* key, uint16_t v) { add(key, &v, PMIX_UINT16); }
  void add_rank(const char* key, pmix_rank_t v) { add(key, &v, PMIX_PROC_RANK); }
  void add_bool(const char* key, bool v) { add(key, &v, PMIX_BOOL); }
  // Converts to an array; valid while *this lives.
  pmix_data_array_t* array() {
    if (!array_.array) {
      pmix_status_t rc = PMIx_Info_list_convert(list_, &array_);
      if (rc != PMIX_SUCCESS) fail("converting info list", rc);
    }
    return &array_;
  }
  pmix_info_t* info() { return static_cast<pmix_info_t*>(array()->array); }
  size_t size() { return array()->size; }

 private:
  void* list_;
  pmix_data_array_t array_{};
};

// The ranks of one namespace: the job's own (world 0), or those one
// MPI_Comm_spawn started (world n).
struct World {
  std::string nspace;
  std::vector<int> appnum;  // per rank
  std::optional<pmix_proc_t> parent;  // who spawned it
  // Per rank: the variables setup_fork gave it (its registration done).
  std::vector<std::vector<std::pair<std::string, std::string>>> fork_env;
};

std::vector<int> app_ranks(const std::vector<int>& appnum) {
  std::vector<int> r;
  for (std::size_t i = 0; i < appnum.size(); ++i) {
    r.push_back(i == 0 || appnum[i] != appnum[i - 1] ? 0 : r.back() + 1);
  }
  return r;
}

class Host final : public PmixServer {
 public:
  explicit Host(const PmixJob& job) : job_(job) {
    library_acquire(job_.dir, job_.topology_xml, job_.rendezvous_fd >= 0);
    event_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (event_fd_ < 0) {
      library_release();
      throw_errno("eventfd");
    }
    World& w = worlds_[0];
    w.nspace = job_.nspace;
    w.appnum = job_.appnum;
    {
      std::lock_guard<std::mutex> lock(g_mutex);
      g_hosts.push_back(this);
    }
    try {
      register_nspace(w);
      registered_ = true;
      // The ranks run already, with the rendezvous's environment: register
      // them all now (setup_fork's variables are not theirs).
      if (job_.rendezvous_fd >= 0) {
        for (int r = 0; r < job_.size; ++r) register_client(worlds_[0].nspace, r);
      } else {
        // Every rank's registration and setup_fork need nothing from the
        // grant: done here, they happen while a queued job waits
        // (PreparedPmix), not between the grant and the ranks' fork.
        prepare_clients(worlds_[0]);
      }
    } catch (...) {
      leave();
      throw;
    }
  }

  ~Host() override { leave(); }

  // Deregisters every namespace of the job, then leaves g_hosts: from then
  // on no callback reaches this Host.
  void leave() {
    if (left_) return;
    left_ = true;
    names_.fail_all();
    fail_spawns();
    std::vector<std::string> nspaces;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (const auto& [n, w] : worlds_) {
        if (n != 0 || registered_) nspaces.push_back(w.nspace);
      }
    }
    for (const std::string& ns : nspaces) PMIx_server_deregister_nspace(ns.c_str(), nullptr, nullptr);
    {
      std::lock_guard<std::mutex> lock(g_mutex);
      g_hosts.erase(std::remove(g_hosts.begin(), g_hosts.end(), this), g_hosts.end());
    }
    library_release();
    ::close(event_fd_);
  }

  void register_client(const std::string& nspace, int rank) {
    pmix_proc_t proc;
    PMIX_PROC_LOAD(&proc, nspace.c_str(), static_cast<pmix_rank_t>(rank));
    pmix_status_t rc = PMIx_server_register_client(&proc, job_.uid, job_.gid, nullptr, nullptr, nullptr);
    if (rc != PMIX_SUCCESS && rc != PMIX_OPERATION_SUCCEEDED) fail("register_client", rc);
  }

  // Registers every rank of w and keeps what setup_fork gives each.
  void prepare_clients(World& w) {
    w.fork_env.resize(w.appnum.size());
    for (std::size_t r = 0; r < w.appnum.size(); ++r) {
      register_client(w.nspace, static_cast<int>(r));
      pmix_proc_t proc;
      PMIX_PROC_LOAD(&proc, w.nspace.c_str(), static_cast<pmix_rank_t>(r));
      char** added = nullptr;
      pmix_status_t rc = PMIx_server_setup_fork(&proc, &added);
      if (rc != PMIX_SUCCESS) fail("setup_fork", rc);
      for (char** p = added; p && *p; ++p) {
        if (const char* eq = std::strchr(*p, '=')) {
          w.fork_env[r].emplace_back(std::string(*p, static_cast<std::size_t>(eq - *p)), eq + 1);
        }
        std::free(*p);
      }
      std::free(added);
    }
  }

  std::vector<std::pair<std::string, std::string>> rank_variables(int world, int rank) const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return worlds_.at(world).fork_env.at(static_cast<std::size_t>(rank));
  }

  void add_world(int world, const std::vector<int>& appnum, int spawn_id) override {
    if (world <= 0 || worlds_.count(world)) throw Error("PMIx: world " + std::to_string(world) + " exists");
    World w;
    w.nspace = job_.nspace + ".spawn" + std::to_string(world);
    w.appnum = appnum;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = spawns_.find(spawn_id);
      if (it != spawns_.end()) w.parent = it->second.parent;
    }
    register_nspace(w);
    World* added;
    {
      // The progress thread looks worlds up by namespace (world_of).
      std::lock_guard<std::mutex> lock(mutex_);
      added = &(worlds_[world] = std::move(w));
    }
    prepare_clients(*added);
  }

  void spawn_done(int spawn_id, bool ok, int world) override {
    PendingSpawn p;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = spawns_.find(spawn_id);
      if (it == spawns_.end()) return;
      p = it->second;
      spawns_.erase(it);
    }
    if (!ok) {
      p.cbfunc(PMIX_ERR_JOB_FAILED_TO_LAUNCH, nullptr, p.cbdata);
      return;
    }
    pmix_nspace_t ns;
    PMIX_LOAD_NSPACE(ns, worlds_.at(world).nspace.c_str());
    p.cbfunc(PMIX_SUCCESS, ns, p.cbdata);
  }

  void abandon_port(const std::string& port) override { names_.abandon(port); }

  // Called on libpmix's thread: the request is copied, the launcher's loop
  // does the work (getting cores, starting the ranks) and answers through
  // spawn_done. Registering a namespace from inside this upcall would
  // deadlock libpmix's progress thread.
  pmix_status_t spawn(const pmix_proc_t* proc, const pmix_app_t apps[], size_t napps,
                      pmix_spawn_cbfunc_t cbfunc, void* cbdata) {
    int world = proc ? world_of(proc->nspace) : -1;
    // A helper's (rendezvous) server has no launcher loop to start ranks.
    if (world < 0 || !job_.can_spawn || napps == 0 || !cbfunc) return PMIX_ERR_NOT_SUPPORTED;
    PmixEvent e = pmix_event(PmixEvent::Kind::Spawn, static_cast<int>(proc->rank));
    e.world = world;
    for (size_t i = 0; i < napps; ++i) {
      PmixSpawnApp a;
      a.command = apps[i].cmd ? apps[i].cmd : "";
      for (char** v = apps[i].argv; v && *v; ++v) a.argv.emplace_back(*v);
      if (a.argv.empty()) a.argv.push_back(a.command);
      for (char** v = apps[i].env; v && *v; ++v) {
        if (const char* eq = std::strchr(*v, '=')) a.env.emplace_back(std::string(*v, static_cast<std::size_t>(eq - *v)), eq + 1);
      }
      a.nprocs = apps[i].maxprocs;
      a.wdir = apps[i].cwd ? apps[i].cwd : "";
      for (size_t k = 0; k < apps[i].ninfo; ++k) {
        const pmix_info_t& in = apps[i].info[k];
        if (in.value.type != PMIX_STRING || !in.value.data.string) continue;
        if (std::strncmp(in.key, PMIX_WDIR, PMIX_MAX_KEYLEN) == 0) a.wdir = in.value.data.string;
        if (std::strncmp(in.key, PMIX_HOST, PMIX_MAX_KEYLEN) == 0) a.hosts.emplace_back(in.value.data.string);
        if (std::strncmp(in.key, PMIX_HOSTFILE, PMIX_MAX_KEYLEN) == 0) a.hostfile = in.value.data.string;
      }
      if (a.command.empty() || a.nprocs < 1) return PMIX_ERR_BAD_PARAM;
      e.apps.push_back(std::move(a));
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      e.spawn_id = ++last_spawn_;
      spawns_[e.spawn_id] = PendingSpawn{*proc, cbfunc, cbdata};
    }
    post(std::move(e));
    return PMIX_SUCCESS;
  }

  PmixNames& names() { return names_; }

  int event_fd() const override { return event_fd_; }

  std::vector<PmixEvent> take_events() override {
    uint64_t n;
    (void)!::read(event_fd_, &n, sizeof n);
    std::lock_guard<std::mutex> lock(mutex_);
    return std::exchange(events_, {});
  }

  // libpmix 4.2 listens on a socket of its own, in a thread of its own
  // (the host's "listener" hook is never called). The ranks were told the
  // rendezvous's port, so the rendezvous takes the place of that socket:
  // dup'd onto its descriptor, which the thread selects and accepts on.
  // Its select may be waiting on the old socket (it holds it until it
  // returns): a connection to the old port wakes it, and from then on it
  // accepts from the rendezvous, the connections waiting there included.
  void accept_ready() override {
    if (taken_over_) return;
    taken_over_ = true;
    for (int fd = 3; fd < 4096; ++fd) {
      if (fd == job_.rendezvous_fd || fd == event_fd_) continue;
      int listening = 0;
      socklen_t len = sizeof listening;
      sockaddr_in a{};
      socklen_t alen = sizeof a;
      if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening ||
          ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &alen) != 0 || a.sin_family != AF_INET) {
        continue;
      }
      if (::dup3(job_.rendezvous_fd, fd, O_CLOEXEC) < 0) throw_errno("PMIx: taking over the listener");
      int poke = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      if (poke >= 0) {
        (void)!::connect(poke, reinterpret_cast<sockaddr*>(&a), sizeof a);
        ::close(poke);
      }
      return;
    }
    throw Error("PMIx: libpmix's listening socket not found");
  }

  // Called on libpmix's thread.
  void post(PmixEvent e) {
    if (job_.sink) {
      job_.sink(e);  // before libpmix answers the rank: see PmixJob::sink
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      events_.push_back(std::move(e));
    }
    uint64_t one = 1;
    (void)!::write(event_fd_, &one, sizeof one);
  }

  // The world a namespace is, or -1 when it is none of ours.
  int world_of(const char* nspace) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [n, w] : worlds_) {
      if (std::strncmp(w.nspace.c_str(), nspace, PMIX_MAX_NSLEN) == 0) return n;
    }
    return -1;
  }

 private:
  struct PendingSpawn {
    pmix_proc_t parent{};
    pmix_spawn_cbfunc_t cbfunc = nullptr;
    void* cbdata = nullptr;
  };

  void register_nspace(const World& w);
  // Spawns still waiting for an answer fail (the server is going).
  void fail_spawns() {
    std::map<int, PendingSpawn> left;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      left.swap(spawns_);
    }
    for (auto& [id, p] : left) p.cbfunc(PMIX_ERR_JOB_FAILED_TO_LAUNCH, nullptr, p.cbdata);
  }

  PmixJob job_;
  int event_fd_ = -1;
  bool registered_ = false;  // world 0's namespace (a failed registration is not deregistered)
  bool left_ = false;
  mutable std::mutex mutex_;  // events_, spawns_, and worlds_ as the progress thread reads them
  std::vector<PmixEvent> events_;
  bool taken_over_ = false;
  std::map<int, World> worlds_;  // by number; grows on the launcher's thread only
  std::map<int, PendingSpawn> spawns_;
  int last_spawn_ = 0;
  PmixNames names_;
};

// --- libpmix callbacks (progress thread) ------------------------------------

// The Host whose job proc belongs to, or null. REQUIRES: g_mutex held.
Host* host_of(const pmix_proc_t* proc) {
  if (!proc) return nullptr;
  for (Host* h : g_hosts) {
    if (h->world_of(proc->nspace) >= 0) return h;
  }
  return nullptr;
}

// An event about proc, for the world it belongs to (none: not ours).
void post_about(const pmix_proc_t* proc, PmixEvent e) {
  std::lock_guard<std::mutex> lock(g_mutex);
  Host* h = host_of(proc);
  if (!h) return;
  e.world = h->world_of(proc->nspace);
  e.rank = static_cast<int>(proc->rank);
  h->post(std::move(e));
}

pmix_status_t on_connected(const pmix_proc_t* proc, void*, pmix_op_cbfunc_t, void*) {
  post_about(proc, pmix_event(PmixEvent::Kind::Connected, -1));
  return PMIX_OPERATION_SUCCEEDED;
}

pmix_status_t on_finalized(const pmix_proc_t* proc, void*, pmix_op_cbfunc_t cbfunc, void* cbdata) {
  post_about(proc, pmix_event(PmixEvent::Kind::Finalized, -1));
  // Having implemented this callback we must complete it, or the rank
  // hangs in MPI_Finalize.
  if (cbfunc) cbfunc(PMIX_SUCCESS, cbdata);
  return PMIX_SUCCESS;
}

pmix_status_t on_abort(const pmix_proc_t* proc, void*, int status, const char msg[], pmix_proc_t[],
                       size_t, pmix_op_cbfunc_t cbfunc, void* cbdata) {
  post_about(proc, pmix_event(PmixEvent::Kind::Abort, -1, status, msg ? msg : ""));
  // Release the caller; the launcher kills the job from its own loop.
  if (cbfunc) cbfunc(PMIX_SUCCESS, cbdata);
  return PMIX_SUCCESS;
}

void release_fence_data(void* cbdata) { std::free(cbdata); }

// One server holds every rank, so the collected data is exactly what the
// library handed us: give it back (examples/server.c does the same). Not
// called at all while libpmix's local-only fence shortcut applies, but the
// lost-connection path calls it without a NULL check.
pmix_status_t on_fence(const pmix_proc_t[], size_t, const pmix_info_t[], size_t, char* data,
                       size_t ndata, pmix_modex_cbfunc_t cbfunc, void* cbdata) {
  char* copy = nullptr;
  if (ndata > 0) {
    copy = static_cast<char*>(std::malloc(ndata));
    if (!copy) return PMIX_ERR_NOMEM;
    std::memcpy(copy, data, ndata);
  }
  if (cbfunc) cbfunc(PMIX_SUCCESS, copy, ndata, cbdata, release_fence_data, copy);
  return PMIX_SUCCESS;
}

pmix_status_t on_direct_modex(const pmix_proc_t*, const pmix_info_t[], size_t, pmix_modex_cbfunc_t,
                              void*) {
  return PMIX_ERR_NOT_SUPPORTED;  // every peer is local: nothing to fetch
}

pmix_status_t on_spawn(const pmix_proc_t* proc, const pmix_info_t[], size_t, const pmix_app_t apps[],
                       size_t napps, pmix_spawn_cbfunc_t cbfunc, void* cbdata) {
  std::lock_guard<std::mutex> lock(g_mutex);
  Host* h = host_of(proc);
  return h ? h->spawn(proc, apps, napps, cbfunc, cbdata) : PMIX_ERR_NOT_SUPPORTED;
}

pmix_status_t on_publish(const pmix_proc_t* proc, const pmix_info_t info[], size_t ninfo, pmix_op_cbfunc_t,
                         void*) {
  std::lock_guard<std::mutex> lock(g_mutex);
  Host* h = host_of(proc);
  return h ? h->names().publish(proc, info, ninfo) : PMIX_ERR_NOT_SUPPORTED;
}

pmix_status_t on_lookup(const pmix_proc_t* proc, char** keys, const pmix_info_t info[], size_t ninfo,
                        pmix_lookup_cbfunc_t cbfunc, void* cbdata) {
  std::lock_guard<std::mutex> lock(g_mutex);
  Host* h = host_of(proc);
  return h ? h->names().lookup(proc, keys, info, ninfo, cbfunc, cbdata) : PMIX_ERR_NOT_SUPPORTED;
}

pmix_status_t on_unpublish(const pmix_proc_t* proc, char** keys, const pmix_info_t[], size_t, pmix_op_cbfunc_t,
                           void*) {
  std::lock_guard<std::mutex> lock(g_mutex);
  Host* h = host_of(proc);
  return h ? h->names().unpublish(keys) : PMIX_ERR_NOT_SUPPORTED;
}

// Connect and disconnect are left to libpmix: between worlds of one server
// it completes them itself (every proc local and known), and never calls
// the host (docs/spawn-research.md 2.3).
pmix_server_module_t g_module = [] {
  pmix_server_module_t m;
  std::memset(&m, 0, sizeof m);
  m.client_connected = on_connected;
  m.client_finalized = on_finalized;
  m.abort = on_abort;
  m.fence_nb = on_fence;
  m.direct_modex = on_direct_modex;
  m.spawn = on_spawn;
  m.publish = on_publish;
  m.lookup = on_lookup;
  m.unpublish = on_unpublish;
  return m;
}();

// --- set-up -------------------------------------------------------------------

// Loading XML takes a fraction of a millisecond; discovery (libpmix's
// default) tens of milliseconds, X11 probing included.
void load_topology(const std::string& xml) {
  if (xml.empty()) return;
  hwloc_topology_t t;
  if (hwloc_topology_init(&t) != 0) return;
  if (hwloc_topology_set_xmlbuffer(t, xml.data(), static_cast<int>(xml.size() + 1)) != 0 ||
      hwloc_topology_set_flags(t, HWLOC_TOPOLOGY_FLAG_IS_THISSYSTEM) != 0 ||
      hwloc_topology_load(t) != 0) {
    hwloc_topology_destroy(t);
    return;
  }
  g_lib.topology = t;
  g_lib.topology_xml = xml;
  g_lib.pmix_topology.source = const_cast<char*>("hwloc:" HWLOC_VERSION);
  g_lib.pmix_topology.topology = t;
}

// A variable of this process's environment set for a scope, then put back
// as it was: libpmix and hwloc read theirs during PMIx_server_init, and the
// ranks, whose environment may be built later (a server prepared while the
// job was queued), must not inherit ours.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) saved_ = old;
    ::setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (saved_) {
      ::setenv(name_, saved_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> saved_;
};

void library_acquire(const std::string& dir, const std::string& topology_xml, bool rendezvous) {
  if (g_lib.users++ > 0) return;
  // The server needs CPUs and caches only. hwloc would otherwise dlopen its
  // I/O plugins (PCI, OpenCL, X11/GL probing every display) in this process:
  // tens of milliseconds per launch.
  ScopedEnv no_plugins("HWLOC_PLUGINS_PATH", JIFFY_NO_HWLOC_PLUGINS);
  load_topology(topology_xml);
  InfoList info;
  if (g_lib.topology) info.add(PMIX_TOPOLOGY2, &g_lib.pmix_topology, PMIX_TOPO);
  info.add_string(PMIX_SERVER_TMPDIR, dir);
  info.add_string(PMIX_SYSTEM_TMPDIR, dir);
  info.add_rank(PMIX_SERVER_RANK, 0);
  // PMIx's hash store, not the shared-memory one (ds21). The rendezvous's
  // ranks were told PMIX_GDS_MODULE=hash (no store whose file names
  // setup_fork would have had to tell them). For ranks we fork, setup_fork
  // then tells them hash: with ds21 each Open MPI rank's MPI_Init waited
  // ~11 ms for the server's answer to its connection (24 ms of wall for 13
  // of CPU; 13 with hash). What the store saves, one copy of the job's data
  // for many local ranks, is small for the jobs of one node. A user's own
  // PMIX_MCA_gds wins, except behind the rendezvous (and the shared server
  // is not used when the user set one: PmixServer::open_shared).
  const char* user_gds = std::getenv("PMIX_MCA_gds");
  std::optional<ScopedEnv> hash;
  if (rendezvous || !user_gds) hash.emplace("PMIX_MCA_gds", "hash");
  pmix_status_t rc = PMIx_server_init(&g_module, info.info(), info.size());
  if (rc != PMIX_SUCCESS) {
    g_lib.users = 0;
    if (g_lib.topology) hwloc_topology_destroy(g_lib.topology);
    g_lib = Library();
    fail("server_init", rc);
  }
}

void library_release() {
  if (g_lib.users == 0 || --g_lib.users > 0) return;
  PMIx_server_finalize();
  if (g_lib.topology) hwloc_topology_destroy(g_lib.topology);
  g_lib = Library();
}

std::string rank_list(int size) {
  std::string s;
  for (int r = 0; r < size; ++r) s += (r ? "," : "") + std::to_string(r);
  return s;
}

void Host::register_nspace(const World& w) {
  const int size = static_cast<int>(w.appnum.size());
  const uint32_t n = static_cast<uint32_t>(size);
  const std::vector<int> app_rank = app_ranks(w.appnum);
  char host[256] = "localhost";
  ::gethostname(host, sizeof host - 1);
  char* node_map = nullptr;
  char* proc_map = nullptr;
  std::string ranks = rank_list(size);
  if (PMIx_generate_regex(host, &node_map) != PMIX_SUCCESS ||
      PMIx_generate_ppn(ranks.c_str(), &proc_map) != PMIX_SUCCESS) {
    throw Error("PMIx: cannot generate the node and process maps");
  }
  InfoList info;
  info.add_string(PMIX_JOBID, w.nspace);
  for (const char* key : {PMIX_UNIV_SIZE, PMIX_JOB_SIZE, PMIX_LOCAL_SIZE, PMIX_MAX_PROCS}) {
    info.add_u32(key, n);  // JOB_SIZE == nlocalprocs keeps libpmix's local-only fence path
  }
  info.add_u32(PMIX_NUM_NODES, 1);
  info.add_string(PMIX_LOCAL_PEERS, ranks);
  info.add_string(PMIX_NODE_MAP, node_map);
  info.add_string(PMIX_PROC_MAP, proc_map);
  std::free(node_map);
  std::free(proc_map);
  info.add_u32(PMIX_JOB_NUM_APPS, static_cast<uint32_t>(w.appnum.empty() ? 1 : w.appnum.back() + 1));
  info.add_string(PMIX_TMPDIR, job_.dir);
  info.add_string(PMIX_NSDIR, job_.dir);
  info.add_bool(PMIX_TDIR_RMCLEAN, true);  // we remove the job directory ourselves
  info.add_bool(PMIX_SPAWNED, w.parent.has_value());
  if (g_lib.topology) info.add_string(PMIX_HWLOC_XML_V2, g_lib.topology_xml);
  // No PMIX_PERSONALITY "ompi": its setup_fork wants app data we do not
  // register (pmdl_ompi NOT-FOUND); Bootstrap sets OMPI_COMM_WORLD_* itself.
  std::vector<std::unique_ptr<InfoList>> per_rank;
  for (int r = 0; r < size; ++r) {
    auto p = std::make_unique<InfoList>();
    p->add_rank(PMIX_RANK, static_cast<pmix_rank_t>(r));  // must come first
    p->add_u32(PMIX_NODEID, 0);
    p->add_u16(PMIX_LOCAL_RANK, static_cast<uint16_t>(r));
    p->add_u16(PMIX_NODE_RANK, static_cast<uint16_t>(r));
    p->add_u32(PMIX_APPNUM, static_cast<uint32_t>(w.appnum[static_cast<std::size_t>(r)]));
    p->add_rank(PMIX_APP_RANK, static_cast<pmix_rank_t>(app_rank[static_cast<std::size_t>(r)]));
    p->add_rank(PMIX_GLOBAL_RANK, static_cast<pmix_rank_t>(r));
    p->add_string(PMIX_HOSTNAME, host);
    if (w.parent) p->add(PMIX_PARENT_ID, &*w.parent, PMIX_PROC);
    info.add(PMIX_PROC_INFO_ARRAY, p->array(), PMIX_DATA_ARRAY);
    per_rank.push_back(std::move(p));
  }
  pmix_status_t rc = PMIx_server_register_nspace(w.nspace.c_str(), size, info.info(),
                                                 info.size(), nullptr, nullptr);
  if (rc != PMIX_SUCCESS && rc != PMIX_OPERATION_SUCCEEDED) fail("register_nspace", rc);
}

}  // namespace

bool PmixServer::available() { return true; }

std::unique_ptr<PmixServer> PmixServer::start(const PmixJob& job) { return std::make_unique<Host>(job); }

// jiffy-pmix serves its own jobs (the shared server is the lean launcher's).
bool PmixServer::open_shared() { return false; }

PmixLibrary::PmixLibrary(const std::string& dir, const std::string& topology_xml) {
  library_acquire(dir, topology_xml, /*rendezvous=*/false);
}

PmixLibrary::~PmixLibrary() { library_release(); }

int PmixServer::host_main(const std::vector<std::string>& args) {
  // RENDEZVOUS_FD EVENT_FD DIR TOPOLOGY_FILE APPNUMS (launch/bootstrap.cc),
  // the namespace in kNamespaceVar (taken out: a spawned rank must not
  // inherit it)
  std::optional<std::string> nspace = take_env(kNamespaceVar);
  if (args.size() != 5 || !nspace || nspace->empty()) throw Error("--jiffy-pmix-host: wrong arguments");
  PmixJob job;
  job.nspace = *nspace;
  job.rendezvous_fd = std::stoi(args[0]);
  const int sink = std::stoi(args[1]);
  job.sink = [sink](const PmixEvent& e) {
    std::string line = format_pmix_event(e) + "\n";
    (void)!::write(sink, line.data(), line.size());
  };
  job.can_spawn = false;
  job.dir = args[2];
  job.topology_xml = read_file_or_empty(args[3]);
  std::size_t from = 0;
  for (;;) {
    std::size_t end = args[4].find(',', from);
    job.appnum.push_back(std::stoi(args[4].substr(from, end - from)));
    if (end == std::string::npos) break;
    from = end + 1;
  }
  job.size = static_cast<int>(job.appnum.size());
  job.uid = ::geteuid();
  job.gid = ::getegid();
  std::unique_ptr<PmixServer> server = start(job);
  server->accept_ready();
  // Until the launcher closes the event socket (it never writes to it).
  for (;;) {
    pollfd p{sink, POLLIN, 0};
    if (::poll(&p, 1, -1) < 0 && errno != EINTR) throw_errno("poll");
    if (p.revents) return 0;
  }
}

}  // namespace jiffy
