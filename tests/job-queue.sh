#!/usr/bin/env bash
# A real job queue through proxy mode while the active is killed, as a new
# user would try it: `deploy/local-cluster.sh --redis`, then BullMQ (Node;
# Lua scripts for every queue operation, blocking moves for the worker)
# adding jobs and processing them through replica b's RESP port, and a
# `kill -9` of the active replica part-way. Every job whose add was
# acknowledged must be processed (tests/job-queue/trial.mjs).
#
#   tests/job-queue.sh                      # 60 s of adds, the kill at 30 s
#   tests/job-queue.sh --seconds 30 --kill-at 10
#
# Installs Node and npm when missing (Debian's nodejs, npm) and BullMQ from
# npm (the versions in tests/job-queue/package-lock.json) into a directory
# of its own under /tmp, with the cluster's state; both are removed at the
# end unless --keep. Uses the local cluster's fixed ports (7700, 7000-7001,
# 7100-7101, 6381-6382, 6391-6392): stop any local cluster first.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
seconds=60
kill_at=30
keep=false
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --kill-at) kill_at=$2; shift 2 ;;
    --keep) keep=true; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$kill_at" -ge "$seconds" ]; then
  echo "--kill-at ($kill_at) must come before the adds end (--seconds $seconds)" >&2
  exit 2
fi

need=()
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get install -y "${need[@]}" >/dev/null
fi

work=$(mktemp -d /tmp/understudy-job-queue.XXXXXX)
cluster_pid=
ready=false
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$cluster_pid" ]; then
    kill -TERM "$cluster_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$cluster_pid" 2>/dev/null || break; sleep 0.1; done
    # Whatever the script left (it stops its processes on TERM); the
    # redis-servers only if this cluster had started (the ports were free).
    pkill -9 -f -- "--data-dir $work/cluster/" 2>/dev/null || true
    pkill -9 -f -- "--store file:$work/cluster/" 2>/dev/null || true
    if $ready; then pkill -9 -f -- "redis-server 127.0.0.1:639[12]" 2>/dev/null || true; fi
  fi
  if $keep; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM

cp "$here/tests/job-queue/package.json" "$here/tests/job-queue/package-lock.json" \
  "$here/tests/job-queue/trial.mjs" "$work/"
(cd "$work" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

echo "starting deploy/local-cluster.sh --redis (log: $work/cluster.log)"
UNDERSTUDY_LOCAL_DIR=$work/cluster setsid "$here/deploy/local-cluster.sh" --redis \
  >"$work/cluster.log" 2>&1 &
cluster_pid=$!
status() {
  curl -sf http://127.0.0.1:7700/v1/status 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin).get("active") or "")' 2>/dev/null || true
}
for _ in $(seq 1800); do # the first run builds the release binaries
  if ! kill -0 "$cluster_pid" 2>/dev/null; then break; fi
  # Only once the script says its cluster runs: another cluster already on
  # these ports (the script then refuses to start, naming the port) would
  # answer the checks below as if it were this one.
  if grep -q "^understudy is running" "$work/cluster.log" && [ -n "$(status)" ] && [ "$(redis-cli -p 6382 ping 2>/dev/null)" = PONG ]; then
    ready=true
    break
  fi
  sleep 0.5
done
if ! $ready; then
  echo "the local cluster did not come up; the end of its log:" >&2
  tail -20 "$work/cluster.log" >&2
  exit 1
fi
before=$(status)
echo "active: $before; BullMQ on 127.0.0.1:6382 for $seconds s, kill -9 of the active at $kill_at s"

# The adds, a 90 s drain and the worker's close, bounded.
(cd "$work" && exec timeout $((seconds + 150)) node trial.mjs 6382 "$seconds") &
trial=$!
started=$(date +%s)
while [ $(($(date +%s) - started)) -lt "$kill_at" ]; do
  kill -0 "$trial" 2>/dev/null || break
  sleep 0.2
done
victim=$(pgrep -f -- "--node-id $before --data-dir $work/cluster/$before" || true)
if [ -z "$victim" ]; then
  echo "no process of the active replica $before to kill" >&2
  exit 1
fi
echo "$(($(date +%s) - started)) s: kill -9 of replica $before (pid $victim)"
kill -9 "$victim"
rc=0
wait "$trial" || rc=$?
echo "active after the kill: $(status)"
if [ $rc -eq 0 ]; then
  echo "every acknowledged job was processed"
else
  echo "FAILED: jobs acknowledged as added were not processed (above)" >&2
fi
exit $rc
