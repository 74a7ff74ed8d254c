#!/usr/bin/env bash
# Cluster benchmarks, one run: one node with the in-memory hub beside two nodes over one
# Redis (a private redis-server without persistence), with `hibiki load`:
#   fan-out (publisher on A, subscribers split over A and B), publish-to-delivery latency
#   (1,000 and 100 subscribers), numbered publishes through one node at rising offered rates
#   (PUBLISH_RATES per publisher, 64 publishers) and the highest with 0 failed,
#   `redis-benchmark -P 64` of the node's publish script (a batch as the node sent them, and
#   one message), Redis script calls per publish, tick rooms with members on both nodes.
# Servers are pinned to CPU 1, the load tool and Redis to CPU 0 (SERVER_CPU, LOAD_CPU).
# HIBIKI: the server binary; HIBIKI_LOAD: the load tool (needs --url per node); DURATION s.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${HIBIKI:-target/release/hibiki}
LOAD=${HIBIKI_LOAD:-$BIN}
D=${DURATION:-5}
SERVER_CPU=${SERVER_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
DIR=$(mktemp -d)
RP=${REDIS_PORT:-6390}
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; redis-cli -p "$RP" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$DIR"; }
trap cleanup EXIT

taskset -c "$LOAD_CPU" redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no --dir "$DIR" --daemonize yes --pidfile "$DIR/redis.pid" >/dev/null
for _ in $(seq 50); do redis-cli -p "$RP" ping >/dev/null 2>&1 && break; sleep 0.1; done
REDIS=redis://127.0.0.1:$RP/

serve() { # port [args...]
  local port=$1; shift
  RUST_LOG=warn taskset -c "$SERVER_CPU" "$BIN" serve --listen "127.0.0.1:$port" --threads 1 "$@" >"$DIR/$port.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.05; done
}
serve 8181; S=${PIDS[-1]}
serve 8182 --redis "$REDIS" --node-id a; A=${PIDS[-1]}
serve 8183 --redis "$REDIS" --node-id b; B=${PIDS[-1]}
one=ws://127.0.0.1:8181/ws; a=ws://127.0.0.1:8182/ws; b=ws://127.0.0.1:8183/ws
load() { taskset -c "$LOAD_CPU" "$LOAD" load "$@" -d "$D" -q 2>&1 | grep -Ev '^\s*$'; }
step() { printf '\n=== %s\n' "$*"; }

for rate in 100 300; do
  step "fan-out, 5,000 subscribers, $rate msg/s: one node"
  load room -c 5000 --rate "$rate" --threads 1 --url "$one" --server-pid "$S" --room "chat:fan$rate"
  step "fan-out, 5,000 subscribers, $rate msg/s: publisher on A, subscribers split over A and B"
  load room -c 5000 --rate "$rate" --threads 1 --publish-url "$a" --url "$a" --url "$b" --server-pid "$A,$B" --redis "$REDIS" --room "chat:fanc$rate"
done

for n in 1000 100; do
  step "latency, $n subscribers, 50 msg/s: one node"
  load room -c "$n" --rate 50 --url "$one" --server-pid "$S" --room "chat:lat$n"
  step "latency, $n subscribers, 50 msg/s: publisher on A, subscribers on A and B"
  load room -c "$n" --rate 50 --publish-url "$a" --url "$a" --url "$b" --server-pid "$A,$B" --redis "$REDIS" --room "chat:latc$n"
done

# Offered rates in steps: the highest with every publish acked ok (0 failed, 0 unanswered,
# 0 lost) is printed, and how many publishes each script call carried there.
best=0; batch=1
for rate in ${PUBLISH_RATES:-400 600 800 1000 1200}; do
  step "numbered publishes through one node (A): 64 publishers x $rate/s, with ids, 10 subscribers"
  out=$(load room -c 10 --publishers 64 --rate "$rate" --publish-url "$a" --url "$a" --server-pid "$A" --redis "$REDIS" --room "chat:pub$rate")
  printf '%s\n' "$out"
  seqs=$(grep -E '^\s*seqs ' <<<"$out" || true)
  per=$(grep -oE '[0-9.]+ publishes per call' <<<"$out" | head -1 | cut -d' ' -f1)
  if [[ $seqs == *" 0 lost "* && $seqs != *failed* ]]; then
    best=$((rate * 64))
    batch=$(printf '%.0f' "${per:-1}")
  elif [[ $best == 0 && $batch == 1 ]]; then
    # None without failures yet: the batch size of the lowest rate stands in.
    batch=$(printf '%.0f' "${per:-1}")
  fi
done
step "highest offered rate through one node with 0 failed: $best publishes/s (batch for redis-benchmark: $batch publishes per script call)"

# The node's own script, as the node sends it: a batch of the size seen above, and one
# message; a new id each, 100 B payload, a subscriber on the channel (as node A is).
src=$(awk '/^const PUBLISH: &str = r"/{on=1; next} on && /^";/{exit} on' src/cluster/scripts.rs)
sha=$(redis-cli -p "$RP" script load "$src")
payload=$(head -c 100 /dev/zero | tr '\0' 'x')
redis-cli -p "$RP" subscribe 'rb{chat:rb}' >/dev/null &
PIDS+=($!)
bench() { # messages per call
  local n=$1 keys=() args=()
  for _ in $(seq "$n"); do keys+=('rb{chat:rb}.i.__rand_int__'); args+=(7 "$payload"); done
  local rps
  if ! rps=$(taskset -c "$SERVER_CPU" redis-benchmark -p "$RP" -P 64 -n $((1000000 / n)) -r 1000000000 -q evalsha "$sha" $((n + 2)) \
    'rb{chat:rb}.m' 'rb{chat:rb}.x' "${keys[@]}" 'rb{chat:rb}' e1 1000 0 150000 "${args[@]}" | tr '\r' '\n' | tail -1 | grep -oE '[0-9.]+ requests per second'); then
    # Say so and go on with the rest of the run, with what Redis says of itself.
    printf '%s messages per call: redis-benchmark failed\n' "$n"
    redis-cli -p "$RP" info | grep -E '^(connected_clients|used_memory_human|rejected_connections|total_error_replies|errorstat)' || echo "redis-server on port $RP does not answer"
    return 0
  fi
  printf '%s messages per call: %s, %s messages per second\n' "$n" "$rps" "$(awk -v r="${rps%% *}" -v n="$n" 'BEGIN { printf "%.0f", r * n }')"
}
step "redis-benchmark -P 64 of the node's publish script (one room, a new id each, 100 B payload)"
[[ $batch -gt 1 ]] && bench "$batch"
bench 1

step "tick room, 60 Hz, 2,000 members: one node"
load tick -c 2000 --rate 60 --url "$one" --server-pid "$S" --room game:t1
step "tick room, 60 Hz, 2,000 members split over A and B, publisher on A"
load tick -c 2000 --rate 60 --publish-url "$a" --url "$a" --url "$b" --server-pid "$A,$B" --redis "$REDIS" --room game:tc
