#!/bin/sh
# Installs what mtls needs to build, test and demo on Debian 12, and nothing
# when it is all there already. Run as root (it uses apt-get); `make demo`,
# `make test` and `make bench` call it.
#
# Usage: scripts/install-deps.sh [build|test|bench]
set -eu

need_build="gcc make pkg-config meson ninja-build libssl-dev libuv1-dev node-llhttp libcjson-dev openssl"
need_test="$need_build libcriterion-dev clang-format git python3 python3-pytest curl clang libclang-rt-14-dev nodejs"
need_bench="$need_test nginx-light nodejs npm valgrind"

case "${1:-build}" in
build) want=$need_build ;;
test) want=$need_test ;;
bench) want=$need_bench ;;
*) echo "usage: $0 [build|test|bench]" >&2; exit 2 ;;
esac

missing=""
for pkg in $want; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $pkg"
    fi
done
# nodejs may come from elsewhere (nvm, NodeSource); a working `node` is enough.
case " $missing " in *" nodejs "*) command -v node >/dev/null 2>&1 && missing=$(echo "$missing" | sed 's/ nodejs//') ;; esac
case " $missing " in *" npm "*) command -v npm >/dev/null 2>&1 && missing=$(echo "$missing" | sed 's/ npm//') ;; esac

[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "error: missing packages:$missing; run 'sudo $0 ${1:-build}' or install them" >&2
    exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
