#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a running job: installs what
# is missing (as root, or through sudo), builds jiffy into build/, then runs a
# real 2-rank job. The daemon starts itself on that first launch.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(g++ musl-tools cmake ninja-build pkg-config libhwloc-dev nlohmann-json3-dev libgtest-dev
          python3 python3-pytest mpich libmpich-dev openmpi-bin libopenmpi-dev libpmix-dev
          hyperfine libsqlite3-dev chromium tmux
          munge slurmctld slurmd slurm-client  # the slurm backend's tests run a real Slurm
          dpkg-dev groff-base man-db bash-completion git)  # the package, its man page and completion
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

build_type=${JIFFY_BUILD_TYPE:-RelWithDebInfo}
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="$build_type" ${JIFFY_CMAKE_ARGS:-} >/dev/null
cmake --build build -j"$(nproc)"

echo "setup: built build/jiffy; running a 2-rank job:"
build/jiffy -n 2 sh -c 'echo "rank $JIFFY_RANK of $JIFFY_SIZE on core $JIFFY_CORES (job $JIFFY_JOB_ID)"'
