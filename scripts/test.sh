#!/usr/bin/env bash
# Runs every test: the GoogleTest unit tests (through CTest) and the pytest
# end-to-end tests that launch the real binaries. Builds first if needed.
# Extra arguments go to pytest (e.g. -k signals, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/build.ninja ] || scripts/setup.sh
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure -j"$(nproc)"
# Debian's python3 carries pytest (python3-pytest); a python3 earlier on PATH may not.
/usr/bin/python3 -m pytest -q tests/e2e "$@"
