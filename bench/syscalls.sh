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

SERVER=${1:?usage: $0 mtls|nginx|nginx-tuned full|resumed [N]}
CASE=${2:?usage: $0 mtls|nginx|nginx-tuned full|resumed [N]}
N=${3:-1000}
command -v strace >/dev/null || { echo "error: strace is not installed" >&2; exit 1; }
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
case $CASE in full | resumed) bench_load "$CASE" ;; *) echo "error: unknown case '$CASE'" >&2; exit 2 ;; esac

bench_build
TRACER=""
trap '[ -z "$TRACER" ] || kill -INT "$TRACER" 2>/dev/null; bench_stop_server; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

bench_pki mtls-sys ec
PORT=$(bench_free_port)
mkdir -p "$WORK/srv"
case $SERVER in
mtls)
    (cd "$WORK/srv" && exec setsid "$SERVE_BIN" serve --listen "127.0.0.1:$PORT" --workers 1 \
        --cert "$PKI/server.crt" --key "$PKI/server.key" --client-ca "$PKI/clientca.crt") \
        >"$WORK/server.log" 2>&1 &
    ;;
nginx | nginx-tuned)
    bench_nginx_conf "$SERVER" bench/nginx.conf.in "$WORK/nginx.conf" -e "s|@WORKERS@|1|"
    setsid "$NGINX" -p "$WORK/srv" -c "$WORK/nginx.conf" -e "$WORK/srv/error.log" \
        >"$WORK/server.log" 2>&1 &
    ;;
*) echo "error: unknown server '$SERVER'" >&2; exit 2 ;;
esac
PGID=$!
bench_wait_ready 100 0.1
# The worker: the one child of the master (both servers have exactly one).
WORKER=$(pgrep -P "$PGID" | head -1)
[ -n "$WORKER" ] || { echo "error: no worker process found" >&2; exit 1; }

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
