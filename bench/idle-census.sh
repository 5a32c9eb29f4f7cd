#!/bin/bash
# bench/idle-census.sh [SERVER] [CONNECTIONS]: what one idle mTLS connection
# keeps on the heap, by block size, for mtls or nginx-tuned (Mozilla's
# configuration: shared session cache, no tickets), 1 worker, ECDSA P-256.
#
# The server runs with bench/alloc_census.so preloaded. Once it answers, a
# first census is taken; then `mtls bench --idle` opens CONNECTIONS [1000]
# mTLS connections and holds them; when the server's worker has them all
# established (counted with ss), a second census is taken. The difference,
# divided by CONNECTIONS, is what each held connection keeps: blocks and
# usable bytes by size class, plus glibc's 8-byte chunk header per block
# (malloc's own bookkeeping, which counts in RSS too).
#
#   bench/idle-census.sh mtls 1000
#   bench/idle-census.sh nginx-tuned 1000
#
# Needs a release build in build-release (made if missing), nginx for
# nginx-tuned, gcc, ss (iproute2). Uses the OpenSSL the system has: run it on
# Debian 12 and on Debian 13 to compare OpenSSL 3.0 and 3.5.
set -euo pipefail

SERVER=${1:-mtls}
CONNS=${2:-1000}
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

die() { printf 'idle-census: error: %s\n' "$*" >&2; exit 1; }
cleanup() {
    bench_stop_server
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

case $SERVER in mtls | nginx-tuned) ;; *) die "SERVER is mtls or nginx-tuned, not '$SERVER'" ;; esac
bench_build || die "cannot build mtls in $BUILD"
bench_pki mtls-census ec
gcc -O2 -Wall -Werror -shared -fPIC -o "$WORK/alloc_census.so" bench/alloc_census.c -ldl ||
    die "cannot build bench/alloc_census.c"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

PORT=$(bench_free_port)
mkdir -p "$WORK/srv"
case $SERVER in
mtls)
    (cd "$WORK/srv" && LD_PRELOAD=$WORK/alloc_census.so exec setsid "$MTLS" serve \
        --listen "127.0.0.1:$PORT" --cert "$PKI/server.crt" --key "$PKI/server.key" \
        --client-ca "$PKI/clientca.crt" --workers 1 --idle-timeout 600) >"$WORK/out.log" 2>&1 &
    ;;
nginx-tuned)
    bench_nginx_conf "$SERVER" bench/nginx.conf.in "$WORK/srv/nginx.conf" -e "s|@WORKERS@|1|" \
        -e "s|keepalive_timeout 120s|keepalive_timeout 600s|"
    LD_PRELOAD=$WORK/alloc_census.so setsid "$NGINX" -p "$WORK/srv" -c "$WORK/srv/nginx.conf" \
        -e "$WORK/srv/error.log" >"$WORK/out.log" 2>&1 &
    ;;
esac
PGID=$!
for _ in $(seq 100); do
    bench_get && break
    kill -0 "$PGID" 2>/dev/null || { cat "$WORK/out.log" >&2; die "$SERVER did not start"; }
    sleep 0.1
done
# The worker: the one child of the main process (both servers fork one).
WORKER=""
for _ in $(seq 100); do
    WORKER=$(pgrep -P "$PGID" | head -1 || true)
    [ -n "$WORKER" ] && break
    sleep 0.1
done
[ -n "$WORKER" ] || die "$SERVER has no worker process"
# Warm up as make bench does before its idle case: a few hundred handshakes.
"$MTLS" bench "https://localhost:$PORT/test" --cacert "$PKI/serverca.crt" --cert "$PKI/client.crt" \
    --key "$PKI/client.key" -c 8 -n 400 --json >/dev/null 2>&1 || die "warm-up failed"

# The census lines the worker has written so far (nginx's go to its error log).
census_lines() {
    cat "$WORK/out.log" "$WORK/srv/error.log" 2>/dev/null | grep "^census $WORKER " || true
}
census() {
    # Ask for a census and wait until its total line has been written.
    local before now
    before=$(census_lines | grep -c " total " || true)
    kill -s RTMIN+3 "$WORKER"
    for _ in $(seq 100); do
        now=$(census_lines | grep -c " total " || true)
        [ "$now" -gt "$before" ] && return 0
        sleep 0.05
    done
    die "the worker wrote no census (is bench/alloc_census.so preloaded?)"
}
established() {
    ss -Htn state established "( sport = :$PORT )" | wc -l
}

census
"$MTLS" bench "https://localhost:$PORT/test" --cacert "$PKI/serverca.crt" --cert "$PKI/client.crt" \
    --key "$PKI/client.key" -c "$CONNS" -d 30 --idle --json >"$WORK/idle.json" 2>&1 &
BENCH=$!
for _ in $(seq 600); do
    [ "$(established)" -ge "$CONNS" ] && break
    kill -0 "$BENCH" 2>/dev/null || break
    sleep 0.05
done
[ "$(established)" -ge "$CONNS" ] || die "only $(established) of $CONNS connections were established"
# Established in the kernel is not yet handshaken in the server, and mtls
# frees a connection's record buffers once it has been quiet for a second
# (RELEASE_BUFFERS_MS in src/server/worker.c): wait until the live block count
# is the same in two censuses 1.2 s apart.
prev=-1
for _ in $(seq 20); do
    census
    cur=$(census_lines | grep " total " | tail -1 | awk '{print $4}')
    [ "$cur" = "$prev" ] && break
    prev=$cur
    sleep 1.2
done
kill "$BENCH" 2>/dev/null || true

census_lines | /usr/bin/python3 -c '
import sys, collections
conns = int(sys.argv[1]); server = sys.argv[2]
censuses = []; cur = {}
for line in sys.stdin:
    _, _, cls, blocks, size = line.split()
    if cls == "total":
        censuses.append(cur); cur = {}
    else:
        cur[int(cls)] = (int(blocks), int(size))
first, last = censuses[0], censuses[-1]
print(f"{server}: heap kept per idle mTLS connection ({conns} held, 1 worker)")
print("%14s %8s %8s" % ("block size <=", "blocks", "bytes"))
tb = tn = 0
for cls in sorted(set(first) | set(last)):
    b = (last.get(cls, (0, 0))[0] - first.get(cls, (0, 0))[0]) / conns
    n = (last.get(cls, (0, 0))[1] - first.get(cls, (0, 0))[1]) / conns
    if abs(b) < 0.05:
        continue
    tb += b; tn += n
    print(f"{cls:>14} {b:8.1f} {n:8.0f}")
print("%14s %8.1f %8.0f" % ("total", tb, tn))
print("%14s %8s %8.0f  (with 8 bytes of glibc chunk header per block)" % ("total", "", tn + 8 * tb))
' "$CONNS" "$SERVER"
