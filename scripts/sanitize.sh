#!/usr/bin/env bash
# Sanitizer runs of the test suite.
#
#   scripts/sanitize.sh [asan|tsan|all] [extra pytest arguments]
#
# asan: builds build-asan/ (-DJIFFY_SANITIZE=ON: ASan + UBSan with
#   -fno-sanitize-recover, jiffy linked dynamically) and runs the unit tests
#   and the whole end-to-end suite against it.
# tsan: builds build-tsan/ (-DJIFFY_TSAN=ON) and runs the Open MPI end-to-end
#   tests (tests/e2e/test_mpi.py -k openmpi) and the spawn tests
#   (tests/e2e/test_spawn.py: spawn and lookup upcalls): jiffy-pmix is the only
#   multi-threaded part (libpmix's progress thread calls the callbacks in
#   src/pmi/pmix_host.cc).
#
# Every sanitizer report goes to a file in <build>/sanitizer-logs/ (log_path),
# whichever process wrote it: the launcher, jiffy-pmix, or the detached
# daemon whose stderr nobody reads. The run fails when a test fails or when
# any report appears; the reports are printed.
#
# Exceptions cover libpmix only, which is not instrumented and not ours:
#  - LSan: leak:libpmix.so (<build>/lsan.supp). PMIx 4.2's
#    PMIx_server_finalize leaves blocks that PMIx_server_init and its
#    progress thread allocated (value copies, peer objects); with full stacks
#    (fast_unwind_on_malloc=0) every one is allocated inside libpmix, under
#    our PMIx_server_init call or on libpmix's own thread.
#  - TSan: no suppression file. TSan sees libpmix's pthread calls and the
#    memory its intercepted calls (memset, strcmp, free...) touch, but not its
#    atomics and barriers, so libpmix's hand-offs between our calls
#    (PMIx_server_register_client, setup_fork) and its progress thread look
#    like races (some may be libpmix's own bugs: its progress thread locks
#    and broadcasts a lock on our main thread's stack where a blocking
#    PMIx_server_register_client has already destroyed one). A
#    "race:libpmix" suppression would also hide races of our callbacks, whose
#    stacks run through libpmix; reports are triaged instead (tsan_triage): a
#    data race is libpmix's when the access by the non-main thread is inside
#    libpmix or libevent; anything else, e.g. our callback on the progress
#    thread racing with the main loop, fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

what=${1:-all}
case "$what" in
  asan | tsan | all) shift || true ;;
  *) what=all ;;
esac
jobs=$(nproc)

# Whether every frame past the allocator (#1 on) of report $1 lies in a
# module that is no longer loaded (see check_reports).
unloaded_frames() {
  /usr/bin/python3 - "$1" <<'PY'
import re, subprocess, sys
def end_of(path, cache={}):
    if path not in cache:
        try:
            out = subprocess.run(["readelf", "-lW", path], capture_output=True, text=True).stdout
            cache[path] = max(int(m.group(1), 16) + int(m.group(2), 16)
                              for m in re.finditer(r"LOAD\s+\S+\s+(0x[0-9a-f]+)\s+\S+\s+\S+\s+(0x[0-9a-f]+)", out))
        except (OSError, ValueError):
            cache[path] = None
    return cache[path]
for line in open(sys.argv[1], errors="replace"):
    if not re.match(r"^ +#[1-9][0-9]* ", line):
        continue
    line = line.rstrip()
    if line.endswith("(<unknown module>)"):
        continue
    m = re.search(r"\((/[^()+]+)\+(0x[0-9a-f]+)\)$", line)
    end = end_of(m.group(1)) if m else None
    if end is None or int(m.group(2), 16) < end:
        sys.exit(1)
sys.exit(0)
PY
}

# Prints the reports in $1 and returns 1 when there are any.
check_reports() {
  local dir=$1 n f
  # ASan's "ignoring requested __asan_handle_no_return" is a warning, not a
  # report: a rank spawned with clone(CLONE_VM) on its own small stack
  # (launch/spawn) calls execve there, and whether ASan notices depends on
  # where ASLR put that stack. A file holding nothing else is set aside (its
  # first line is shown); any error after it is a report like any other.
  for f in $(find "$dir" -type f); do
    if ! grep -qvE '__asan_handle_no_return|^False positive error reports may follow|^For details see https://github.com/google/sanitizers/issues/189|^$' "$f"; then
      echo "sanitize: not a report (warning only): $(head -1 "$f")"
      rm -f "$f"
    fi
  done
  # A leak whose every frame past the allocator lies in an unloaded module
  # was made by a library that was dlclose'd before exit, never by our code
  # (linked in, never unloaded): hwloc's PCI plugin, which jiffyd's topology
  # discovery loads and hwloc_topology_destroy unloads, leaves libpciaccess's
  # allocations behind. Such a file (leaks only) is set aside and counted.
  # LSan names an unloaded module "<unknown module>", or, when the plugin
  # had been mapped right after a binary, that binary with an offset past
  # its end (seen: "jiffyd+0x2dbdcae" for a 48 MB jiffyd whose last segment
  # ends at 0xfab1c0): unloaded_frames counts both.
  local plugin=0
  for f in $(find "$dir" -type f); do
    if grep -q 'ERROR: LeakSanitizer' "$f" && ! grep -qE 'ERROR: AddressSanitizer|runtime error' "$f" &&
      grep -qE '^ +#1 ' "$f" && unloaded_frames "$f"; then
      plugin=$((plugin + 1))
      rm -f "$f"
    fi
  done
  ((plugin == 0)) || echo "sanitize: $plugin leak report(s) from unloaded plugin libraries (hwloc's PCI plugin), not ours"
  n=$(find "$dir" -type f | wc -l)
  if ((n == 0)); then
    echo "sanitize: no sanitizer reports in $dir"
    return 0
  fi
  echo "sanitize: $n sanitizer report file(s) in $dir:" >&2
  for f in $(find "$dir" -type f | sort | head -20); do
    echo "----- $f" >&2
    head -60 "$f" >&2
  done
  return 1
}

# Triages the TSan reports in $1 (see the header); returns 1 when any involves
# our code, and prints those.
tsan_triage() {
  /usr/bin/python3 - "$1" <<'PY'
import pathlib, re, sys

LIB = re.compile(r"\((?:/\S*/)?lib(pmix|event)[^)]*\)\s*$")  # a frame's module
RUNTIME = re.compile(r"\(libtsan\.so[^)]*\)\s*$")  # TSan's interceptors


def top(frames):  # the innermost frame that is not TSan's own
    return next((l for l in frames.splitlines() if not RUNTIME.search(l)), "")


ours, theirs = [], 0
for f in sorted(pathlib.Path(sys.argv[1]).glob("*")):
    for rep in re.split(r"^==================$", f.read_text(errors="replace"), flags=re.M):
        m = re.search(r"^WARNING: ThreadSanitizer: (.*?) \(pid=\d+\)", rep, re.M)
        if not m:
            continue
        # Stacks of accesses and lock operations, not of "Location is ...",
        # "Thread T1 ... created at", "Mutex M0 ... created at".
        stacks = [(h, top(fr)) for h, fr in re.findall(r"^  (\S[^\n]*)\n((?:    #\d+[^\n]*\n?)+)", rep, re.M)
                  if not h.startswith(("Location", "Thread ", "Mutex "))]
        if m.group(1) == "data race":
            internal = any(LIB.search(t) for h, t in stacks if "by thread T" in h)
        else:
            internal = bool(stacks) and all(LIB.search(t) for h, t in stacks)
        if internal:
            theirs += 1
        else:
            ours.append((f.name, rep.strip()))
print(f"sanitize: TSan: {theirs} report(s) from libpmix's own code (ignored), {len(ours)} involving ours")
for name, rep in ours[:10]:
    print(f"----- {name}\n{rep}\n", file=sys.stderr)
sys.exit(1 if ours else 0)
PY
}

# Runs "$@" and says how long it took.
timed() {
  local t0=$SECONDS rc=0
  "$@" || rc=$?
  echo "sanitize: [$((SECONDS - t0)) s] $*"
  return $rc
}

status=0

if [[ $what == asan || $what == all ]]; then
  build=$root/build-asan
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DJIFFY_SANITIZE=ON >/dev/null
  timed cmake --build "$build" -j"$jobs"
  logs=$build/sanitizer-logs
  rm -rf "$logs"
  mkdir -p "$logs"
  printf 'leak:libpmix.so\n' >"$build/lsan.supp"
  export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=1:check_initialization_order=1:log_path=$logs/asan"
  export LSAN_OPTIONS="suppressions=$build/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$logs/ubsan"
  echo "sanitize: ASan+UBSan unit tests"
  timed ctest --test-dir "$build" --output-on-failure -j"$jobs" || status=1
  echo "sanitize: ASan+UBSan end-to-end tests"
  JIFFY_BUILD_DIR=$build timed /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e "$@" || status=1
  check_reports "$logs" || status=1
  unset ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS
fi

if [[ $what == tsan || $what == all ]]; then
  build=$root/build-tsan
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DJIFFY_TSAN=ON -DJIFFY_TESTS=OFF >/dev/null
  timed cmake --build "$build" -j"$jobs"
  logs=$build/sanitizer-logs
  rm -rf "$logs"
  mkdir -p "$logs"
  # exitcode=0: a report does not change the exit code the tests check;
  # tsan_triage judges the reports.
  export TSAN_OPTIONS="halt_on_error=0:exitcode=0:second_deadlock_stack=1:log_path=$logs/tsan"
  echo "sanitize: TSan Open MPI end-to-end tests"
  JIFFY_BUILD_DIR=$build timed /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e/test_mpi.py tests/e2e/test_spawn.py \
    tests/e2e/test_pmix_shared.py -k "openmpi or spawn or shared or server or launcher" "$@" || status=1
  tsan_triage "$logs" || status=1
  unset TSAN_OPTIONS
fi

if ((status)); then
  echo "sanitize: FAILED" >&2
  exit 1
fi
echo "sanitize: passed"
