#!/bin/bash
# make bench: mtls serve, nginx (ssl_verify_client on) and the tutorial's
# Express server, one after the other on this machine, with the same
# certificates and the same load from `mtls bench`; prints one table with the
# raw figures and the ratios mtls/nginx and mtls/Express, and writes it with
# the machine's description to bench/results/<date>-<host>.md. nginx runs
# twice: as installed (nginx: no session cache, two stateless tickets per
# handshake) and as operators are told to configure it (nginx-tuned, Mozilla's
# recommendation: ssl_session_cache shared:SSL:10m; ssl_session_tickets off;);
# mtls is compared with the cheaper of the two for each case.
#
# Environment (defaults in brackets):
#   BENCH_DURATION       seconds per measurement [4]
#   BENCH_WARMUP         seconds of unrecorded load after each start [1]
#   BENCH_CONNECTIONS    concurrent connections of the handshake and keep-alive cases [32]
#   BENCH_IDLE_CONNS     connections held open for the memory case [2000]
#   BENCH_IDLE_DURATION  seconds the idle connections are opened and held [8]
#   BENCH_SERVERS        which servers ["mtls nginx nginx-tuned express"]
#   BENCH_KEYS           certificate types: ec (ECDSA P-256), rsa (RSA-2048) ["ec rsa"]
#   BENCH_IDLE_KEYS      certificate types for the idle-memory case, empty for none ["ec"]
#   BENCH_WORKERS        worker counts ["1 <cores>"]
#   BENCH_BUILD          build folder for an optimized mtls [build-release]
#   BENCH_RESULTS        where the table is written [bench/results]
#   BENCH_KEEP_RAW       a folder to copy every JSON report of `mtls bench` into [none]
#   BENCH_CASES          which cases ["full resumed keepalive h2 proxied"] (idle: BENCH_IDLE_KEYS)
#
# The proxied case: keep-alive GET /app through `mtls serve --upstream` and
# through nginx's proxy_pass (bench/nginx-proxy.conf.in: HTTP/1.1 upstream
# keep-alive, shared session cache) to the same upstream, nginx answering 200
# on a plain port (bench/upstream.conf.in, 1 process, not counted as server
# CPU). Express has no proxy here: its column stays empty.
#
# With 1 worker the server is pinned to CPU 0 and the load generator to CPU 1
# (when there are two CPUs or more), so that each has a core of its own; with
# more workers nothing is pinned.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

CORES=$(nproc)
DURATION=${BENCH_DURATION:-4}
WARMUP=${BENCH_WARMUP:-1}
CONNS=${BENCH_CONNECTIONS:-32}
IDLE_CONNS=${BENCH_IDLE_CONNS:-2000}
IDLE_DURATION=${BENCH_IDLE_DURATION:-8}
SERVERS=${BENCH_SERVERS:-mtls nginx nginx-tuned express}
KEYS=${BENCH_KEYS:-ec rsa}
IDLE_KEYS=${BENCH_IDLE_KEYS-ec}
CASES=${BENCH_CASES:-full resumed keepalive h2 proxied}
if [ "$CORES" -gt 1 ]; then WORKERS=${BENCH_WORKERS:-1 $CORES}; else WORKERS=${BENCH_WORKERS:-1}; fi
BUILD=${BENCH_BUILD:-build-release}
RESULTS=${BENCH_RESULTS:-bench/results}
PYTHON=/usr/bin/python3
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

say() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

# ---- everything started here is stopped on the way out -----------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mtls-bench.XXXXXX")
SERVER_PGID=""
UPSTREAM_PGID=""
stop_server() {
    if [ -n "$SERVER_PGID" ]; then
        kill -TERM -- "-$SERVER_PGID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 -- "-$SERVER_PGID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$SERVER_PGID" 2>/dev/null || true
        SERVER_PGID=""
    fi
}
cleanup() {
    local rc=$?
    stop_server
    if [ -n "$UPSTREAM_PGID" ]; then
        kill -TERM -- "-$UPSTREAM_PGID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- build and peers ------------------------------------------------------------
if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" --buildtype=release -Dunit_tests=disabled >/dev/null
fi
ninja -C "$BUILD" mtls >/dev/null || die "cannot build mtls in $BUILD"
MTLS=$ROOT/$BUILD/mtls

want() { case " $SERVERS " in *" $1 "*) return 0 ;; esac; return 1; }
if want mtls && ! "$MTLS" serve --help >/dev/null 2>&1; then
    say "this mtls has no 'serve' command yet: measuring the peers only"
    SERVERS=$(echo " $SERVERS " | sed 's/ mtls / /')
fi
has_case() { case " $CASES " in *" $1 "*) return 0 ;; esac; return 1; }
if { want nginx || want nginx-tuned || has_case proxied; } && [ ! -x "$NGINX" ]; then
    die "nginx not found: run 'scripts/install-deps.sh bench' as root"
fi
if want express && [ ! -d bench/express/node_modules/express ]; then
    say "installing Express into bench/express/node_modules"
    (cd bench/express && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
        die "npm could not install Express (see bench/express/package.json)"
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

PIN_SERVER=()
PIN_CLIENT=()
# nginx-tuned: Mozilla's server-side TLS recommendation for nginx.
NGINX_TUNING="ssl_session_cache shared:SSL:10m; ssl_session_tickets off;"

# A TCP port that was free a moment ago.
free_port() {
    "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The process and all its descendants (nginx workers, Node cluster workers).
family() {
    local pid=$1 child
    echo "$pid"
    for child in $(pgrep -P "$pid" || true); do family "$child"; done
}


# The proxied case's upstream: nginx on a plain port, in its own process
# group (with the load generator's CPU pinning: its CPU is not the server's).
start_upstream() {
    local dir=$WORK/upstream
    mkdir -p "$dir"
    UPSTREAM_PORT=$(free_port)
    sed -e "s|@PREFIX@|$dir|g; s|@PORT@|$UPSTREAM_PORT|" bench/upstream.conf.in >"$dir/nginx.conf"
    local pin=()
    if [ "$CORES" -gt 1 ]; then pin=(taskset -c $((CORES - 1))); fi
    setsid "${pin[@]}" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" \
        >"$dir/out.log" 2>&1 &
    UPSTREAM_PGID=$!
    for _ in $(seq 100); do
        curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$UPSTREAM_PORT/" && return 0
        sleep 0.1
    done
    cat "$dir/error.log" >&2 || true
    die "the upstream (nginx on a plain port) did not start"
}

# start_server NAME KEYTYPE WORKERS [proxy]: starts it on $PORT in its own
# process group and waits until it answers GET /test with 200; with proxy,
# as a reverse proxy to the upstream.
start_server() {
    local name=$1 key=$2 workers=$3 mode=${4:-} pki=$WORK/pki-$2 dir=$WORK/run-$1-$2-$3${4:+-$4}
    local conf=bench/nginx.conf.in proxy_args=()
    mkdir -p "$dir"
    PORT=$(free_port)
    if [ "$mode" = proxy ]; then
        conf=bench/nginx-proxy.conf.in
        proxy_args=(--upstream "http://127.0.0.1:$UPSTREAM_PORT")
    fi
    case $name in
    mtls)
        # Logs as the others: access.log and system.log in its folder.
        (cd "$dir" && exec setsid "${PIN_SERVER[@]}" "$MTLS" serve --listen "127.0.0.1:$PORT" \
            --cert "$pki/server.crt" --key "$pki/server.key" --client-ca "$pki/clientca.crt" \
            --workers "$workers" "${proxy_args[@]}") >"$dir/out.log" 2>&1 &
        ;;
    nginx | nginx-tuned)
        local tuning=""
        [ "$name" = nginx-tuned ] && tuning=$NGINX_TUNING
        sed -e "s|@WORKERS@|$workers|; s|@PREFIX@|$dir|g; s|@PORT@|$PORT|; s|@TUNING@|$tuning|" \
            -e "s|@SERVER_CERT@|$pki/server.crt|; s|@SERVER_KEY@|$pki/server.key|" \
            -e "s|@CLIENT_CA@|$pki/clientca.crt|; s|@ACCESS_LOG@|$dir/access.log|" \
            -e "s|@UPSTREAM_PORT@|${UPSTREAM_PORT:-0}|" \
            "$conf" >"$dir/nginx.conf"
        setsid "${PIN_SERVER[@]}" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" \
            >"$dir/out.log" 2>&1 &
        ;;
    express)
        (cd "$dir" && PORT=$PORT WORKERS=$workers LOG_DIR=$dir CERT=$pki/server.crt \
            KEY=$pki/server.key CA=$pki/clientca.crt \
            exec setsid "${PIN_SERVER[@]}" node "$ROOT/bench/express/server.js") \
            >"$dir/out.log" 2>&1 &
        ;;
    esac
    SERVER_PGID=$!
    for _ in $(seq 100); do
        if curl -s -o /dev/null --max-time 2 --cacert "$pki/serverca.crt" \
            --cert "$pki/client.crt" --key "$pki/client.key" "https://localhost:$PORT/test"; then
            # Workers may still be starting: wait until the count is right.
            sleep 0.3
            PIDS=$(family "$SERVER_PGID")
            return 0
        fi
        kill -0 "$SERVER_PGID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$dir/out.log" "$dir/error.log" 2>/dev/null >&2 || true
    die "$name did not start (workers $workers, $key)"
}

# measure FILE ARGS...: one mtls bench run against the server ($MEASURE_PATH,
# default /test), JSON into FILE.
measure() {
    local out=$1 pki=$WORK/pki-$KEY pidargs=() p
    shift
    for p in $PIDS; do pidargs+=(--server-pid "$p"); done
    "${PIN_CLIENT[@]}" "$MTLS" bench "https://localhost:$PORT${MEASURE_PATH:-/test}" \
        --cacert "$pki/serverca.crt" \
        --cert "$pki/client.crt" --key "$pki/client.key" "${pidargs[@]}" --json "$@" \
        >"$out" 2>"$out.err" || true
    [ -s "$out" ] || { cat "$out.err" >&2; die "mtls bench failed: $*"; }
}

# ---- certificates: made by mtls itself, used by every server -------------------
for key in $(echo "$KEYS $IDLE_KEYS" | tr ' ' '\n' | sort -u); do
    "$MTLS" init --dir "$WORK/pki-$key" --key-type "$key" >/dev/null
done

RES=$WORK/results
mkdir -p "$RES"
if has_case proxied; then
    start_upstream
fi
for workers in $WORKERS; do
    if [ "$workers" = 1 ] && [ "$CORES" -gt 1 ]; then
        PIN_SERVER=(taskset -c 0)
        PIN_CLIENT=(taskset -c 1)
    else
        PIN_SERVER=()
        PIN_CLIENT=()
    fi
    for KEY in $(echo "$KEYS $IDLE_KEYS" | tr ' ' '\n' | sort -u); do
        for server in $SERVERS; do
            cases=""
            case " $KEYS " in *" $KEY "*)
                for c in full resumed keepalive; do has_case $c && cases="$cases $c"; done
                # HTTP/2: mtls and nginx (http2 on); the tutorial's Express server has none.
                if has_case h2 && [ "$server" != express ]; then cases="$cases h2"; fi ;;
            esac
            case " $IDLE_KEYS " in *" $KEY "*) cases="$cases idle" ;; esac
            base=$RES/$server-$KEY-$workers
            if [ -n "$cases" ]; then
            say "$server, $workers worker(s), $KEY:$cases"
            start_server "$server" "$KEY" "$workers"
            if [ "$WARMUP" != 0 ]; then
                measure "$base-warmup.json" -c "$CONNS" -d "$WARMUP" --requests-per-conn 1
            fi
            for c in $cases; do
                case $c in
                full) measure "$base-full.json" -c "$CONNS" -d "$DURATION" --requests-per-conn 1 ;;
                resumed) measure "$base-resumed.json" -c "$CONNS" -d "$DURATION" \
                    --requests-per-conn 1 --resume ;;
                keepalive) measure "$base-keepalive.json" -c "$CONNS" -d "$DURATION" ;;
                h2) measure "$base-h2.json" -c "$CONNS" -d "$DURATION" --http2 --streams 10 ;;
                idle) measure "$base-idle.json" -c "$IDLE_CONNS" -d "$IDLE_DURATION" --idle ;;
                esac
            done
            stop_server
            fi
            # Proxied keep-alive requests (not Express: no proxy of its own here).
            if has_case proxied && [ "$server" != express ] && case " $KEYS " in *" $KEY "*) true ;; *) false ;; esac; then
                say "$server as a reverse proxy, $workers worker(s), $KEY: proxied"
                start_server "$server" "$KEY" "$workers" proxy
                MEASURE_PATH=/app
                if [ "$WARMUP" != 0 ]; then
                    measure "$base-proxied-warmup.json" -c "$CONNS" -d "$WARMUP"
                fi
                measure "$base-proxied.json" -c "$CONNS" -d "$DURATION"
                MEASURE_PATH=
                stop_server
            fi
        done
    done
done

mkdir -p "$RESULTS"
if [ -n "${BENCH_KEEP_RAW:-}" ]; then
    mkdir -p "$BENCH_KEEP_RAW"
    cp "$RES"/*.json "$BENCH_KEEP_RAW"/
fi
"$PYTHON" bench/report.py "$RES" "$RESULTS" "$MTLS" "$NGINX"
