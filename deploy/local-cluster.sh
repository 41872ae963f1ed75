#!/usr/bin/env bash
# A local understudy cluster: one arbiter and two replicas on loopback, or
# with --etcd a local etcd and two arbiters electing a leader there, or with
# --redis two redis-servers fronted by the replicas (proxy mode); with --tls
# every listener and connection in TLS, with a local CA made by
# deploy/make-certs.sh.
# Installs what it runs (deploy/prereqs.sh: the build's tools, and etcd,
# redis-server or openssl only with the flag that uses them), builds release
# binaries, starts everything, prints the URLs and the time it took, and
# stops it all on Ctrl-C.
#
#   deploy/local-cluster.sh            # arbiter :7700, replicas a :7000, b :7001
#   deploy/local-cluster.sh --etcd     # + etcd :2379, arbiters :7700 and :7701
#   deploy/local-cluster.sh --redis    # + redis-servers :6391, :6392; Redis clients on :6381, :6382
#   deploy/local-cluster.sh --tls      # https:// everywhere; CA and certificates in $dir/tls
#
# State lives in $UNDERSTUDY_LOCAL_DIR (default: /tmp/understudy-local); it
# survives restarts of this script, so a killed replica comes back with its data.
set -euo pipefail
cd "$(dirname "$0")/.."

with_etcd=false
with_redis=false
with_tls=false
for arg in "$@"; do
  case "$arg" in
    --etcd) with_etcd=true ;;
    --redis) with_redis=true ;;
    --tls) with_tls=true ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

started_at=$(date +%s%N)
parts=(build cluster)
$with_etcd && parts+=(etcd)
$with_redis && parts+=(redis)
$with_tls && parts+=(tls)
deploy/prereqs.sh "${parts[@]}"

bin=$PWD/target/release
if [ ! -x "$bin/replica" ] || [ ! -x "$bin/arbiter" ]; then
  # Measured on a 2-core machine with an empty target/: 4 min 40 s
  # (BENCHMARKS.md, "First contact"). Cargo shows its progress below.
  echo "building understudy's release binaries for the first time:" \
    "about 5 minutes on 2 cores, less on more ($(nproc) here)" >&2
fi
cargo build --release -p replica -p arbiter --bins
dir=${UNDERSTUDY_LOCAL_DIR:-/tmp/understudy-local}
mkdir -p "$dir"
pids=()

# Refuse to start a second copy: its processes would fail to bind and die
# at once while this script reported success.
ports=(7700 7000 7001 7100 7101)
$with_redis && ports+=(6381 6382 6391 6392)
for port in "${ports[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use: is a local cluster already running?" \
      "Stop it (Ctrl-C in its terminal) first." >&2
    exit 1
  fi
done

cleanup() {
  trap - EXIT INT TERM
  echo
  echo "stopping the local cluster..."
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

start() { # name, log, command...
  local name=$1 log=$2
  shift 2
  # The exact command, to start it again by hand after killing it:
  #   sh "$dir/<name>.cmd" &
  printf '%q ' "$@" >"$dir/${name// /-}.cmd"
  printf '>>%q 2>&1\n' "$log" >>"$dir/${name// /-}.cmd"
  "$@" >>"$log" 2>&1 &
  pids+=($!)
  echo "started $name (pid $!, log $log, command $dir/${name// /-}.cmd)"
}

scheme=http
curl=(curl)
cli_tls=()
redis_tls=
tls() { :; }
if $with_tls; then
  deploy/make-certs.sh "$dir/tls" arbiter a b
  scheme=https
  curl=(curl --cacert "$dir/tls/ca.pem")
  cli_tls=(--tls-ca "$dir/tls/ca.pem")
  redis_tls="--tls --cacert $dir/tls/ca.pem "
  # The TLS flags for the process named $1.
  tls() { tls_args=(--tls-cert "$dir/tls/$1.pem" --tls-key "$dir/tls/$1-key.pem" --tls-ca "$dir/tls/ca.pem"); }
fi
tls_args=()

arbiters=$scheme://127.0.0.1:7700
if $with_etcd; then
  start etcd "$dir/etcd.log" etcd --data-dir "$dir/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster default=http://127.0.0.1:2380
  store=etcd://127.0.0.1:2379
  tls arbiter
  for port in 7700 7701; do
    start "arbiter :$port" "$dir/arbiter-$port.log" "$bin/arbiter" run --cluster local \
      --listen 127.0.0.1:$port --store "$store" "${tls_args[@]}"
  done
  arbiters=$scheme://127.0.0.1:7700,$scheme://127.0.0.1:7701
else
  tls arbiter
  start arbiter "$dir/arbiter.log" "$bin/arbiter" run --cluster local \
    --listen 127.0.0.1:7700 --store "file:$dir/arbiter.json" "${tls_args[@]}"
fi

# Proxy mode: each replica's RESP thread shares a CPU with its
# redis-server's main thread (README, "Proxy mode", on placement): a's pair
# on the first CPU this script may use, b's on the next.
cpus=()
if $with_redis; then
  read -ra cpus < <(taskset -cp $$ | sed 's/.*: //' | tr ',' '\n' |
    awk -F- '{ for (c = $1; c <= ($2 == "" ? $1 : $2); c++) printf "%d ", c } END { print "" }')
fi

i=0
for node in a b; do
  proxy=()
  if $with_redis; then
    cpu=${cpus[i % ${#cpus[@]}]}
    # The upstream: no persistence (the replicas' log is the durable copy),
    # a backlog that covers a moment's disconnection of the tap.
    mkdir -p "$dir/redis-$node"
    start "redis-server $node" "$dir/redis-$node.log" redis-server --port $((6391 + i)) \
      --bind 127.0.0.1 --save "" --appendonly no --dir "$dir/redis-$node" \
      --repl-backlog-size 64mb --server_cpulist "$cpu"
    for _ in $(seq 100); do
      redis-cli -p $((6391 + i)) ping >/dev/null 2>&1 && break
      sleep 0.05
    done
    if ! redis-cli -p $((6391 + i)) ping >/dev/null 2>&1; then
      echo "redis-server $node did not start; the end of $dir/redis-$node.log:" >&2
      tail -5 "$dir/redis-$node.log" >&2
      exit 1
    fi
    proxy=(--upstream "redis://127.0.0.1:$((6391 + i))" --resp-listen "127.0.0.1:$((6381 + i))"
      --resp-cpus "$cpu")
  fi
  tls $node
  start "replica $node" "$dir/replica-$node.log" "$bin/replica" run --cluster local \
    --node-id $node --data-dir "$dir/$node" \
    --listen 127.0.0.1:$((7000 + i)) --repl-listen 127.0.0.1:$((7100 + i)) \
    --arbiter "$arbiters" "${proxy[@]}" "${tls_args[@]}"
  i=$((i + 1))
done

echo "waiting for the first active..."
formed=false
for _ in $(seq 300); do
  if "${curl[@]}" -sf $scheme://127.0.0.1:7000/v1/role >/dev/null || "${curl[@]}" -sf $scheme://127.0.0.1:7001/v1/role >/dev/null; then
    formed=true
    break
  fi
  sleep 0.1
done
if ! $formed; then
  echo "no replica became active within 30 s; the ends of the logs in $dir:" >&2
  for log in "$dir"/*.log; do echo "== $log" >&2; tail -5 "$log" >&2; done
  exit 1
fi
took_ms=$((($(date +%s%N) - started_at) / 1000000))
took="$((took_ms / 1000)).$(printf %03d $((took_ms % 1000)) | cut -c1) s from the command to a running cluster"

if $with_redis; then
  cat <<EOF

understudy is running in proxy mode (cluster "local", state in $dir; $took):
  arbiter   $arbiters   (dashboard: $scheme://127.0.0.1:7700/)
  replica a (pid ${pids[-3]}): Redis clients on 127.0.0.1:6381, in front of redis-server :6391 (both on CPU ${cpus[0]})
  replica b (pid ${pids[-1]}): Redis clients on 127.0.0.1:6382, in front of redis-server :6392 (both on CPU ${cpus[1 % ${#cpus[@]}]})

  redis-cli -p 6381 ${redis_tls}set greeting hello
  redis-cli -p 6382 ${redis_tls}get greeting
  $bin/arbiter status --arbiter $scheme://127.0.0.1:7700 ${cli_tls[*]}

Press Ctrl-C to stop.
EOF
else
  cat <<EOF

understudy is running (cluster "local", state in $dir; $took):
  arbiter   $arbiters   (dashboard: $scheme://127.0.0.1:7700/)
  replica a (pid ${pids[-2]}): $scheme://127.0.0.1:7000
  replica b (pid ${pids[-1]}): $scheme://127.0.0.1:7001

  ${curl[*]} -X PUT --data-binary hello $scheme://127.0.0.1:7000/v1/kv/greeting
  ${curl[*]} $scheme://127.0.0.1:7001/v1/kv/greeting
  $bin/arbiter status --arbiter $scheme://127.0.0.1:7700 ${cli_tls[*]}

Press Ctrl-C to stop.
EOF
fi
$bin/arbiter status --arbiter $scheme://127.0.0.1:7700 "${cli_tls[@]}" || true
wait
