# Process helpers shared by the scripts that start redis-servers, replicas
# and arbiters by hand (tests/compaction-bench.sh, tests/sentinel-compare.sh,
# tests/single-client.sh). Source it after setting $here (the repository)
# and $py (a python3). Every process started with `start` is in $pids;
# `kill_started` (call it from the script's EXIT trap) kills them all.

# Installs the Debian packages named that are not installed yet, then
# builds the release binaries of the replica and the arbiter; sets $bin.
prepare() { # package...
  local need=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    apt-get install -y "${need[@]}" >/dev/null
  fi
  (cd "$here" && cargo build --release -p replica -p arbiter --bins 2>&1 | tail -1) >&2
  bin=$here/target/release
}

pids=()

kill_started() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}

free_port() {
  "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

wait_ping() { # port
  for _ in $(seq 100); do
    [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ] && return 0
    sleep 0.1
  done
  echo "127.0.0.1:$1 did not answer PING" >&2
  return 1
}

start() { # variable for the pid, log, command...
  local var=$1 log=$2
  shift 2
  "$@" >>"$log" 2>&1 &
  pids+=($!)
  printf -v "$var" %s $!
  # Killing it may be the point: no "Killed" notice from the shell.
  disown $!
}
