#!/bin/sh
# Runs every jiffy benchmark in one go: the launch cost (issue 2,
# launch_bench.py), the MPI start-up cost (issue 3, mpi_bench.py) and the
# suite under make -j (issue 10, suite_bench.py), each after waiting for a
# quiet machine (wait_quiet.py).
#
#   bench/run_all.sh [--quick] [--no-wait] [--no-snapshot] [--jiffy PATH]
#
#   --quick        fewer repetitions in every benchmark (a smoke run)
#   --no-wait      do not wait for the load average to drop first
#   --jiffy PATH   the jiffy binary (default: $JIFFY_BUILD_DIR/jiffy or
#                  <repo>/build/jiffy); jiffy-launch, jiffyd, jiffy-pmix and mpi/hello.*
#                  are taken from beside it
#   --no-snapshot  run the binaries in place instead of from a private copy
#                  (the copy keeps a rebuild during the run from breaking it)
#
# Environment: WAIT_BELOW (default 1.0), WAIT_HOLD (seconds, default 30) and
# WAIT_MAX (seconds, default 300) tune the wait; LAUNCH_ARGS, MPI_ARGS and
# SUITE_ARGS are extra arguments for launch_bench.py, mpi_bench.py and
# suite_bench.py (e.g. MPI_ARGS="--reps 40"). Exits non-zero if any
# benchmark fails.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
[ -x "$py" ] || py=python3
common=""
jiffy=""
wait=1
snapshot=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) common="$common --quick" ;;
        --no-wait) wait=0 ;;
        --no-snapshot) snapshot=0 ;;
        --jiffy) [ $# -ge 2 ] || { echo "run_all.sh: --jiffy needs a path" >&2; exit 2; }
                 jiffy=$2; shift ;;
        --jiffy=*) jiffy=${1#--jiffy=} ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run_all.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$snapshot" = 1 ]; then
    src=${jiffy:-${JIFFY_BUILD_DIR:-$here/../build}/jiffy}
    [ -x "$src" ] || { echo "run_all.sh: no jiffy at $src (build it or pass --jiffy)" >&2; exit 1; }
    srcdir=$(cd "$(dirname "$src")" && pwd)
    snap=$(mktemp -d /tmp/jfbench-bin-XXXXXX)
    trap 'rm -rf "$snap"' EXIT
    trap 'exit 130' INT TERM
    cp -p "$src" "$snap/jiffy"
    for f in jiffy-launch jiffyd jiffy-pmix; do
        if [ -e "$srcdir/$f" ]; then cp -p "$srcdir/$f" "$snap/"; fi
    done
    mkdir "$snap/mpi"
    for f in "$srcdir"/mpi/hello.*; do
        if [ -e "$f" ]; then cp -p "$f" "$snap/mpi/"; fi
    done
    "$snap/jiffy" --version >/dev/null || { echo "run_all.sh: the copied jiffy does not run" >&2; exit 1; }
    echo "binaries: a private copy of $srcdir (jiffy, jiffy-launch, jiffyd, jiffy-pmix, mpi/hello.*)"
    jiffy=$snap/jiffy
fi

quiet() {
    [ "$wait" = 1 ] || return 0
    "$py" "$here/wait_quiet.py" --below "${WAIT_BELOW:-1.0}" --hold "${WAIT_HOLD:-30}" --max "${WAIT_MAX:-300}"
}

echo "== launch cost (issue 2): bench/launch_bench.py$common ${LAUNCH_ARGS:-}"
quiet
# shellcheck disable=SC2086  # word splitting of the option lists is intended
"$py" "$here/launch_bench.py" $common ${jiffy:+--jiffy "$jiffy"} ${LAUNCH_ARGS:-}
echo
echo "== MPI start-up and no-MPI cost (issue 3): bench/mpi_bench.py$common ${MPI_ARGS:-}"
quiet
# shellcheck disable=SC2086
"$py" "$here/mpi_bench.py" $common ${jiffy:+--jiffy "$jiffy"} ${MPI_ARGS:-}
echo
echo "== a suite under make -j (issue 10): bench/suite_bench.py$common ${SUITE_ARGS:-}"
quiet
# shellcheck disable=SC2086
"$py" "$here/suite_bench.py" $common ${jiffy:+--jiffy "$jiffy"} ${SUITE_ARGS:-}
