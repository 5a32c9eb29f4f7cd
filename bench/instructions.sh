#!/bin/bash
# Counts the user-space instructions a server spends per handshake or per
# request, with valgrind's callgrind: exact and repeatable where CPU time on a
# shared machine is not (docs/PERFORMANCE.md uses both).
#
# usage: bench/instructions.sh mtls|nginx|nginx-tuned full|resumed|keepalive|proxied [N] [KEYTYPE]
#   nginx-tuned: nginx with Mozilla's recommendation (ssl_session_cache
#            shared:SSL:10m; ssl_session_tickets off;), nginx: as installed
#   N        operations measured (default 200 handshakes, or 10000 requests)
#   KEYTYPE  ec (default) or rsa
# Environment: BENCH_BUILD (default build-release), MTLS_SERVER (another mtls
# binary to serve with, e.g. an experimental build; the load generator stays
# BENCH_BUILD's), KEEP_PROFILE=FILE to keep the callgrind output, WORKERS=N
# (mtls only: N worker threads in the one process, default 1; with N > 1 a
# returning client may land on another worker than the one that made its
# session, as with worker processes), TICKET_KEYS=FILE (mtls only: serve with
# --ticket-keys FILE), METRICS=1 (mtls only: count metrics, --metrics-listen on
# a free loopback port).
#
# The server runs under callgrind with 1 worker (mtls: --worker-model thread,
# nginx: master_process off, so one process holds everything); 50 operations
# warm it up, then the counters are zeroed, N operations run, and the counters
# are dumped. Keep-alive requests are counted as the difference between a run
# of N and a run of N/5 requests, so that the 4 handshakes drop out.
#
# proxied: keep-alive GET /app through the server as a reverse proxy (mtls
# --upstream; nginx with bench/nginx-proxy.conf.in) to nginx answering on a
# plain port (bench/upstream.conf.in, not under callgrind). Only user-space
# instructions count: the proxy's extra system calls (a write and a read to
# the upstream per request) are kernel time, which `make bench` measures.
set -euo pipefail

SERVER=${1:?usage: $0 mtls|nginx|nginx-tuned full|resumed|keepalive|proxied [N] [ec|rsa]}
CASE=${2:?usage: $0 mtls|nginx|nginx-tuned full|resumed|keepalive|proxied [N] [ec|rsa]}
KEY=${4:-ec}
case $CASE in keepalive | proxied) N=${3:-10000} ;; *) N=${3:-200} ;; esac
command -v valgrind >/dev/null || { echo "error: valgrind is not installed" >&2; exit 1; }
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
bench_load "$CASE"

bench_build
UPSTREAM_PGID=""
trap 'bench_stop_server; [ -z "$UPSTREAM_PGID" ] || kill -TERM -- "-$UPSTREAM_PGID" 2>/dev/null; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

bench_pki mtls-instr "$KEY"
PORT=$(bench_free_port)
METRICS_PORT=$(bench_free_port)

URL_PATH=/test
PROXY_ARGS=()
NGINX_CONF=bench/nginx.conf.in
UPSTREAM_PORT=0
if [ "$CASE" = proxied ]; then
    URL_PATH=/app
    NGINX_CONF=bench/nginx-proxy.conf.in
    UPSTREAM_PORT=$(bench_free_port)
    mkdir -p "$WORK/upstream"
    sed -e "s|@PREFIX@|$WORK/upstream|g; s|@PORT@|$UPSTREAM_PORT|" bench/upstream.conf.in \
        >"$WORK/upstream.conf"
    setsid "$NGINX" -p "$WORK/upstream" -c "$WORK/upstream.conf" -e "$WORK/upstream/error.log" \
        >"$WORK/upstream.log" 2>&1 &
    UPSTREAM_PGID=$!
    for _ in $(seq 100); do
        curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$UPSTREAM_PORT/" && break
        sleep 0.1
    done
    PROXY_ARGS=(--upstream "http://127.0.0.1:$UPSTREAM_PORT")
fi

# run N: one measured run of N operations; writes "instructions operations
# resumed" to $WORK/result.
run() {
    local n=$1 out=$WORK/cg.out
    rm -f "$out"*
    mkdir -p "$WORK/srv"
    case $SERVER in
    mtls)
        (cd "$WORK/srv" && exec setsid valgrind --tool=callgrind --callgrind-out-file="$out.%p" \
            "$SERVE_BIN" serve --listen "127.0.0.1:$PORT" --workers "${WORKERS:-1}" --worker-model thread \
            --cert "$PKI/server.crt" --key "$PKI/server.key" --client-ca "$PKI/clientca.crt" \
            ${TICKET_KEYS:+--ticket-keys "$TICKET_KEYS"} "${PROXY_ARGS[@]}" \
            ${METRICS:+--metrics-listen "127.0.0.1:$METRICS_PORT"}) \
            >"$WORK/server.log" 2>&1 &
        ;;
    nginx | nginx-tuned)
        bench_nginx_conf "$SERVER" "$NGINX_CONF" "$WORK/nginx.conf" -e "s|@WORKERS@|1|" \
            -e "s|master_process on;|master_process off;|; s| reuseport||" \
            -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|"
        setsid valgrind --tool=callgrind --callgrind-out-file="$out.%p" "$NGINX" -p "$WORK/srv" \
            -c "$WORK/nginx.conf" -e "$WORK/srv/error.log" >"$WORK/server.log" 2>&1 &
        ;;
    *) echo "error: unknown server '$SERVER'" >&2; exit 2 ;;
    esac
    PGID=$!
    bench_wait_ready 300 0.2
    local bench=("$MTLS" bench "https://localhost:$PORT$URL_PATH" --cacert "$PKI/serverca.crt"
        --cert "$PKI/client.crt" --key "$PKI/client.key" "${LOAD[@]}" -d 600)
    "${bench[@]}" -n 50 >/dev/null || true
    # callgrind takes commands when the program next runs: the load itself
    # wakes it for the zeroing; one plain request wakes it for the dump.
    callgrind_control -z "$PGID" >/dev/null
    "${bench[@]}" -n "$n" --json >"$WORK/bench.json"
    callgrind_control -d "$PGID" >/dev/null
    local file="" ir
    for _ in $(seq 100); do
        file=$(ls "$out".*.* 2>/dev/null | head -1)
        [ -n "$file" ] && break
        bench_get || true
        sleep 0.2
    done
    sleep 0.5
    bench_stop_server
    [ -n "$file" ] || { echo "error: callgrind wrote no dump" >&2; exit 1; }
    ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$file")
    [ -n "${KEEP_PROFILE:-}" ] && cp "$file" "$KEEP_PROFILE"
    /usr/bin/python3 -c "
import json, sys
r = json.load(open('$WORK/bench.json'))
ops = r['responses'] if '$CASE' in ('keepalive', 'proxied') else r['handshakes']
if r['errors']['total']:
    sys.exit('error: %d errors during the run' % r['errors']['total'])
print($ir, ops, r['handshakes_resumed'])" >"$WORK/result"
}

if [ "$CASE" = keepalive ] || [ "$CASE" = proxied ]; then
    run $((N / 5))
    read -r ir_small ops_small _ <"$WORK/result"
    run "$N"
    read -r ir_big ops_big _ <"$WORK/result"
    per=$(( (ir_big - ir_small) / (ops_big - ops_small) ))
    echo "$SERVER $CASE ($KEY): $per instructions per request"
else
    run "$N"
    read -r ir ops resumed <"$WORK/result"
    echo "$SERVER $CASE ($KEY): $((ir / ops)) instructions per handshake ($resumed of $ops resumed)"
fi
