#!/usr/bin/env bash
# Proxy mode for the long run: how large a replica's data directory grows
# under endless overwrites, and how long a replica takes to restart, at the
# start and at the end.
#
#   tests/compaction-bench.sh                     # 60 minutes
#   tests/compaction-bench.sh --minutes 5 --keys 10000 --size 256
#
# The cluster: an arbiter, two replicas in proxy mode, each fronting its own
# redis-server (no persistence), every replica setting at its default
# (snapshot_every_bytes 256 MiB, segment_bytes 64 MiB). The load:
# `redis-benchmark -t set -r KEYS -d SIZE -c 50` through the active's RESP
# port (a fixed keyspace, overwritten again and again).
#
# 1. One minute of load, then the load stops, the standby replica is killed
#    (`kill -9`) and started again: printed is the time until its /healthz
#    answers 200 and until the arbiter reports it a confirmed sync standby
#    again (`restart_ms`, `in_sync_ms`).
# 2. Load for the rest of the run; every minute a line per replica: its
#    data directory's size (`du -sb`) and of log/, checkpoint/, rdb/, the
#    newest checkpoint's size, and the stream the active's redis-server has
#    produced so far (`master_repl_offset`: what an uncompacted log would
#    hold, before its record headers).
# 3. The same restart at the end.
#
# Everything lives in $UNDERSTUDY_BENCH_DIR (default
# /tmp/understudy-compaction), one directory per run with every process's
# log; every process started is stopped at the end, also on failure or
# Ctrl-C. Installs redis-server and redis-tools when missing and builds the
# release binaries.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
minutes=60
keys=10000
size=256
while [ $# -gt 0 ]; do
  case $1 in
    --minutes) minutes=$2; shift 2 ;;
    --keys) keys=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "compaction-bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

py=/usr/bin/python3
. "$here/tests/procs.sh"
prepare redis-server redis-tools curl python3

d=${UNDERSTUDY_BENCH_DIR:-/tmp/understudy-compaction}/$(date +%Y%m%d-%H%M%S)
mkdir -p "$d"
bench=
cleanup() {
  [ -n "$bench" ] && kill -9 "$bench" 2>/dev/null
  kill_started
}
trap cleanup EXIT
trap 'exit 130' INT TERM

status() {
  curl -s "http://127.0.0.1:$ap/v1/status"
}
# The active's id once there is one with a confirmed sync standby.
formed() {
  status | "$py" -c 'import json,sys; s=json.load(sys.stdin)
a=s.get("active"); ok=any(r.get("sync_confirmed") for r in s["replicas"])
print(a if a and ok else "")' 2>/dev/null || true
}

ap=$(free_port)
declare -A redis_port http repl resp replica_pid replica_cmd
for n in a b; do
  redis_port[$n]=$(free_port); http[$n]=$(free_port); repl[$n]=$(free_port); resp[$n]=$(free_port)
  mkdir -p "$d/redis-$n"
  start pid "$d/redis-$n.log" redis-server --port "${redis_port[$n]}" --bind 127.0.0.1 \
    --dir "$d/redis-$n" --save "" --appendonly no
  wait_ping "${redis_port[$n]}"
done
start pid "$d/arbiter.log" "$bin/arbiter" run --cluster bench --listen "127.0.0.1:$ap" \
  --store "file:$d/arbiter.json"
for n in a b; do
  replica_cmd[$n]="$bin/replica run --cluster bench --node-id $n --data-dir $d/$n \
--listen 127.0.0.1:${http[$n]} --repl-listen 127.0.0.1:${repl[$n]} \
--arbiter http://127.0.0.1:$ap --upstream redis://127.0.0.1:${redis_port[$n]} \
--resp-listen 127.0.0.1:${resp[$n]}"
  # shellcheck disable=SC2086
  start pid "$d/replica-$n.log" ${replica_cmd[$n]}
  replica_pid[$n]=$pid
done
active=
for _ in $(seq 600); do
  active=$(formed)
  [ -n "$active" ] && break
  sleep 0.1
done
[ -n "$active" ] || { echo "the cluster did not form (see $d)" >&2; exit 1; }
standby=$([ "$active" = a ] && echo b || echo a)
echo "run directory: $d; active $active, standby $standby; $keys keys of $size bytes" >&2

load() { # seconds
  timeout "$1" redis-benchmark -h 127.0.0.1 -p "${resp[$active]}" -t set -r "$keys" \
    -d "$size" -c 50 -n 2000000000 -q >/dev/null 2>&1 || true
}

# Kills the standby replica and starts it again; prints restart_ms and
# in_sync_ms.
restart_standby() { # label
  kill -9 "${replica_pid[$standby]}"
  wait "${replica_pid[$standby]}" 2>/dev/null || true
  local t0 up= sync=
  t0=$(now_ms)
  # shellcheck disable=SC2086
  start pid "$d/replica-$standby.log" ${replica_cmd[$standby]}
  replica_pid[$standby]=$pid
  for _ in $(seq 6000); do
    if [ -z "$up" ] && curl -sf "http://127.0.0.1:${http[$standby]}/healthz" >/dev/null 2>&1; then
      up=$(($(now_ms) - t0))
    fi
    if [ -n "$up" ] && [ "$(formed)" = "$active" ] && status | "$py" -c "import json,sys
s=json.load(sys.stdin); sys.exit(0 if any(r['node_id']=='$standby' and r.get('sync_confirmed') for r in s['replicas']) else 1)" 2>/dev/null; then
      sync=$(($(now_ms) - t0))
      break
    fi
    sleep 0.02
  done
  local log_bytes
  log_bytes=$(du -sb "$d/$standby/log" | cut -f1)
  printf '%-6s restart of %s: restart_ms %s in_sync_ms %s (its log/ held %s bytes)\n' \
    "$1" "$standby" "${up:-none}" "${sync:-none}" "$log_bytes"
}

sample() { # minute
  local offset
  offset=$(redis-cli -p "${redis_port[$active]}" info replication | tr -d '\r' |
    sed -n 's/^master_repl_offset://p')
  for n in a b; do
    local all log cp rdb newest
    all=$(du -sb "$d/$n" | cut -f1)
    log=$(du -sb "$d/$n/log" 2>/dev/null | cut -f1)
    cp=$(du -sb "$d/$n/checkpoint" 2>/dev/null | cut -f1)
    rdb=$(du -sb "$d/$n/rdb" 2>/dev/null | cut -f1)
    newest=$(find "$d/$n/checkpoint" -name 'checkpoint-*.rdb' -printf '%s\n' 2>/dev/null | sort -n | tail -1)
    printf '%4s  %s  data_dir %12s  log %12s  checkpoint %10s  rdb %10s  newest_checkpoint %10s  stream %14s\n' \
      "$1" "$n" "$all" "${log:-0}" "${cp:-0}" "${rdb:-0}" "${newest:-0}" "$offset"
  done
}

load 60
restart_standby start
sample 1
for m in $(seq 2 "$minutes"); do
  load 60
  sample "$m"
done
restart_standby end
