// The history database's schema: one row per launch (proto/history.h is
// the record a row comes from). One database per user, at
// $XDG_STATE_HOME/jiffy/history.db (else ~/.local/state/jiffy/history.db),
// written by daemons only (daemon/history_writer.h), read by `jiffy
// history`, `jiffy report` and `jiffy top` (src/views/). docs/history.md
// documents the columns as users see them.
#pragma once

namespace jiffy::history {

// 2: jobs gained step and nodes (the slurm backend); a version-1 database
// is migrated by the writer (ALTER TABLE) and read as it is by readers.
constexpr int kSchemaVersion = 2;

// Applied on every open by the writer (idempotent); readers only check
// user_version.
inline constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS jobs (
  id         INTEGER PRIMARY KEY,   -- ingestion order
  tag        TEXT NOT NULL UNIQUE,  -- JIFFY_JOB_TAG: one row per launch
  job        INTEGER NOT NULL,      -- the daemon's job id; 0: it never had one
  source     INTEGER NOT NULL,      -- 1 daemon (launcher vanished), 2 launcher
  outcome    INTEGER NOT NULL,      -- jiffy_history_outcome (proto/history.h)
  exit_code  INTEGER NOT NULL,
  signal     INTEGER NOT NULL,
  pid        INTEGER NOT NULL,
  ntasks     INTEGER NOT NULL,
  ngroups    INTEGER NOT NULL,
  flags      INTEGER NOT NULL,      -- JIFFY_HISTORY_* flags
  submit_ns  INTEGER NOT NULL,      -- CLOCK_REALTIME, ns since the epoch
  start_ns   INTEGER NOT NULL,      -- 0: never ran
  end_ns     INTEGER NOT NULL,
  user_us    INTEGER NOT NULL,
  sys_us     INTEGER NOT NULL,
  maxrss_kb  INTEGER NOT NULL,
  label      TEXT NOT NULL,
  command    TEXT NOT NULL,
  cwd        TEXT NOT NULL,
  cores      TEXT NOT NULL,         -- per rank, ';'-separated: "0-1;2-3"
  gpus       TEXT NOT NULL,
  reason     TEXT NOT NULL,
  step       TEXT NOT NULL DEFAULT '',  -- a Slurm step "JOBID.STEPID" (docs/slurm.md)
  nodes      TEXT NOT NULL DEFAULT ''   -- its nodes, a Slurm host list
);
CREATE INDEX IF NOT EXISTS jobs_submit ON jobs(submit_ns);
CREATE INDEX IF NOT EXISTS jobs_end ON jobs(end_ns);
CREATE INDEX IF NOT EXISTS jobs_command ON jobs(command);
CREATE INDEX IF NOT EXISTS jobs_label ON jobs(label);
-- The machines (resource sets) daemons served, for the report's rows and
-- utilisation: one row per daemon start.
CREATE TABLE IF NOT EXISTS machines (
  id         INTEGER PRIMARY KEY,
  since_ns   INTEGER NOT NULL,      -- the daemon started
  cores      INTEGER NOT NULL,      -- schedulable cores
  gpus       TEXT NOT NULL,         -- GPU names, ','-separated
  identity   TEXT NOT NULL          -- the daemon's identity (runtime_dir.h)
);
)sql";

// Brings a version-1 jobs table to version 2 (run before kSchema, only
// when user_version is 1).
inline constexpr const char* kMigrateFrom1 =
    "ALTER TABLE jobs ADD COLUMN step TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE jobs ADD COLUMN nodes TEXT NOT NULL DEFAULT '';";

}  // namespace jiffy::history
