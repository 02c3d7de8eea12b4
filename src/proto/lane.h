/* The lane: cores a launcher may take without asking the daemon.
 *
 * Why: a launch that waits for the daemon's answer pays two wake-ups of
 * idle CPUs and the daemon's work on its critical path (about 0.2 ms of a
 * 1.1 ms launch). When nothing is queued, the daemon lends its free slots
 * to the lane, and the front takes them itself, without waking the daemon.
 *
 * Who holds a slot is decided by the kernel, not by this file's contents:
 * slot u of the lane is byte u of the file, and holding it means holding an
 * open-file-description lock (F_OFD_SETLK) on that byte. The daemon holds
 * every slot it has not lent (it grants only those), and a launcher holds
 * the slots it took. Two holders can never both hold a byte: no slot is
 * ever granted twice. The lock lives in the launcher alone (the front, or
 * jiffy-launch after a hand-over), never in a rank: a rank inherits no
 * descriptor of the file (it could write through it), and the kernel drops
 * the lock when the launcher ends, however it ends.
 *
 * A launcher that took slots writes what the daemon needs to know of its
 * job into the slots' records (jiffy_lane_job), and clears them only once
 * every process of the job is gone (it kills and reaps them all), before
 * it lets go of the slots. So a record on a slot nobody holds means its
 * launcher died (SIGKILL): its ranks died with it (parent-death signal),
 * but what they started may still run. Such a record is the proof that a
 * slot is not free: a launcher that finds one on a slot it locked lets go
 * and tries elsewhere (or asks), and the daemon takes the slot, kills what
 * carries the job's tag, and clears the record and lends or grants the
 * slot again only once nothing of the job runs. The daemon reads records
 * when it needs them (status, and a periodic look); a job that runs 2 ms,
 * or that the front hands to jiffy-launch, connects and says "lane": from
 * then on the daemon supervises it as any other (its "finished" clears the
 * records; its hang-up leaves them, as above). jiffy-launch gets the
 * descriptor in the hand-over's state (lanefd=) and, like the front, lets
 * go of the locks before it says "finished", so that the daemon can take
 * the slots back at once.
 *
 * The daemon holds one more byte, JIFFY_LANE_DAEMON_BYTE, for its whole
 * life, and takes it only once it holds every slot it may grant. A launcher
 * checks, after locking its slots, that the lane is open and the byte is
 * held: so the slots it locked were lent by a live daemon, not freed by a
 * dead one's exit (which drops all of its locks at once).
 *
 * The file (<dir>/<key>.lane, mode 0600, in the daemon's private runtime
 * directory) is laid out as: header, nslots jiffy_lane_slot (written by the
 * daemon), nslots jiffy_lane_job (written by the slot's holder). next_job is
 * advanced atomically by launchers and the daemon alike. Anyone who can
 * open the file can rewrite or truncate it: readers copy what they read
 * once and check the copy, and both sides map the file under a SIGBUS guard
 * (an access beyond a cut-short file's end reads zeros: no lane). A daemon
 * that finds the file damaged logs it, closes the lane for good and lets
 * go of its daemon byte; every launch then asks. Plain C so that the front
 * (C, musl) and the daemon (C++) share one definition. See
 * docs/protocol.md, "The lane".
 */
#ifndef JIFFY_PROTO_LANE_H
#define JIFFY_PROTO_LANE_H

#include <stdint.h>

#define JIFFY_LANE_MAGIC 0x31656e616c796a66ULL /* "fjylane1" */
#define JIFFY_LANE_MAX_SLOTS 65536
#define JIFFY_LANE_MAX_CPUS 64 /* CPUs of one slot's placement */
#define JIFFY_LANE_MAX_TASKS 256 /* widest job the lane serves */
#define JIFFY_LANE_DAEMON_BYTE (JIFFY_LANE_MAX_SLOTS + 1) /* held by the live daemon */

struct jiffy_lane_header {
  uint64_t magic;     /* written last when the file is made */
  uint32_t nslots;    /* jiffy_lane_slot entries follow the header */
  uint32_t open;      /* 1: launchers may take lent slots; 0: ask the daemon */
  uint64_t next_job;  /* job ids, shared with the daemon: __atomic fetch-add */
  uint64_t reserved[5];
};

/* What a rank on this slot is given, as the daemon's grant would say it for
 * a one-slot request bound to its core. The byte locked for slot u is at
 * offset u of the file (inside the header: locks and contents are apart). */
struct jiffy_lane_slot {
  int32_t core;  /* index in the daemon's resource set */
  int32_t slot;  /* the core's slot */
  uint16_t ncpus;
  uint16_t cpus[JIFFY_LANE_MAX_CPUS]; /* OS CPU ids */
  uint16_t pad[3];
};

/* The job on a slot, written by the launcher holding the slot's lock:
 * job is cleared first and set last, so a reader that sees the same job id
 * before and after reading the rest has a whole record. */
struct jiffy_lane_job {
  uint64_t job;       /* 0: none */
  int32_t pid;        /* the launcher */
  int32_t pgid;       /* the ranks' process group; 0 until they run */
  int32_t first;      /* the job's slots: [first, first + count) */
  int32_t count;
  int64_t claimed_ns; /* CLOCK_BOOTTIME when the slots were taken */
  char tag[72];       /* JIFFY_JOB_TAG of the ranks, NUL-terminated */
  char command[208];  /* what runs, for status (cut short), NUL-terminated */
};

#endif
