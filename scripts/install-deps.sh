#!/bin/sh
# Installs what mtls needs to build, test and demo on Debian 12 (bookworm)
# and Debian 13 (trixie), and nothing when it is all there already. Run as
# root (it uses apt-get); `make demo`, `make test` and `make bench` call it.
#
# Usage: scripts/install-deps.sh [build|test|bench]
#
#   build  what `make demo` needs: a C toolchain, Meson, and the libraries
#   test   build + what `make test` needs: Criterion, pytest, the real
#          clients (curl, Node) and servers (nginx), clang for the fuzzers,
#          clang-format, and HAProxy with iproute2 (`ip netns`) for the
#          replicas test (tests/e2e/test_replicas.py, run as root)
#   bench  test + npm (Express, a benchmark peer) and valgrind
set -eu

# Packages are named by what they are for, with --no-install-recommends, so
# each one a compiler needs is listed: gcc alone does not bring libc6-dev
# (crt1.o, the C headers) without its recommends.
llhttp_pkg() {
    # Debian 12 ships llhttp as C sources (node-llhttp); Debian 13 as a
    # library with a pkg-config file (libllhttp-dev), and node-llhttp there
    # has no C sources. Ask apt which one this release has.
    if apt-cache show libllhttp-dev >/dev/null 2>&1; then
        echo libllhttp-dev
    else
        echo node-llhttp
    fi
}

need_build() {
    echo "gcc libc6-dev make pkg-config meson ninja-build libssl-dev libuv1-dev libcjson-dev libyaml-dev libnghttp2-dev openssl $(llhttp_pkg)"
}
need_test() {
    # libclang-rt-dev is the sanitizer and libFuzzer runtime of Debian's
    # default clang (14 on Debian 12, 19 on Debian 13). The rest are real
    # peers and consumers of what mtls emits: nginx-light (probe), man-db,
    # groff-base, zsh (man pages, completion), haproxy, iproute2 (replicas in
    # network namespaces), nghttp2-client, python3-h2 (HTTP/2), chromium,
    # libnss3-tools (a real browser with the .p12), prometheus (promtool
    # checks what /metrics serves), strace (counts a proxied request's system
    # calls), npm (the Express example behind the proxy).
    echo "$(need_build) libcriterion-dev clang-format git python3 python3-pytest curl clang libclang-rt-dev nodejs nginx-light man-db groff-base zsh haproxy iproute2 nghttp2-client python3-h2 chromium libnss3-tools prometheus strace npm"
}
need_bench() {
    echo "$(need_test) npm valgrind"
}

group=${1:-build}
case "$group" in
build | test | bench) ;;
*)
    echo "usage: $0 [build|test|bench]" >&2
    exit 2
    ;;
esac

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"
}

missing_in() {
    missing=""
    for pkg in $("need_$1"); do
        installed "$pkg" || missing="$missing $pkg"
    done
    # nodejs and npm may come from elsewhere (nvm, NodeSource): a working
    # command is enough.
    case " $missing " in *" nodejs "*) command -v node >/dev/null 2>&1 && missing=$(echo "$missing" | sed 's/ nodejs//') ;; esac
    case " $missing " in *" npm "*) command -v npm >/dev/null 2>&1 && missing=$(echo "$missing" | sed 's/ npm//') ;; esac
    echo "$missing"
}

# A fresh machine has no package lists, and apt-cache (llhttp_pkg) needs
# them: read the lists once, before deciding, only when something is missing
# by the names that need no lists.
missing=$(missing_in "$group")
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "error: missing packages:$missing; run 'sudo $0 $group' or install them" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
missing=$(missing_in "$group")
[ -z "$missing" ] && exit 0
echo "installing:$missing"
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
