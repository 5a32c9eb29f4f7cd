# shellcheck shell=bash disable=SC2034  # sets variables for the scripts that source it
# Shared set-up of bench/instructions.sh, bench/syscalls.sh and
# bench/idle-census.sh, sourced by each after `set -euo pipefail`: the mtls
# build, a scratch folder with a PKI from `mtls init`, nginx's configuration,
# the server started in its own process group and stopped with it, and the
# load generator's arguments.
#
# Environment: BENCH_BUILD (default build-release), MTLS_SERVER (another mtls
# binary to serve with; the load generator stays BENCH_BUILD's).

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BENCH_BUILD:-build-release}
PGID=""
WORK=""

# Builds mtls (a release build unless BENCH_BUILD names another) and sets
# MTLS, SERVE_BIN and NGINX.
bench_build() {
    cd "$BENCH_ROOT" || exit 1
    if [ ! -f "$BUILD/build.ninja" ]; then
        meson setup "$BUILD" --buildtype=release -Dunit_tests=disabled >/dev/null || return 1
    fi
    ninja -C "$BUILD" mtls >/dev/null || return 1
    MTLS=$BENCH_ROOT/$BUILD/mtls
    SERVE_BIN=${MTLS_SERVER:-$MTLS}
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}

# bench_pki PREFIX KEYTYPE: makes WORK (a scratch folder named PREFIX.XXXXXX)
# and PKI in it (`mtls init`: server, client and both CAs).
bench_pki() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    "$MTLS" init --dir "$WORK/pki" --key-type "$2" >/dev/null
    PKI=$WORK/pki
}

# Prints a loopback TCP port that was free a moment ago.
bench_free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Stops the server started last (its whole process group, PGID), if any.
bench_stop_server() {
    if [ -n "$PGID" ]; then
        kill -TERM -- "-$PGID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 -- "-$PGID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$PGID" 2>/dev/null || true
        PGID=""
    fi
}

# bench_nginx_conf SERVER TEMPLATE OUT [SED ARGS...]: nginx's configuration
# for the PKI, PORT and a prefix in WORK/srv; SERVER nginx-tuned adds
# Mozilla's recommendation (a shared session cache, no tickets), nginx is as
# installed. Extra sed arguments (-e ...) apply last.
bench_nginx_conf() {
    local server=$1 template=$2 out=$3 tuning=""
    shift 3
    [ "$server" = nginx-tuned ] && tuning="ssl_session_cache shared:SSL:10m; ssl_session_tickets off;"
    sed -e "s|@PREFIX@|$WORK/srv|g; s|@PORT@|$PORT|; s|@TUNING@|$tuning|" \
        -e "s|@SERVER_CERT@|$PKI/server.crt|; s|@SERVER_KEY@|$PKI/server.key|" \
        -e "s|@CLIENT_CA@|$PKI/clientca.crt|; s|@ACCESS_LOG@|$WORK/srv/access.log|" \
        "$@" "$template" >"$out"
}

# One GET /test with the client certificate; fails while the server is not up.
bench_get() {
    curl -s -o /dev/null --max-time 5 --cacert "$PKI/serverca.crt" --cert "$PKI/client.crt" \
        --key "$PKI/client.key" "https://localhost:$PORT/test"
}

# bench_wait_ready TRIES PAUSE: waits until the server on PORT answers.
bench_wait_ready() {
    for _ in $(seq "$1"); do
        bench_get && break
        sleep "$2"
    done
}

# bench_load CASE: sets LOAD, the load generator's arguments for full or
# resumed handshakes (one request each) or keep-alive requests, from 4
# connections; exits on another case.
bench_load() {
    case $1 in
    full) LOAD=(--requests-per-conn 1 -c 4) ;;
    resumed) LOAD=(--requests-per-conn 1 --resume -c 4) ;;
    keepalive | proxied) LOAD=(-c 4) ;;
    *) echo "error: unknown case '$1'" >&2; exit 2 ;;
    esac
}
