#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang with ASan+UBSan) into build-fuzz/
# and runs each for the given number of seconds (default 60) on a copy of its
# seed corpus (fuzz/corpus/<target>/ is never grown). Fails on any crash,
# leak, UB report, timeout or out-of-memory; prints executions per target.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]
#
# Findings are kept in build-fuzz/findings/<target>/ (crash-*, leak-*, ...):
# reproduce with build-fuzz/fuzz/fuzz_<target> <file>.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(daemon_message daemon_server pmi_engine command_line state_file lane_file front_json pmix_wire)

if ! command -v clang++ >/dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  echo "fuzz: installing clang and libclang-rt-14-dev"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends clang libclang-rt-14-dev >/dev/null
fi

CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DJIFFY_FUZZ=ON -DJIFFY_TESTS=OFF >/dev/null
cmake --build build-fuzz --target fuzzers -j"$(nproc)"

export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=1:allocator_may_return_null=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
failed=()
summary=()
for t in "${targets[@]}"; do
  bin=build-fuzz/fuzz/fuzz_$t
  work=build-fuzz/fuzz-work/$t
  findings=build-fuzz/findings/$t
  rm -rf "$work" "$findings"
  mkdir -p "$work" "$findings"
  cp -r "fuzz/corpus/$t/." "$work/"
  log=build-fuzz/fuzz-$t.log
  echo "fuzz: $t for ${seconds}s"
  rc=0
  # -timeout: one input taking 10 s is a hang; -rss_limit_mb: a memory blow-up.
  "$bin" "$work" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$findings/" >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
  [ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9]*\)[[:space:]]*DONE.*/\1/p' "$log" | tail -1)
  cov=$(sed -n 's/^#[0-9]*[[:space:]]*DONE[[:space:]]*cov: \([0-9]*\).*/\1/p' "$log" | tail -1)
  if ((rc != 0)) || ls "$findings" | grep -q .; then
    failed+=("$t")
    summary+=("$(printf '%-16s FAILED (exit %d) after %s executions; see %s and %s' "$t" "$rc" "${execs:-?}" "$log" "$findings")")
    grep -E '^(==[0-9]+==ERROR|SUMMARY|fuzz check failed|.*runtime error)' "$log" | head -5 || true
  else
    summary+=("$(printf '%-16s %10s executions in %ss (coverage %s)' "$t" "${execs:-?}" "$seconds" "${cov:-?}")")
  fi
done

echo "fuzz: summary"
printf '  %s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: no findings"
