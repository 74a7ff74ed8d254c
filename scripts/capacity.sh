#!/usr/bin/env bash
# Holds N idle WebSocket connections (default 19,000: the open-file limit here is 20,000 per
# process) on one `hibiki serve` worker and measures what they cost: the server's RSS growth
# per connection, kernel socket memory (/proc/net/sockstat) and kernel objects (/proc/slabinfo,
# when readable) per connection, for both ends of each loopback connection together.
# usage: scripts/capacity.sh [N] [SECONDS]     env: HIBIKI (binary), DEFLATE=1 (server offers deflate)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-19000}
D=${2:-10}
BIN=${HIBIKI:-target/release/hibiki}
[ -x "$BIN" ] || cargo build --release --quiet --bin hibiki
PORT=${PORT:-8391}
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt "$N" ] || { echo "open-file limit $(ulimit -n) is below $N connections + a few" >&2; exit 1; }
args=(serve --listen "127.0.0.1:$PORT" --threads 1)
[ "${DEFLATE:-0}" = 1 ] || args+=(--no-deflate)
RUST_LOG=warn taskset -c 0 "$BIN" "${args[@]}" >/dev/null 2>&1 &
S=$!
trap 'kill $S 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.05; done

sockstat() { awk '/^TCP:/ { for (i = 2; i < NF; i += 2) if ($i == "mem") print $(i + 1) }' /proc/net/sockstat; }
slab() { # bytes in the slab caches a TCP connection uses
  [ -r /proc/slabinfo ] || { echo 0; return; }
  awk '$1 ~ /^(TCP|tcp_bind_bucket|tcp_bind2_bucket|request_sock_TCP|sock_inode_cache|dentry|filp|eventpoll_epi|skbuff_head_cache|kmalloc-.*)$/ { s += $3 * $4 } END { print s }' /proc/slabinfo
}
PAGES0=$(sockstat); SLAB0=$(slab)
taskset -c 1 "$BIN" load idle --url "ws://127.0.0.1:$PORT/echo" -c "$N" -d "$D" --server-pid "$S" >"${TMPDIR:-/tmp}/capacity-load.txt" 2>&1 &
L=$!
# Sample the kernel once every connection is open (the server's gauge says so).
for _ in $(seq 1200); do
  open=$(curl -sf "http://127.0.0.1:$PORT/metrics" | awk '$1 == "hibiki_connections" { print $2 }')
  [ "${open:-0}" -ge "$N" ] && break
  sleep 0.1
done
sleep 1
PAGES1=$(sockstat); SLAB1=$(slab)
wait $L
cat "${TMPDIR:-/tmp}/capacity-load.txt"
python3 - "$N" "$PAGES0" "$PAGES1" "$SLAB0" "$SLAB1" <<'PY'
import sys
n, p0, p1, s0, s1 = map(int, sys.argv[1:])
pages = p1 - p0
print(f"  kernel          TCP buffer memory (sockstat 'mem') {p0} -> {p1} pages: {pages * 4096 / n:,.0f} B per connection (both ends)")
if s1:
    print(f"  kernel          slab objects (TCP, inode, dentry, file, epoll, kmalloc) {s0 / 1048576:,.1f} -> {s1 / 1048576:,.1f} MiB: {(s1 - s0) / n:,.0f} B per connection (both ends)")
PY
