/* hwloc_view: what hwloc shows this process, as the MPIs' hwloc would load
 * it (both link the system's libhwloc.so.15), one line per way of loading:
 *
 *   default      hwloc's default flags and filters (MPICH's topology)
 *   disallowed   HWLOC_TOPOLOGY_FLAG_INCLUDE_DISALLOWED (what Open MPI asks for)
 *   io           I/O objects kept (PCI devices, OS devices: NIC/GPU locality)
 *   important    I/O objects hwloc deems important
 *
 * Each line: counts, the allowed sets, the process's binding, whether hwloc
 * trusts it describes this system, and a hash of the object tree (types,
 * indexes, sets, cache and memory sizes, PCI ids). HWLOC_XMLFILE and
 * HWLOC_THISSYSTEM in the environment work as for any hwloc user, so a test
 * runs it with and without jiffy's topology cache and compares the lines.
 * Last line: sched_getaffinity, which MPI's binding queries read. */
#define _GNU_SOURCE
#include <hwloc.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t hash_bytes(uint64_t h, const void* data, size_t len) {
  const unsigned char* p = data;
  for (size_t i = 0; i < len; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

static uint64_t hash_set(uint64_t h, hwloc_const_bitmap_t set) {
  char* s = NULL;
  if (set) hwloc_bitmap_list_asprintf(&s, set);
  h = hash_bytes(h, s ? s : "-", strlen(s ? s : "-") + 1);
  free(s);
  return h;
}

static uint64_t hash_object(uint64_t h, hwloc_obj_t o) {
  const char* type = hwloc_obj_type_string(o->type);
  h = hash_bytes(h, type, strlen(type) + 1);
  h = hash_bytes(h, &o->os_index, sizeof o->os_index);
  h = hash_set(h, o->cpuset);
  h = hash_set(h, o->nodeset);
  if (o->name) h = hash_bytes(h, o->name, strlen(o->name) + 1);
  if (hwloc_obj_type_is_cache(o->type)) {
    h = hash_bytes(h, &o->attr->cache.size, sizeof o->attr->cache.size);
    h = hash_bytes(h, &o->attr->cache.depth, sizeof o->attr->cache.depth);
  }
  if (o->type == HWLOC_OBJ_NUMANODE) h = hash_bytes(h, &o->attr->numanode.local_memory, sizeof(hwloc_uint64_t));
  if (o->type == HWLOC_OBJ_PCI_DEVICE) {
    const struct hwloc_pcidev_attr_s* p = &o->attr->pcidev;
    unsigned id[4] = {p->domain, p->bus, p->dev, p->func};
    h = hash_bytes(h, id, sizeof id);
    h = hash_bytes(h, &p->vendor_id, sizeof p->vendor_id);
    h = hash_bytes(h, &p->device_id, sizeof p->device_id);
  }
  for (hwloc_obj_t c = o->first_child; c; c = c->next_sibling) h = hash_object(h, c);
  for (hwloc_obj_t c = o->memory_first_child; c; c = c->next_sibling) h = hash_object(h, c);
  for (hwloc_obj_t c = o->io_first_child; c; c = c->next_sibling) h = hash_object(h, c);
  for (hwloc_obj_t c = o->misc_first_child; c; c = c->next_sibling) h = hash_object(h, c);
  return h;
}

static int count_io(hwloc_topology_t t) {
  int n = 0;
  for (hwloc_obj_t o = hwloc_get_next_pcidev(t, NULL); o; o = hwloc_get_next_pcidev(t, o)) ++n;
  for (hwloc_obj_t o = hwloc_get_next_osdev(t, NULL); o; o = hwloc_get_next_osdev(t, o)) ++n;
  return n;
}

static void print_set(const char* name, hwloc_const_bitmap_t set) {
  char* s = NULL;
  hwloc_bitmap_list_asprintf(&s, set);
  printf(" %s=%s", name, s ? s : "?");
  free(s);
}

static int view(const char* name, unsigned long flags, enum hwloc_type_filter_e io) {
  hwloc_topology_t t;
  if (hwloc_topology_init(&t) != 0) return -1;
  hwloc_topology_set_flags(t, flags);
  hwloc_topology_set_io_types_filter(t, io);
  if (hwloc_topology_load(t) != 0) {
    printf("%s load-failed\n", name);
    hwloc_topology_destroy(t);
    return -1;
  }
  printf("%s cores=%d pus=%d numa=%d packages=%d io=%d thissystem=%d", name,
         hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE), hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PU),
         hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE), hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PACKAGE),
         count_io(t), hwloc_topology_is_thissystem(t));
  print_set("cpuset", hwloc_topology_get_topology_cpuset(t));
  print_set("complete", hwloc_topology_get_complete_cpuset(t));
  print_set("allowed", hwloc_topology_get_allowed_cpuset(t));
  print_set("allowed_nodes", hwloc_topology_get_allowed_nodeset(t));
  hwloc_bitmap_t bind = hwloc_bitmap_alloc();
  if (hwloc_get_cpubind(t, bind, HWLOC_CPUBIND_PROCESS) == 0) {
    print_set("bind", bind);
  } else {
    printf(" bind=error");
  }
  hwloc_bitmap_free(bind);
  printf(" tree=%016llx\n", (unsigned long long)hash_object(1469598103934665603ull, hwloc_get_root_obj(t)));
  hwloc_topology_destroy(t);
  return 0;
}

int main(void) {
  int failed = 0;
  failed |= view("default", 0, HWLOC_TYPE_FILTER_KEEP_NONE);
  failed |= view("disallowed", HWLOC_TOPOLOGY_FLAG_INCLUDE_DISALLOWED, HWLOC_TYPE_FILTER_KEEP_NONE);
  failed |= view("io", 0, HWLOC_TYPE_FILTER_KEEP_ALL);
  failed |= view("important", 0, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
  cpu_set_t set;
  CPU_ZERO(&set);
  sched_getaffinity(0, sizeof set, &set);
  printf("affinity");
  const char* sep = "=";
  for (int i = 0; i < CPU_SETSIZE; ++i) {
    if (!CPU_ISSET(i, &set)) continue;
    printf("%s%d", sep, i);
    sep = ",";
  }
  printf("\n");
  return failed ? 1 : 0;
}
