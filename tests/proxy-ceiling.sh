#!/usr/bin/env bash
# What any proxy costs on this machine: redis-benchmark against a
# redis-server alone (appendfsync always) and through HAProxy in TCP mode in
# front of it (bytes forwarded, nothing else), the same flags as
# `repl-bench --phase redis`, rounds alternated. Prints redis-benchmark's CSV
# rows prefixed with the round, the target and the flags (BENCHMARKS.md,
# "Unix sockets, and the ceiling of any proxy on this machine").
#
#   tests/proxy-ceiling.sh [ROUNDS]     # default 2
#
# Installs redis-server, redis-tools and haproxy when missing; stops what it
# started, also on failure or Ctrl-C.
set -euo pipefail
rounds=${1:-2}
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-benchmark >/dev/null || need+=(redis-tools)
command -v haproxy >/dev/null || need+=(haproxy)
[ ${#need[@]} -eq 0 ] || apt-get install -y "${need[@]}" >/dev/null
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
d=$(mktemp -d /tmp/understudy-proxy-ceiling.XXXX)
rport=$(free_port); hport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --dir "$d" --appendonly yes --appendfsync always \
  --save "" >"$d/redis.log" 2>&1 &
rpid=$!
cat >"$d/haproxy.cfg" <<CFG
global
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend f
  bind 127.0.0.1:$hport
  default_backend b
backend b
  server r 127.0.0.1:$rport
CFG
haproxy -f "$d/haproxy.cfg" -db >"$d/haproxy.log" 2>&1 &
hpid=$!
trap 'kill $rpid $hpid 2>/dev/null; wait 2>/dev/null; rm -rf "$d"' EXIT
for _ in $(seq 100); do
  [ "$(redis-cli -p "$hport" ping 2>/dev/null)" = PONG ] && break
  sleep 0.1
done
for round in $(seq "$rounds"); do
  for target in "redis-server alone:$rport" "through haproxy (tcp):$hport"; do
    name=${target%:*}; port=${target##*:}
    for args in "-c 64 -t set,get" "-c 64 -t set,get -P 16" "-c 1 -t set"; do
      n=300000
      [ "${args#-c 1 }" != "$args" ] && n=30000
      # shellcheck disable=SC2086
      redis-benchmark -h 127.0.0.1 -p "$port" -n $n -d 256 -r 100000 --csv $args |
        tail -n +2 | sed "s/^/round $round,$name,$args,/"
    done
  done
done
