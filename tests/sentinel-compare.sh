#!/usr/bin/env bash
# understudy beside Redis Sentinel, with the same Redis-client writers: how
# long writes stop when the master's redis-server is killed (`kill -9`),
# and how many acknowledged writes are lost.
#
#   tests/sentinel-compare.sh                 # 3 runs of each setup below
#   tests/sentinel-compare.sh --runs 1
#   tests/sentinel-compare.sh --setups sentinel-1000,understudy-upstream
#
# Setups (each run starts it afresh, in its own directory):
#   sentinel-default     a master and a replica, both `appendfsync always`,
#                        three sentinels with their defaults
#                        (down-after-milliseconds 30000); the master is killed
#   sentinel-1000        the same with down-after-milliseconds 1000
#   understudy-upstream  proxy mode: an arbiter, two replicas each fronting a
#                        redis-server (no persistence: the log is durable);
#                        the active's redis-server is killed, and restarted
#                        empty 4 s later
#   understudy-replica   the same cluster; the active replica is killed and
#                        restarted 4 s later (its redis-server keeps running)
#
# The writers: 16 threads of redis-py (Debian's python3-redis), each SETting
# keys of its own (`w<thread>:<n>`) one at a time. On any error a writer
# waits 10 ms and tries again: through Sentinel's client (`master_for`, which
# asks the sentinels for the master) for Sentinel, or on the next replica's
# RESP port for understudy (any replica's port serves: a standby forwards
# to the active). Writes go on for 3 s before the kill and until 5 s after
# the first write acknowledged after it (60 s at most).
#
# Printed per run: the write gap (the longest time without an acknowledged
# write from 1 s before the kill on), the writes acknowledged, and the acknowledged writes
# missing from the master at the end (read back with MGET). Everything lives
# in $UNDERSTUDY_SENTINEL_DIR (default /tmp/understudy-sentinel), one
# directory per run with every process's log; every process started is
# stopped at the end, also on failure or Ctrl-C.
#
# Installs what it runs when missing (redis-server, redis-sentinel,
# python3-redis) and builds the release binaries.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
runs=3
setups=sentinel-default,sentinel-1000,understudy-upstream,understudy-replica
while [ $# -gt 0 ]; do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --setups) setups=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "sentinel-compare: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

# Debian's python3, for which python3-redis is packaged (a python3 of
# another origin earlier in PATH would not see it).
py=/usr/bin/python3
. "$here/tests/procs.sh"
prepare redis-server redis-sentinel python3 python3-redis

base=${UNDERSTUDY_SENTINEL_DIR:-/tmp/understudy-sentinel}
mkdir -p "$base"
trap kill_started EXIT
trap 'exit 130' INT TERM

writer=$(mktemp "$base/writer.XXXX.py")
cat >"$writer" <<'PY'
# The writers (see tests/sentinel-compare.sh): prints one JSON line.
import json, sys, threading, time
import redis
from redis.sentinel import Sentinel

mode, targets, killfile = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
CLIENTS, BEFORE, AFTER, LONGEST = 16, 3.0, 5.0, 60.0
lock = threading.Lock()
acks = []          # (time, key)
errors = {}
stop = threading.Event()

def connect(n):
    if mode == "sentinel":
        hosts = [("127.0.0.1", int(p)) for p in targets]
        return Sentinel(hosts, socket_timeout=0.5).master_for(
            "m", socket_timeout=0.5, socket_connect_timeout=0.5)
    port = int(targets[n % len(targets)])
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2,
                       socket_connect_timeout=0.5)

def write(i):
    r, n, seq = connect(i), i, 0
    while not stop.is_set():
        seq += 1
        key = f"w{i}:{seq}"
        try:
            if r.set(key, seq):
                with lock:
                    acks.append((time.time(), key))
        except Exception as e:
            with lock:
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            time.sleep(0.01)
            n += 1
            r = connect(n)

threads = [threading.Thread(target=write, args=(i,)) for i in range(CLIENTS)]
for t in threads: t.start()
begin = time.time()
time.sleep(BEFORE)
open(killfile, "w").write("kill\n")
# The script kills and writes the time it did into the file.
while open(killfile).read().strip() == "kill":
    time.sleep(0.005)
killed = float(open(killfile).read())
# Replies already on their way when the kill came may still arrive just
# after it: writes count as resumed from 0.2 s after the kill.
while time.time() - begin < LONGEST:
    with lock:
        after = [t for t, _ in acks if t > killed + 0.2]
    if after and time.time() - min(after) >= AFTER:
        break
    time.sleep(0.05)
stop.set()
for t in threads: t.join()
# The write gap: the longest time between two acknowledgements from 1 s
# before the kill on.
times = sorted(t for t, _ in acks if t >= killed - 1.0)
gaps = [b - a for a, b in zip(times, times[1:])]
gap = max(gaps) * 1000 if gaps else None
# Read back every acknowledged key from the master now.
if mode == "sentinel":
    hosts = [("127.0.0.1", int(p)) for p in targets]
    master = Sentinel(hosts, socket_timeout=1).master_for("m", socket_timeout=5)
else:
    master = None
    for p in targets:
        try:
            c = redis.Redis(host="127.0.0.1", port=int(p), socket_timeout=5)
            c.ping(); master = c; break
        except Exception:
            pass
keys = [k for _, k in acks]
missing = 0
for s in range(0, len(keys), 1000):
    chunk = keys[s:s + 1000]
    for attempt in range(50):
        try:
            values = master.mget(chunk); break
        except Exception:
            time.sleep(0.1)
    else:
        raise SystemExit("cannot read back from the master")
    missing += sum(1 for v in values if v is None)
print(json.dumps({"acked": len(keys), "missing": missing,
                  "gap_ms": round(gap, 1) if gap is not None else None,
                  "errors": errors}))
PY

# Waits for the writer to ask for the kill, runs "$@", writes the time.
kill_when_asked() { # killfile, command...
  local f=$1; shift
  until [ "$(cat "$f" 2>/dev/null)" = kill ]; do sleep 0.01; done
  local t
  t=$(date +%s.%N)
  "$@"
  echo "$t" >"$f"
}

run_sentinel() { # dir, down-after-ms (empty: default)
  local d=$1 down=$2 m r s ports=() i
  m=$(free_port); r=$(free_port)
  mkdir -p "$d/m" "$d/r"
  local mpid pid
  start mpid "$d/master.log" redis-server --port "$m" --bind 127.0.0.1 --dir "$d/m" \
    --appendonly yes --appendfsync always --save ""
  start pid "$d/replica.log" redis-server --port "$r" --bind 127.0.0.1 --dir "$d/r" \
    --appendonly yes --appendfsync always --save "" --replicaof 127.0.0.1 "$m"
  wait_ping "$m"; wait_ping "$r"
  # The replica holds the master's data before the run (its first full
  # sync waits repl-diskless-sync-delay, 5 s).
  for _ in $(seq 200); do
    redis-cli -p "$r" info replication | grep -q '^master_link_status:up' && break
    sleep 0.1
  done
  for i in 1 2 3; do
    s=$(free_port); ports+=("$s")
    {
      echo "port $s"
      echo "bind 127.0.0.1"
      echo "sentinel monitor m 127.0.0.1 $m 2"
      [ -n "$down" ] && echo "sentinel down-after-milliseconds m $down"
    } >"$d/sentinel-$i.conf"
    start pid "$d/sentinel-$i.log" redis-sentinel "$d/sentinel-$i.conf"
  done
  for s in "${ports[@]}"; do wait_ping "$s"; done
  # The replica is known to every sentinel before the run.
  for _ in $(seq 100); do
    local known=0
    for s in "${ports[@]}"; do
      [ "$(redis-cli -p "$s" sentinel replicas m 2>/dev/null | grep -c "^127.0.0.1:$r$")" -ge 1 ] && known=$((known + 1))
    done
    [ $known -eq 3 ] && break
    sleep 0.1
  done
  local kf=$d/kill
  kill_when_asked "$kf" kill -9 "$mpid" &
  pids+=($!)
  "$py" "$writer" sentinel "$(IFS=,; echo "${ports[*]}")" "$kf"
}

run_understudy() { # dir, what (upstream|replica)
  local d=$1 what=$2 ap ra rb pa pb ha hb ka kb pid
  ap=$(free_port); ra=$(free_port); rb=$(free_port); pa=$(free_port); pb=$(free_port)
  ha=$(free_port); hb=$(free_port); ka=$(free_port); kb=$(free_port)
  mkdir -p "$d/ra" "$d/rb"
  local -A redis_pid redis_port replica_pid replica_cmd
  redis_port[a]=$ra; redis_port[b]=$rb
  for n in a b; do
    start pid "$d/redis-$n.log" redis-server --port "${redis_port[$n]}" \
      --bind 127.0.0.1 --dir "$d/r$n" --save "" --appendonly no
    redis_pid[$n]=$pid
  done
  wait_ping "$ra"; wait_ping "$rb"
  start pid "$d/arbiter.log" "$bin/arbiter" run --cluster cmp --listen "127.0.0.1:$ap" \
    --store "file:$d/arbiter.json"
  local -A http=([a]=$ha [b]=$hb) repl=([a]=$ka [b]=$kb) resp=([a]=$pa [b]=$pb)
  for n in a b; do
    replica_cmd[$n]="$bin/replica run --cluster cmp --node-id $n --data-dir $d/$n \
--listen 127.0.0.1:${http[$n]} --repl-listen 127.0.0.1:${repl[$n]} \
--arbiter http://127.0.0.1:$ap --upstream redis://127.0.0.1:${redis_port[$n]} \
--resp-listen 127.0.0.1:${resp[$n]}"
    # shellcheck disable=SC2086
    start pid "$d/replica-$n.log" ${replica_cmd[$n]}
    replica_pid[$n]=$pid
  done
  # Formed: an active with a confirmed sync standby, both ports answering.
  local active=
  for _ in $(seq 300); do
    active=$(curl -s "http://127.0.0.1:$ap/v1/status" |
      "$py" -c 'import json,sys; s=json.load(sys.stdin)
a=s.get("active"); ok=any(r.get("sync_confirmed") for r in s["replicas"])
print(a if a and ok else "")' 2>/dev/null || true)
    [ -n "$active" ] && [ "$(redis-cli -p "$pa" ping 2>/dev/null)" = PONG ] &&
      [ "$(redis-cli -p "$pb" ping 2>/dev/null)" = PONG ] && break
    sleep 0.1
  done
  [ -n "$active" ] || { echo "the cluster did not form (see $d)" >&2; return 1; }
  local kf=$d/kill
  if [ "$what" = upstream ]; then
    (
      kill_when_asked "$kf" kill -9 "${redis_pid[$active]}"
      sleep 4
      rm -rf "$d/r$active"; mkdir -p "$d/r$active"
      exec redis-server --port "${redis_port[$active]}" --bind 127.0.0.1 --dir "$d/r$active" \
        --save "" --appendonly no >>"$d/redis-$active.log" 2>&1
    ) &
  else
    (
      kill_when_asked "$kf" kill -9 "${replica_pid[$active]}"
      sleep 4
      # shellcheck disable=SC2086
      exec ${replica_cmd[$active]} >>"$d/replica-$active.log" 2>&1
    ) &
  fi
  pids+=($!)
  "$py" "$writer" direct "$pa,$pb" "$kf"
}

printf '%-22s %4s %12s %10s %10s  %s\n' setup run "gap ms" acked lost errors
IFS=, read -r -a chosen <<<"$setups"
for setup in "${chosen[@]}"; do
  for run in $(seq "$runs"); do
    d=$base/$(date +%Y%m%d-%H%M%S)-$setup-$run
    mkdir -p "$d"
    # Not in a subshell: the processes it starts are this script's to stop.
    case $setup in
      sentinel-default) run_sentinel "$d" "" >"$d/result.json" ;;
      sentinel-1000) run_sentinel "$d" 1000 >"$d/result.json" ;;
      understudy-upstream) run_understudy "$d" upstream >"$d/result.json" ;;
      understudy-replica) run_understudy "$d" replica >"$d/result.json" ;;
      *) echo "sentinel-compare: unknown setup $setup" >&2; exit 2 ;;
    esac
    out=$(cat "$d/result.json")
    "$py" - "$setup" "$run" "$out" <<'PY'
import json, sys
setup, run, r = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
errors = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items()))
print(f"{setup:<22} {run:>4} {r['gap_ms']!s:>12} {r['acked']:>10} {r['missing']:>10}  {errors}")
PY
    cleanup
    pids=()
  done
done
rm -f "$writer"
