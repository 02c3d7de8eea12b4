#!/usr/bin/env bash
# Builds the Debian package from the tree (CPack, CMakeLists.txt: Depends
# from dpkg-shlibdeps) into build/jiffy_<version>_<arch>.deb.
#
#   scripts/package.sh           build the package, print its path
#   scripts/package.sh --check   also install it with apt-get, run a 2-rank
#                                MPICH and a 2-rank Open MPI job from
#                                /usr/bin/jiffy with the build tree hidden
#                                (a tmpfs over build/ in a private mount
#                                namespace) and PATH=/usr/bin:/bin, check the
#                                man page and the completion, then remove the
#                                package and check that none of its files is
#                                left. Root only; refuses when a jiffy package
#                                is installed already (it would remove it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=$root/build

[ -f "$build/build.ninja" ] || scripts/setup.sh
cmake --build "$build" -j"$(nproc)" >/dev/null
rm -f "$build"/jiffy_*.deb
(cd "$build" && cpack -G DEB >/dev/null)
deb=$(ls "$build"/jiffy_*.deb)
echo "package: built $deb"
dpkg-deb -f "$deb" Package Version Depends | sed 's/^/package:   /'
[[ ${1:-} == --check ]] || exit 0

fail() {
  echo "package: FAILED: $*" >&2
  exit 1
}
[ "$(id -u)" = 0 ] || fail "--check installs the package: run it as root"
if dpkg-query -W -f='${Status}' jiffy 2>/dev/null | grep -q "install ok installed"; then
  fail "a jiffy package is installed already; --check would remove it"
fi

work=$(mktemp -d /tmp/jiffy-package.XXXXXX)
files=$work/files
dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { sub(/^\./, "", $6); print $6 }' >"$files"
cleanup() {
  JIFFY_RUNTIME_DIR=$work/rt /usr/bin/jiffy stop >/dev/null 2>&1 || true
  if dpkg-query -W -f='${Status}' jiffy 2>/dev/null | grep -q "install ok installed"; then
    DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq jiffy >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "package: apt-get install $deb"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$deb" >/dev/null
[ -x /usr/bin/jiffy ] || fail "/usr/bin/jiffy is not installed"
for p in jiffy-launch jiffy-pmix jiffyd jiffy-history; do
  [ -x "/usr/libexec/jiffy/$p" ] || fail "/usr/libexec/jiffy/$p is not installed"
done

# The MPI programs, out of the build tree that is about to be hidden.
cp "$build/mpi/hello.mpich" "$build/mpi/hello.openmpi" "$work/"
mkdir -m 700 "$work/rt"
# In a private mount namespace, with an empty tmpfs over build/: nothing of
# the build tree can be found, so the installed files alone must do.
hidden() {
  unshare --mount --propagation private /bin/sh -c 'mount -t tmpfs none "$0" && exec "$@"' \
    "$build" env -i PATH=/usr/bin:/bin HOME="$work" JIFFY_RUNTIME_DIR="$work/rt" "$@"
}
for flavour in mpich openmpi; do
  out=$(hidden jiffy -n 2 "$work/hello.$flavour" 2>&1) || fail "jiffy -n 2 hello.$flavour: $out"
  for r in 0 1; do
    grep -qx "hello $r of 2" <<<"$out" || fail "jiffy -n 2 hello.$flavour printed: $out"
  done
  echo "package: /usr/bin/jiffy -n 2 hello.$flavour: both ranks ran"
done
version=$(hidden jiffy --version) || fail "jiffy --version"
grep -q "^jiffy $(dpkg-deb -f "$deb" Version)\$" <<<"$version" || fail "jiffy --version printed: $version"
echo "package: $(head -1 <<<"$version"), $(sed -n 3p <<<"$version")"
if grep -qs '^path-exclude=/usr/share/man' /etc/dpkg/dpkg.cfg.d/*; then
  echo "package: this machine's dpkg leaves out manual pages (path-exclude): man jiffy not checked"
else
  [ "$(man -w jiffy 2>/dev/null)" = /usr/share/man/man1/jiffy.1.gz ] || fail "man -w jiffy: $(man -w jiffy 2>&1)"
fi
[ -f /usr/share/bash-completion/completions/jiffy ] || fail "no bash completion installed"
JIFFY_RUNTIME_DIR=$work/rt /usr/bin/jiffy stop >/dev/null

echo "package: apt-get remove jiffy"
DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq jiffy >/dev/null
left=$(while read -r f; do [ ! -e "$f" ] || echo "$f"; done <"$files")
[ -z "$left" ] || fail "files left after removal: $left"
[ ! -e /usr/libexec/jiffy ] || fail "/usr/libexec/jiffy is left after removal"
echo "package: installed, ran, removed cleanly ($(wc -l <"$files") files)"
