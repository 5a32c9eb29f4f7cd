#!/bin/bash
# Counts the system calls a server's worker makes per handshake, with
# `strace -c -f`: exact counts, unlike CPU time on a shared machine.
#
# usage: bench/syscalls.sh mtls|nginx|nginx-tuned full|resumed [N]
#   N  handshakes measured, each with one GET /test (default 1000)
# Environment: BENCH_BUILD (default build-release), MTLS_SERVER (another mtls
# binary to serve with; the load generator stays BENCH_BUILD's), STRACE_RAW=FILE
# to write every call to FILE instead of counting.
#
# The server runs with 1 worker (mtls: --workers 1, nginx: worker_processes
# 1); 50 handshakes warm it up, then strace attaches to the worker, N
# handshakes run from `mtls bench --requests-per-conn 1 -n N -c 4`, and the
# per-call counts (total and failed) are divided by the handshakes completed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SERVER=${1:?usage: $0 mtls|nginx|nginx-tuned full|resumed [N]}
CASE=${2:?usage: $0 mtls|nginx|nginx-tuned full|resumed [N]}
N=${3:-1000}
BUILD=${BENCH_BUILD:-build-release}
command -v strace >/dev/null || { echo "error: strace is not installed" >&2; exit 1; }

cd "$ROOT"
if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" --buildtype=release -Dunit_tests=disabled >/dev/null
fi
ninja -C "$BUILD" mtls >/dev/null
MTLS=$ROOT/$BUILD/mtls
SERVE_BIN=${MTLS_SERVER:-$MTLS}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mtls-sys.XXXXXX")
PGID=""
TRACER=""
stop() {
    [ -n "$TRACER" ] && kill -INT "$TRACER" 2>/dev/null || true
    if [ -n "$PGID" ]; then
        kill -TERM -- "-$PGID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 -- "-$PGID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$PGID" 2>/dev/null || true
        PGID=""
    fi
}
trap 'stop; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

"$MTLS" init --dir "$WORK/pki" --key-type ec >/dev/null
PKI=$WORK/pki
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/srv"
case $SERVER in
mtls)
    (cd "$WORK/srv" && exec setsid "$SERVE_BIN" serve --listen "127.0.0.1:$PORT" --workers 1 \
        --cert "$PKI/server.crt" --key "$PKI/server.key" --client-ca "$PKI/clientca.crt") \
        >"$WORK/server.log" 2>&1 &
    ;;
nginx | nginx-tuned)
    tune=()
    [ "$SERVER" = nginx-tuned ] && tune=(-e "s|@TUNING@|ssl_session_cache shared:SSL:10m; ssl_session_tickets off;|")
    sed -e "s|@WORKERS@|1|; s|@PREFIX@|$WORK/srv|g; s|@PORT@|$PORT|" \
        -e "s|@SERVER_CERT@|$PKI/server.crt|; s|@SERVER_KEY@|$PKI/server.key|" \
        -e "s|@CLIENT_CA@|$PKI/clientca.crt|; s|@ACCESS_LOG@|$WORK/srv/access.log|" \
        "${tune[@]}" -e "s|@TUNING@||" bench/nginx.conf.in >"$WORK/nginx.conf"
    setsid "$NGINX" -p "$WORK/srv" -c "$WORK/nginx.conf" -e "$WORK/srv/error.log" \
        >"$WORK/server.log" 2>&1 &
    ;;
*) echo "error: unknown server '$SERVER'" >&2; exit 2 ;;
esac
PGID=$!
for _ in $(seq 100); do
    curl -s -o /dev/null --max-time 5 --cacert "$PKI/serverca.crt" --cert "$PKI/client.crt" \
        --key "$PKI/client.key" "https://localhost:$PORT/test" && break
    sleep 0.1
done
# The worker: the one child of the master (both servers have exactly one).
WORKER=$(pgrep -P "$PGID" | head -1)
[ -n "$WORKER" ] || { echo "error: no worker process found" >&2; exit 1; }

case $CASE in
full) LOAD=(--requests-per-conn 1 -c 4) ;;
resumed) LOAD=(--requests-per-conn 1 --resume -c 4) ;;
*) echo "error: unknown case '$CASE'" >&2; exit 2 ;;
esac
bench=("$MTLS" bench "https://localhost:$PORT/test" --cacert "$PKI/serverca.crt"
    --cert "$PKI/client.crt" --key "$PKI/client.key" "${LOAD[@]}" -d 600)
"${bench[@]}" -n 50 >/dev/null

if [ -n "${STRACE_RAW:-}" ]; then
    # Every call, for reading one connection's sequence: STRACE_RAW=FILE.
    strace -f -o "$STRACE_RAW" -p "$WORKER" 2>"$WORK/strace.err" &
else
    strace -f -c -U name,calls,errors -o "$WORK/strace.txt" -p "$WORKER" 2>"$WORK/strace.err" &
fi
TRACER=$!
# strace says so on stderr once it is attached.
for _ in $(seq 100); do grep -q "attached" "$WORK/strace.err" 2>/dev/null && break; sleep 0.05; done
"${bench[@]}" -n "$N" --json >"$WORK/bench.json"
sleep 0.3 # the last closes
kill -INT "$TRACER"
wait "$TRACER" 2>/dev/null || true
TRACER=""
[ -n "${STRACE_RAW:-}" ] && exit 0
/usr/bin/python3 - "$WORK/bench.json" "$WORK/strace.txt" "$SERVER" "$CASE" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
hs = r["handshakes"]
if r["errors"]["total"]:
    sys.exit("error: %d errors during the run" % r["errors"]["total"])
rows = []
for line in open(sys.argv[2]):
    f = line.split()
    if len(f) >= 2 and f[1].isdigit() and f[0] != "total":
        rows.append((f[0], int(f[1]), int(f[2]) if len(f) > 2 and f[2].isdigit() else 0))
total = sum(c for _, c, _ in rows)
print(f"{sys.argv[3]} {sys.argv[4]}: {total / hs:.1f} system calls per handshake "
      f"({hs} handshakes, {r['handshakes_resumed']} resumed)")
for name, calls, errors in sorted(rows, key=lambda x: -x[1]):
    print(f"  {name:<16} {calls / hs:6.2f}" + (f"  ({errors / hs:.2f} failed)" if errors else ""))
EOF
