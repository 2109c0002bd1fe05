#!/usr/bin/env bash
# durable-master against redis-server 7 in the same run, each with one real replica attached:
# durable-master --durability D against redis-server --appendonly yes --appendfsync D
# (D = everysec, always). Every row is redis-benchmark --csv with 50 clients; the ratio column
# is durable-master's requests/s over redis-server's, the latency columns are milliseconds.
#
# Workloads:
#   small     -t set,get,incr,mset -n N at -P 1 and -P 16 (one key: redis-benchmark's default)
#   keyspace  -t set -r 260000 -n 4N -P 16: SET over 260,000 random keys, default backlog size
#   bigvalue  -t set -d 1000000 -n 200 -c 4: 1 MB values
#
# Usage: scripts/bench-master.sh [N] [workload...]   (default 200000, all workloads)
# Needs redis-server, redis-cli and redis-benchmark. Run it three times and report the spread:
# the machine is shared, a lone figure says little.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
shift || true
WORKLOADS=${*:-small keyspace bigvalue}
cargo build --release --bin durable-master >/dev/null 2>&1
BIN=${CARGO_TARGET_DIR:-target}/release/durable-master
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

port() { # a free port
  local p
  while :; do
    # Below the ephemeral range (32768+), where a client socket may hold the port.
    p=$((20000 + RANDOM % 12000))
    redis-cli -p "$p" ping >/dev/null 2>&1 || { echo "$p"; return; }
  done
}
wait_up() {
  for _ in $(seq 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "port $1 not up" >&2; exit 1
}
replica() { # master port -> starts a stock replica and waits for its link
  local rp; rp=$(port); mkdir -p "$WORK/r$rp"
  redis-server --port "$rp" --replicaof 127.0.0.1 "$1" --dir "$WORK/r$rp" --save '' \
    --appendonly no --logfile "$WORK/r$rp/log" --daemonize no >/dev/null 2>&1 & PIDS+=($!); disown
  wait_up "$rp"
  for _ in $(seq 100); do
    redis-cli -p "$rp" info replication | grep -q master_link_status:up && return
    sleep 0.1
  done
  echo "replica of $1 not up" >&2; exit 1
}
start_redis() { # durability -> sets PORT
  local p; p=$(port); mkdir -p "$WORK/redis-$p"
  redis-server --port "$p" --dir "$WORK/redis-$p" --save '' --appendonly yes \
    --appendfsync "$1" --logfile "$WORK/redis-$p/log" --daemonize no >/dev/null 2>&1 & PIDS+=($!); disown
  wait_up "$p"; replica "$p"; PORT=$p
}
start_master() { # durability -> sets PORT
  local p; p=$(port)
  "$BIN" --port "$p" --dir "$WORK/master-$p" --durability "$1" >"$WORK/master-$p.log" 2>&1 &
  PIDS+=($!); disown
  wait_up "$p"; replica "$p"; PORT=$p
}
stop() { redis-cli -p "$1" shutdown nosave >/dev/null 2>&1 || true; }
# csv port args... -> lines "test rps p50 p99 max"
csv() {
  local p=$1; shift
  redis-benchmark -p "$p" -c "${CLIENTS:-50}" --csv "$@" 2>/dev/null | tail -n +2 | tr -d '"' |
    awk -F, '{gsub(/ /, "_", $1); print $1, $2, $5, $7, $8}'
}
# compare label redis_port master_port args...
# The two benchmarks run one after the other, never at once (they would compete for the same
# cores), in alternating order from one call to the next, so that neither server always runs
# while the other's replica is still applying its stream.
FLIP=0
compare() {
  local label=$1 rp=$2 mp=$3; shift 3
  if (( FLIP ^= 1 )); then
    csv "$rp" "$@" >"$WORK/redis.csv"; csv "$mp" "$@" >"$WORK/durable.csv"
  else
    csv "$mp" "$@" >"$WORK/durable.csv"; csv "$rp" "$@" >"$WORK/redis.csv"
  fi
  paste -d' ' "$WORK/redis.csv" "$WORK/durable.csv" |
    awk -v label="$label" '{
      printf "%-18s %-14s %10.0f %10.0f %6.2fx   p50 %6.3f/%6.3f  p99 %7.3f/%7.3f  max %8.3f/%8.3f\n",
        label, $1, $2, $7, $7 / $2, $3, $8, $4, $9, $5, $10 }'
}

printf '%-18s %-14s %10s %10s %7s   %s\n' workload test redis durable ratio \
  'latency ms, redis/durable'
for d in everysec always; do
  start_redis "$d"; rp=$PORT
  start_master "$d"; mp=$PORT
  for w in $WORKLOADS; do
    case $w in
      small)
        for pl in 1 16; do
          n=$N; [ "$d" = always ] && [ "$pl" = 1 ] && n=$((N / 10))
          compare "$d -P $pl" "$rp" "$mp" -t set,get,incr,mset -n "$n" -P "$pl"
        done ;;
      keyspace)
        compare "$d 260k keys" "$rp" "$mp" -t set -r 260000 -n $((N * 4)) -P 16 ;;
      bigvalue)
        CLIENTS=4 compare "$d 1MB values" "$rp" "$mp" -t set -d 1000000 -n 200 ;;
    esac
  done
  stop "$rp"; stop "$mp"
done
