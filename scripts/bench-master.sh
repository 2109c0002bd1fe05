#!/usr/bin/env bash
# Throughput of durable-master (each --durability mode) against redis-server 7
# (appendonly yes, appendfsync everysec), each with one real replica attached, in the same run:
#   redis-benchmark -t set,get -P 16 -n $N -q
# Usage: scripts/bench-master.sh [N]   (default 200000). Needs redis-server and redis-benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
cargo build --release --bin durable-master >/dev/null 2>&1
BIN=target/release/durable-master
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
exec 3>&2 2>/dev/null
port() { local p; while :; do p=$((20000 + RANDOM % 40000)); redis-cli -p "$p" ping >/dev/null 2>&1 || { echo "$p"; return; }; done; }  # a free port
wait_up() { for _ in $(seq 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return; sleep 0.1; done; echo "port $1 not up" >&2; exit 1; }
replica() { # master port -> starts a replica, waits for link up
  local rp; rp=$(port); mkdir -p "$WORK/r$rp"
  redis-server --port "$rp" --replicaof 127.0.0.1 "$1" --dir "$WORK/r$rp" --save '' --appendonly no \
    --logfile "$WORK/r$rp/log" --daemonize no & PIDS+=($!)
  wait_up "$rp"
  for _ in $(seq 100); do redis-cli -p "$rp" info replication | grep -q master_link_status:up && return; sleep 0.1; done
  echo "replica of $1 not up" >&2; exit 1
}
bench() { # port label
  local out; out=$(redis-benchmark -p "$1" -t set,get -P 16 -n "$N" -q 2>/dev/null | tr '\r' '\n' | grep 'requests per second' | sed -E 's/ requests per second.*//; s/^ +//')
  echo "$2 $(echo "$out" | tr '\n' ' ')"
}
RP=$(port); mkdir -p "$WORK/redis"
redis-server --port "$RP" --dir "$WORK/redis" --save '' --appendonly yes --appendfsync everysec \
  --logfile "$WORK/redis/log" --daemonize no & PIDS+=($!)
wait_up "$RP"; replica "$RP"
bench "$RP" "redis-server(aof-everysec)"
for mode in always everysec never; do
  MP=$(port)
  "$BIN" --port "$MP" --dir "$WORK/m-$mode" --durability "$mode" >"$WORK/m-$mode.log" 2>&1 & PIDS+=($!)
  wait_up "$MP"; replica "$MP"
  bench "$MP" "durable-master($mode)"
done
