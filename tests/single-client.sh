#!/usr/bin/env bash
# One Redis client's SET latency through proxy mode, against a redis-server
# alone (`appendfsync always`), and where the time goes: each VARIANT is a
# cluster of its own (an arbiter, two replicas with `sync_standbys = 1`,
# each fronting its own redis-server), started with the replica settings it
# names, all of them up at once and measured in turn, round after round.
#
#   tests/single-client.sh                                   # default, 3 rounds
#   tests/single-client.sh --rounds 4 default idle=200 nofsync=0:never,never
#   tests/single-client.sh --requests 30000 active-only=0:always,never
#
# VARIANT is NAME[=IDLE_US[:FSYNC_A,FSYNC_B]]: `idle_poll_us` of both
# replicas (default 0) and `fsync` of replica a and of replica b (default
# always,always; `never` is for experiments only: a crash loses
# acknowledged writes). Replica a has the higher priority, to be the
# active (the run says so when b is).
# Each measurement is `redis-benchmark -h 127.0.0.1 -p PORT -n REQUESTS -c 1
# -d 256 -r 100000 -t set --csv` through the active's RESP port (or the
# redis-server alone); printed per round and target: requests/s, p50, p99
# (ms).
#
# Everything lives in $UNDERSTUDY_BENCH_DIR (default
# /tmp/understudy-single-client), one directory per run with every process's
# log (the data directories are removed at the end); every process started
# is stopped at the end, also on failure or Ctrl-C. Installs redis-server and redis-tools when missing and builds the
# release binaries.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
rounds=3
requests=30000
variants=()
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "single-client: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) variants+=("$1"); shift ;;
  esac
done
[ ${#variants[@]} -gt 0 ] || variants=(default)

py=/usr/bin/python3
. "$here/tests/procs.sh"
prepare redis-server redis-tools curl python3

d=${UNDERSTUDY_BENCH_DIR:-/tmp/understudy-single-client}/$(date +%Y%m%d-%H%M%S)
mkdir -p "$d"
# The logs stay; the data (preallocated log segments, AOF) goes.
trap 'kill_started; rm -rf "$d"/alone "$d"/*/a "$d"/*/b "$d"/*/redis-a "$d"/*/redis-b' EXIT
trap 'exit 130' INT TERM

declare -A port
names=()

# Starts the cluster of one VARIANT; sets port[NAME] to its active's RESP port.
start_cluster() { # variant
  local name=${1%%=*} spec idle fsyncs
  spec=${1#"$name"}
  spec=${spec#=}
  idle=${spec%%:*}
  idle=${idle:-0}
  fsyncs=always,always
  [[ $spec == *:* ]] && fsyncs=${spec#*:}
  local c=$d/$name ap
  mkdir -p "$c"
  ap=$(free_port)
  start pid "$c/arbiter.log" "$bin/arbiter" run --cluster "$name" --listen "127.0.0.1:$ap" \
    --store "file:$c/arbiter.json" --sync-standbys 1
  local n fsync rp resp_a= resp_b=
  for n in a b; do
    fsync=${fsyncs%,*}
    [ "$n" = b ] && fsync=${fsyncs#*,}
    rp=$(free_port)
    mkdir -p "$c/redis-$n"
    start pid "$c/redis-$n.log" redis-server --port "$rp" --bind 127.0.0.1 --dir "$c/redis-$n" \
      --save "" --appendonly no
    wait_ping "$rp"
    local resp
    resp=$(free_port)
    [ "$n" = a ] && resp_a=$resp || resp_b=$resp
    start pid "$c/replica-$n.log" "$bin/replica" run --cluster "$name" --node-id "$n" \
      --data-dir "$c/$n" --listen "127.0.0.1:$(free_port)" --repl-listen "127.0.0.1:$(free_port)" \
      --arbiter "http://127.0.0.1:$ap" --upstream "redis://127.0.0.1:$rp" \
      --resp-listen "127.0.0.1:$resp" --idle-poll-us "$idle" --fsync "$fsync" \
      --priority "$([ "$n" = a ] && echo 200 || echo 100)"
  done
  local active=
  for _ in $(seq 600); do
    active=$(curl -s "http://127.0.0.1:$ap/v1/status" | "$py" -c 'import json,sys
s=json.load(sys.stdin); a=s.get("active")
print(a if a and any(r.get("sync_confirmed") for r in s["replicas"]) else "")' 2>/dev/null || true)
    [ -n "$active" ] && break
    sleep 0.1
  done
  [ -n "$active" ] || { echo "cluster $name did not form (see $c)" >&2; exit 1; }
  [ "$active" = a ] || echo "cluster $name: b became the active; its fsync is ${fsyncs#*,}" >&2
  port[$name]=$([ "$active" = a ] && echo "$resp_a" || echo "$resp_b")
  names+=("$name")
  echo "cluster $name: idle_poll_us $idle, fsync a,b $fsyncs, active $active" >&2
}

alone=$(free_port)
mkdir -p "$d/alone"
start pid "$d/alone.log" redis-server --port "$alone" --bind 127.0.0.1 --dir "$d/alone" \
  --save "" --appendonly yes --appendfsync always
wait_ping "$alone"
port[alone]=$alone
for v in "${variants[@]}"; do start_cluster "$v"; done
echo "run directory: $d" >&2

printf '%-6s %-24s %12s %8s %8s\n' round target requests/s p50_ms p99_ms
for r in $(seq "$rounds"); do
  for t in alone "${names[@]}"; do
    redis-benchmark -h 127.0.0.1 -p "${port[$t]}" -n "$requests" -c 1 -d 256 -r 100000 \
      -t set --csv | tail -1 | tr -d '"' |
      awk -F, -v r="$r" -v t="$t" '{ printf "%-6s %-24s %12s %8s %8s\n", r, t, $2, $5, $7 }'
  done
done
