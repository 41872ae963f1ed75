#!/usr/bin/env bash
# Redis's own test suite as a measure of proxy mode's compatibility: runs the
# suite, unmodified, in its external-server mode against three targets and
# compares them test by test:
#   alone    a redis-server by itself
#   active   the active replica's RESP port, in a proxy-mode cluster (one
#            arbiter, two replicas each fronting its own redis-server)
#   standby  the standby replica's RESP port in that cluster (it forwards)
#
#   tests/redis-suite.sh                               # every unit, every target
#   tests/redis-suite.sh --single unit/type/list       # one unit (repeatable)
#   tests/redis-suite.sh --tags -slow --targets alone,active
#   tests/redis-suite.sh --help
#
# Redis's tests/ come at run time from Debian's source package for the
# installed redis-server (`apt-get source`, with a deb-src line of its own for
# the Debian release in use when none is enabled; the machine's apt
# configuration is not changed), cached in the work dir; nothing of Redis is
# kept in this repository. The source must be the installed redis-server's
# version (checked; --allow-version-mismatch runs anyway). Missing tools are
# installed first (deploy/prereqs.sh build redis-suite: tcl, dpkg-dev,
# redis-server, redis-tools), and the release binaries are built.
#
# Each unit runs on its own (`./runtest --host 127.0.0.1 --port P --single
# UNIT ...`), so a unit that aborts (an error outside a test ends runtest) or
# hangs costs only itself; the redis-server alone is started afresh for
# each unit (a failed test can leave settings behind that break the next
# units), the cluster is formed once and its redis-servers' settings are
# set back before each unit to those they began with. Every target gets the same runtest flags: this
# script's defaults, `--durable --timeout 600` (--durable: an error reply
# inside a test fails that test instead of ending the unit; --timeout:
# runtest gives up after that many seconds without progress), then every
# argument it does not know itself, passed through (`--tags`, `--only`,
# `--skiptest`, `--singledb`, `--accurate`, ...; `--single` and `--skipunit`
# choose the units). Units always run one at a time: in external mode runtest
# uses a single test client whatever --clients says.
#
# This script's own options:
#   --targets LIST           comma-separated, of alone,active,standby (default: all three)
#   --unit-timeout SEC       wall-clock limit for one unit on one target (default 1800)
#   --no-durable             leave --durable out of the default runtest flags
#   --allow-version-mismatch run even if the source is not redis-server's version
#   -h, --help               this text
#
# Everything lives in $UNDERSTUDY_REDIS_SUITE_DIR (default
# /tmp/understudy-redis-suite): source/ (the Debian source, cached), apt/
# (the deb-src lists, when this script needs its own), runs/<time>/ (one
# run: each unit's full output in out/<target>/, the processes' logs in
# procs/, and the results: summary.txt, units.tsv, tests.tsv,
# comparison.tsv, regressions.tsv, targets.tsv; runs/latest points at the
# newest). comparison.tsv has a row per test with its outcome on each
# target: `diff` two runs' files to see what changed.
# Every process it starts is stopped when it ends, also on failure or Ctrl-C.
#
# Exit status: 0 the suite ran (whatever its counts), 1 it could not run
# (prerequisites, source, cluster), 2 bad arguments, 130 interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "redis-suite: $*" >&2; exit 1; }
bad_arg() { echo "redis-suite: $* (try --help)" >&2; exit 2; }
say() { echo "redis-suite: $*" >&2; }

# --- arguments -----------------------------------------------------------
targets=(alone active standby)
unit_timeout=1800
durable=true
allow_mismatch=false
units_wanted=()
units_skipped=()
passthrough=()
while (($#)); do
  opt=$1
  case "$opt" in
    -h | --help) usage; exit 0 ;;
    --targets)
      (($# >= 2)) || bad_arg "--targets needs a list, e.g. alone,active"
      IFS=, read -ra targets <<<"$2"
      for t in "${targets[@]}"; do
        case "$t" in alone | active | standby) ;; *) bad_arg "unknown target '$t' (alone, active, standby)" ;; esac
      done
      shift 2 ;;
    --unit-timeout)
      (($# >= 2)) && [[ $2 =~ ^[1-9][0-9]*$ ]] || bad_arg "--unit-timeout needs a number of seconds"
      unit_timeout=$2
      shift 2 ;;
    --no-durable) durable=false; shift ;;
    --allow-version-mismatch) allow_mismatch=true; shift ;;
    --single)
      (($# >= 2)) || bad_arg "--single needs a unit, e.g. unit/type/list"
      units_wanted+=("$2"); shift 2 ;;
    --skipunit)
      (($# >= 2)) || bad_arg "--skipunit needs a unit"
      units_skipped+=("$2"); shift 2 ;;
    --host | --port | --loop | --stop | --list-tests | --client | --tls | --wait-server | --skip-till)
      bad_arg "$opt is not usable here: this script chooses the targets' addresses, runs each unit once and reads its output" ;;
    # runtest's flags that take one value (test_helper.tcl), passed on.
    --tags | --skipfile | --skiptest | --only | --clients | --timeout | --baseport | --portcount)
      (($# >= 2)) || bad_arg "$opt needs a value"
      passthrough+=("$opt" "$2"); shift 2 ;;
    --config)
      (($# >= 3)) || bad_arg "--config needs a name and a value"
      passthrough+=("$opt" "$2" "$3"); shift 3 ;;
    *) passthrough+=("$opt"); shift ;;
  esac
done
runtest_flags=()
$durable && runtest_flags+=(--durable)
runtest_flags+=(--timeout 600 "${passthrough[@]}")

# --- prerequisites and binaries ------------------------------------------
deploy/prereqs.sh build redis-suite
command -v redis-server >/dev/null || die "redis-server is not on PATH after installing it; install Debian's redis-server package"
bin=${CARGO_TARGET_DIR:-$root/target}/release
cargo build --release -p replica -p arbiter --bins
[ -x "$bin/replica" ] && [ -x "$bin/arbiter" ] ||
  die "no $bin/replica or $bin/arbiter after the build; run 'cargo build --release -p replica -p arbiter' and read its errors"

work=${UNDERSTUDY_REDIS_SUITE_DIR:-/tmp/understudy-redis-suite}
mkdir -p "$work/source" "$work/runs"

# --- Redis's tests, from Debian's source package -------------------------
installed=$(redis-server --version | sed -n 's/.* v=\([^ ]*\) .*/\1/p')
[ -n "$installed" ] || die "cannot read the version in '$(redis-server --version)'"
server_path=$(command -v redis-server)
src_pkg=redis
src_ver=
# (Debian's /usr/bin/redis-server is a symlink to redis-check-rdb, of
# another package: ask about the name on PATH first.)
if owner=$(dpkg-query -S "$server_path" 2>/dev/null) ||
  owner=$(dpkg-query -S "$(readlink -f "$server_path")" 2>/dev/null); then
  owner=${owner%%:*}
  read -r src_pkg src_ver < <(dpkg-query -W -f '${source:Package} ${source:Version}\n' "$owner")
  say "redis-server $installed is $server_path, from Debian package $owner $src_ver (source package $src_pkg)"
else
  say "redis-server $installed is $server_path, which no Debian package owns: using Debian's source package $src_pkg of the same Redis version"
fi
upstream_of() { local v=${1#*:}; echo "${v%-*}"; } # 5:7.0.15-1~deb12u7 -> 7.0.15

# apt-get source needs a deb-src line. Use the machine's when it has one;
# otherwise a private list (deb-src for the Debian release in use, from the
# same archives as its deb lines), with its own index files in $work/apt.
apt_opts=()
use_private_apt() {
  local dir=$work/apt codename key=/usr/share/keyrings/debian-archive-keyring.gpg signed=
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  [ -n "$codename" ] || die "cannot tell the Debian release from /etc/os-release (no VERSION_CODENAME); enable a deb-src line in /etc/apt/sources.list.d/ by hand"
  [ -f "$key" ] && signed="[signed-by=$key] "
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/sources.list.d"
  apt-get indextargets --format '$(TARGET_OF) $(ORIGIN) $(REPO_URI) $(RELEASE) $(COMPONENT)' |
    awk -v c="$codename" -v s="$signed" '
      $1 == "deb" && $2 == "Debian" && ($4 == c || index($4, c "-") == 1) {
        k = $3 " " $4
        if (!(k in comps)) order[++n] = k
        if (index(" " comps[k] " ", " " $5 " ") == 0) comps[k] = comps[k] " " $5
      }
      END { for (i = 1; i <= n; i++) print "deb-src " s order[i] comps[order[i]] }' >"$dir/sources.list"
  if [ ! -s "$dir/sources.list" ]; then
    printf 'deb-src %shttp://deb.debian.org/debian %s main\n' "$signed" "$codename" "$signed" "$codename-updates" >"$dir/sources.list"
    printf 'deb-src %shttp://deb.debian.org/debian-security %s main\n' "$signed" "$codename-security" >>"$dir/sources.list"
  fi
  apt_opts=(-o "Dir::Etc::SourceList=$dir/sources.list" -o "Dir::Etc::SourceParts=$dir/sources.list.d"
    -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache" -o Dir::Cache::pkgcache=
    -o Dir::Cache::srcpkgcache= -o APT::Sandbox::User=root)
  say "no deb-src line is enabled in this machine's apt sources: using these, for Debian $codename, in $dir (the machine's apt configuration is left as it is):"
  sed 's/^/    /' "$dir/sources.list" >&2
  say "downloading their source indexes (apt-get update, about 10 MB)"
  apt-get "${apt_opts[@]}" update >"$dir/update.log" 2>&1 ||
    die "apt-get update of the deb-src lists failed (see $dir/update.log); check the network and $dir/sources.list"
}

# The source's Debian version: the installed package's when the archive still
# has it, else the newest one of the same Redis version.
pick_version() {
  local versions v
  versions=$(apt-cache "${apt_opts[@]}" showsrc "$src_pkg" 2>/dev/null | sed -n 's/^Version: //p' | sort -u)
  if [ -n "$src_ver" ] && grep -qxF "$src_ver" <<<"$versions"; then
    echo "$src_ver"
    return
  fi
  v=$(while read -r x; do [ "$(upstream_of "$x")" = "$installed" ] && echo "$x"; done <<<"$versions" |
    sort -V | tail -1)
  if [ -n "$v" ]; then
    [ -n "$src_ver" ] && say "the archive no longer has source $src_pkg $src_ver; using $v, the same Redis version ($installed)"
    echo "$v"
    return
  fi
  say "the archive has no source of Redis $installed (it has: $(echo $versions))"
  if $allow_mismatch; then
    v=$(sort -V <<<"$versions" | tail -1)
    [ -n "$v" ] || die "no source package '$src_pkg' in the archive at all"
    say "--allow-version-mismatch: using $src_pkg $v anyway; tests of another version may fail on redis-server $installed for that reason alone"
    echo "$v"
    return
  fi
  die "no source of redis-server's version: install the redis-server of the Debian release in use (apt-get install redis-server), or pass --allow-version-mismatch"
}

find_tree() { # the unpacked tree for Debian version $1, if cached
  local d=$work/source/${1#*:}
  for t in "$d"/*/tests/test_helper.tcl; do
    [ -f "$t" ] && { dirname "$(dirname "$t")"; return 0; }
  done
  return 1
}

tree=
if [ -n "$src_ver" ] && tree=$(find_tree "$src_ver"); then
  say "using the cached source of $src_pkg $src_ver: $tree"
else
  if ! (cd "$work/source" && apt-get source --print-uris "$src_pkg" >/dev/null 2>&1); then
    use_private_apt
  fi
  ver=$(pick_version)
  if ! tree=$(find_tree "$ver"); then
    dest=$work/source/${ver#*:}
    rm -rf "$dest.partial"
    mkdir -p "$dest.partial"
    say "fetching Debian's source of $src_pkg $ver for Redis's tests/ (apt-get source, about 3 MB, into $dest)"
    if ! (cd "$dest.partial" && apt-get "${apt_opts[@]}" source --only-source "$src_pkg=$ver") >"$dest.partial.log" 2>&1; then
      tail -5 "$dest.partial.log" >&2
      die "apt-get source $src_pkg=$ver failed (full output: $dest.partial.log); check the network and the deb-src lines"
    fi
    rm -rf "$dest"
    mv "$dest.partial" "$dest"
    mv "$dest.partial.log" "$dest/apt-get-source.log"
    tree=$(find_tree "$ver") || die "the source of $src_pkg $ver has no tests/test_helper.tcl (see $dest)"
  fi
  src_ver=$ver
fi
source_version=$(sed -n 's/^#define REDIS_VERSION "\(.*\)"$/\1/p' "$tree/src/version.h")
if [ "$source_version" = "$installed" ]; then
  say "the tests are Redis $source_version's, as Debian ships them ($src_pkg $src_ver, its patches applied): the same version as redis-server ($installed)"
elif $allow_mismatch; then
  say "VERSION MISMATCH: the tests are Redis $source_version's but redis-server is $installed (--allow-version-mismatch: running anyway)"
else
  die "VERSION MISMATCH: the source in $tree is Redis $source_version but redis-server is $installed; install the matching redis-server, delete $work/source to fetch again, or pass --allow-version-mismatch"
fi
# A few tests run src/redis-server, src/redis-cli ... themselves: the
# installed binaries, where a build of the source would have put its own.
for b in redis-server redis-cli redis-benchmark redis-check-aof redis-check-rdb; do
  if [ ! -e "$tree/src/$b" ] && command -v "$b" >/dev/null; then
    ln -s "$(command -v "$b")" "$tree/src/$b"
  fi
done
mkdir -p "$tree/tests/tmp"

# runtest reads every flag before --list-tests: this checks the flags
# passed through, before anything is started.
all_units=()
if ! listed=$(cd "$tree" && ./runtest "${runtest_flags[@]}" --list-tests 2>&1); then
  bad_arg "runtest refused the flags '${runtest_flags[*]}': $(head -1 <<<"$listed")"
fi
while read -r u; do [[ $u == */* ]] && all_units+=("$u"); done <<<"$listed"
((${#all_units[@]})) || die "'./runtest --list-tests' in $tree listed no units; is tclsh8.6 installed (apt-get install tcl)?"
units=()
if ((${#units_wanted[@]})); then
  for u in "${units_wanted[@]}"; do
    u=${u%.tcl}; u=${u#tests/}
    [ -f "$tree/tests/$u.tcl" ] || bad_arg "no unit $u in $tree/tests ('--single unit/type/list' form)"
    units+=("$u")
  done
else
  units=("${all_units[@]}")
fi
if ((${#units_skipped[@]})); then
  kept=()
  for u in "${units[@]}"; do
    skip=false
    for s in "${units_skipped[@]}"; do [ "${s%.tcl}" = "$u" ] && skip=true; done
    $skip || kept+=("$u")
  done
  units=("${kept[@]}")
fi
((${#units[@]})) || bad_arg "no unit left to run"

# --- the run's directory, processes, cleanup -----------------------------
stamp=$(date +%Y%m%d-%H%M%S)
run=$(mktemp -d "$work/runs/$stamp-XXXX")
procs=$run/procs
mkdir -p "$procs"
ln -sfn "$(basename "$run")" "$work/runs/latest"
say "this run's directory: $run"

pids=()     # every process started here
names=()    # its name, same index
runner=     # the runtest of the unit under way (timeout's pid)
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$runner" ]; then kill -TERM "$runner" 2>/dev/null || true; fi
  local i
  for i in "${!pids[@]}"; do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  # Wait for them, with a deadline; kill -9 what is left after it.
  local deadline=$((SECONDS + 15)) alive
  while :; do
    alive=()
    for i in "${!pids[@]}"; do kill -0 "${pids[i]}" 2>/dev/null && alive+=("${pids[i]}"); done
    ((${#alive[@]})) || break
    if ((SECONDS >= deadline)); then
      say "still running after 15 s, killing: ${alive[*]}"
      kill -KILL "${alive[@]}" 2>/dev/null || true
      break
    fi
    sleep 0.1
  done
  wait 2>/dev/null || true
  # The processes' data (the replicas' logs, the upstreams' data) can be
  # large; their log files are kept.
  rm -rf "$procs/a" "$procs/b" "$procs/redis-alone" "$procs/redis-a" "$procs/redis-b"
  exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted: stopping everything it started"; exit 130' INT TERM

start() { # name, log, command...
  local name=$1 log=$2
  shift 2
  printf '%q ' "$@" >"$procs/$name.cmd"
  echo >>"$procs/$name.cmd"
  "$@" >>"$log" 2>&1 &
  pids+=($!)
  names+=("$name")
}
alive() { # name
  local i
  for i in "${!names[@]}"; do
    [ "${names[i]}" = "$1" ] && { kill -0 "${pids[i]}" 2>/dev/null; return; }
  done
  return 1
}

# Free loopback ports, outside the kernel's ephemeral range and the ports
# Redis's runtest uses for itself (21079 and up).
used_ports=" "
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((12000 + RANDOM % 9000))
    [[ $used_ports == *" $p "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      used_ports+="$p "
      echo "$p"
      return
    fi
  done
  die "found no free port between 12000 and 20999 on 127.0.0.1"
}
# Ports are chosen in this shell (not in $(...)) so used_ports remembers them.
next_port() { port=$(free_port); used_ports+="$port "; }

wait_until() { # seconds, what, command...: poll the command until it succeeds
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}
logs_tail() { for log in "$procs"/*.log; do echo "== $log" >&2; tail -5 "$log" >&2; done; }

# The same settings for the three redis-servers: as deploy/local-cluster.sh
# --redis starts its upstreams (no persistence), plus DEBUG, which the
# suite's needs:debug tests use (its own servers enable it too).
redis_opts=(--bind 127.0.0.1 --save "" --appendonly no --enable-debug-command yes)
start_redis() { # name, port, extra options...
  local name=$1 port=$2
  shift 2
  mkdir -p "$procs/$name"
  start "$name" "$procs/$name.log" redis-server --port "$port" --dir "$procs/$name" "${redis_opts[@]}" "$@"
  if ! wait_until 10 "$name" redis-cli -p "$port" ping >/dev/null 2>&1; then
    tail -5 "$procs/$name.log" >&2
    say "$name (redis-server on 127.0.0.1:$port) did not answer PING within 10 s; the end of its log is above"
    return 1
  fi
}
gone() { ! kill -0 "$1" 2>/dev/null; }
# A fresh redis-server alone for each unit. In external mode every unit
# shares the server, and a test that fails half-way leaves its settings
# behind (unit/type/set's "SRANDMEMBER with a dict containing long chain"
# cannot run in external mode and leaves rdb-key-save-delay at 2^31-1 with a
# BGSAVE child running, which hangs unit/type/zset after it); the suite's
# own mode starts a fresh server for every test file. The cluster needs no
# such reset: the proxy refuses CONFIG, DEBUG, BGSAVE and the like, so
# nothing but data (which every unit flushes) reaches its upstreams.
restart_alone() { # port
  local i pid
  for i in "${!names[@]}"; do
    [ "${names[i]}" = redis-alone ] || continue
    pid=${pids[i]}
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_until 15 "redis-alone exit" gone "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
    unset 'pids[i]' 'names[i]'
  done
  rm -rf "$procs/redis-alone"
  start_redis redis-alone "$1"
}

# CPUs as local-cluster.sh places them: a's pair on the first this script
# may use, b's on the next.
read -ra cpus < <(taskset -cp $$ | sed 's/.*: //' | tr ',' '\n' |
  awk -F- '{ for (c = $1; c <= ($2 == "" ? $1 : $2); c++) printf "%d ", c } END { print "" }')

want_target() { local t; for t in "${targets[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }
declare -A target_port=()
if want_target alone; then
  next_port; target_port[alone]=$port
  start_redis redis-alone "$port" || die "redis-server alone did not start; see $procs/redis-alone.log"
  say "redis-server alone on 127.0.0.1:$port (started afresh for each unit)"
fi

if want_target active || want_target standby; then
  next_port; arbiter_port=$port
  start arbiter "$procs/arbiter.log" "$bin/arbiter" run --cluster redis-suite \
    --listen "127.0.0.1:$arbiter_port" --store "file:$procs/arbiter.json"
  declare -A resp_port=() upstream_port=()
  i=0
  for node in a b; do
    cpu=${cpus[i % ${#cpus[@]}]}
    next_port; upstream=$port
    upstream_port[$node]=$upstream
    start_redis "redis-$node" "$upstream" --server_cpulist "$cpu" ||
      die "the upstream of replica $node did not start; see $procs/redis-$node.log"
    next_port; api=$port
    next_port; repl=$port
    next_port; resp_port[$node]=$port
    start "replica-$node" "$procs/replica-$node.log" "$bin/replica" run --cluster redis-suite \
      --node-id "$node" --data-dir "$procs/$node" \
      --listen "127.0.0.1:$api" --repl-listen "127.0.0.1:$repl" --arbiter "http://127.0.0.1:$arbiter_port" \
      --upstream "redis://127.0.0.1:$upstream" --resp-listen "127.0.0.1:${resp_port[$node]}" --resp-cpus "$cpu"
    say "replica $node: Redis clients on 127.0.0.1:${resp_port[$node]}, in front of redis-server 127.0.0.1:$upstream (CPU $cpu)"
    i=$((i + 1))
  done

  # The active and its confirmed sync standby, from the arbiter's status
  # (ROLE through the proxy is the redis-server's own answer).
  cluster_roles() {
    local status
    status=$(timeout 5 "$bin/arbiter" status --arbiter "http://127.0.0.1:$arbiter_port" 2>/dev/null) || return 1
    now_active=$(sed -n 's/.* active \([ab]\) .*/\1/p' <<<"$status" | head -1)
    now_standby=$(sed -n 's/.* confirmed \[\([ab]\)\].*/\1/p' <<<"$status" | head -1)
    [ -n "$now_active" ] && [ -n "$now_standby" ] && [ "$now_active" != "$now_standby" ]
  }
  # Formed: one replica active, the other a standby it confirmed holds
  # every acknowledged write.
  formed() {
    local n
    for n in arbiter replica-a replica-b redis-a redis-b; do
      alive "$n" || { say "$n exited"; return 2; }
    done
    cluster_roles || return 1
    active=$now_active standby=$now_standby
  }
  say "waiting for one replica to be active and the other its standby (at most 60 s)"
  deadline=$((SECONDS + 60))
  while :; do
    rc=0
    formed || rc=$?
    ((rc == 0)) && break
    if ((rc == 2)) || ((SECONDS >= deadline)); then
      logs_tail
      die "the cluster did not form (one active, one standby connected to it) within 60 s; the ends of the logs in $procs are above"
    fi
    sleep 0.1
  done
  target_port[active]=${resp_port[$active]}
  target_port[standby]=${resp_port[$standby]}
  say "replica $active is active (127.0.0.1:${target_port[active]}), $standby its standby (127.0.0.1:${target_port[standby]})"
fi

# --- running the units ---------------------------------------------------
# One unit's output -> rows of tests.tsv (target unit test n outcome detail)
# and one row of units.tsv. runtest's server prints what its test client
# reports (tests/test_helper.tcl, read_from_test_client): "[ok]: NAME (N
# ms)", "[err]: NAME in tests/UNIT.tcl" and the message on the next lines
# (an [err] not naming a test is an error outside any test, with
# --durable), "[skip]: NAME", "[ignore]: NAME: REASON" (or only a reason,
# for a whole tagged block), "[exception]: ..." (the unit ends), "[TIMEOUT]"
# (no progress for --timeout seconds), "The End" once done.
parse_unit() { # target unit log rc seconds [why the unit did not run]
  awk -F'\t' -v target="$1" -v unit="$2" -v log_path="$3" -v rc="$4" -v secs="$5" -v downwhy="${6:-}" \
    -v tests="$run/tests.tsv" -v units="$run/units.tsv" '
    function clean(s) { gsub(/\033\[[0-9;]*m/, "", s); gsub(/[\t\r]/, " ", s); return s }
    function emit(outcome, name, detail) {
      n = ++seen[name]
      printf "%s\t%s\t%s\t%d\t%s\t%s\n", target, unit, name, n, outcome, substr(detail, 1, 300) >> tests
      count[outcome]++
    }
    # A failure is told on the lines after "[err]: ...": the error, then
    # (for an error reply) the reply itself, e.g. "ERR DEBUG is not
    # allowed ...", before the Tcl stack (indented) or the next report.
    function failed(detail) {
      if (errname != "") emit("err", errname, detail)
      else if (blockdetail == "") blockdetail = "error outside a test: " errfirst " " detail
    }
    {
      line = clean($0)
      if (want_second) {
        want_second = 0
        if (line !~ /^(\[| )/ && line != "") { failed(firstdetail " " line); next }
        failed(firstdetail)
      }
      if (want_detail) {
        want_detail = 0; want_second = 1; firstdetail = line
        next
      }
      if (line ~ /^\[ok\]: /) { name = substr(line, 7); sub(/ \([0-9]+ ms\)$/, "", name); emit("ok", name, ""); next }
      if (line ~ /^\[err\]: /) {
        first = substr(line, 8)
        if (match(first, / in tests\/[^ ]*\.tcl$/)) errname = substr(first, 1, RSTART - 1)
        else { errname = ""; errfirst = first; blockerr++ }
        want_detail = 1
        next
      }
      if (line ~ /^\[skip\]: /) { emit("skip", substr(line, 9), ""); next }
      if (line ~ /^\[ignore\]: /) {
        d = substr(line, 11)
        if (d ~ /^(Tag: |Not supported |large memory flag)/) { ignblocks++; next }
        if (match(d, /: (Tag: |Not supported |large memory flag).*$/)) emit("ignore", substr(d, 1, RSTART - 1), substr(d, RSTART + 2))
        else emit("ignore", d, "")
        next
      }
      # An exception: its message, then the Tcl stack from the innermost
      # call; the first quoted line not inside the r helper is the
      # command that failed, the line after it where it was.
      if (line ~ /^\[exception\]: /) {
        exc = 1; excdetail = substr(line, 14); sub(/^Executing test client: /, "", excdetail); sub(/\.$/, "", excdetail)
        next
      }
      if (exc && excat == "" && line ~ /^"/ && line !~ /^"\[srv /) { excat = line; want_where = 1; next }
      if (want_where) { want_where = 0; where = line; sub(/^ *\(/, "", where); sub(/\)$/, "", where); excat = excat " (" where ")"; next }
      if (line ~ /^\[TIMEOUT\]/) { tmo = 1; next }
      if (line ~ /The End$/) { ended = 1; next }
    }
    END {
      if (want_second) failed(firstdetail)
      detail = ""
      if (rc == "down") { status = "down"; detail = downwhy }
      else if (rc == 124 || rc == 137) { status = "killed"; detail = "still running after the wall-clock limit (--unit-timeout)" }
      else if (exc) { status = "aborted"; detail = (excat == "" ? "" : "at " excat ": ") excdetail }
      else if (tmo) { status = "timeout"; detail = "no progress for runtest --timeout seconds" }
      else if (ended) status = "completed"
      else { status = "crashed"; detail = "runtest ended (status " rc ") without its summary" }
      if (blockdetail != "") detail = (detail == "" ? blockdetail : detail "; " blockdetail)
      printf "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", target, unit, status, count["ok"], count["err"], \
        count["skip"], count["ignore"], blockerr, ignblocks, secs, substr(detail, 1, 300), log_path >> units
    }' "$3"
}

printf 'target\tunit\ttest\tn\toutcome\tdetail\n' >"$run/tests.tsv"
printf 'target\tunit\tstatus\tpassed\tfailed\tskipped\tignored\terrors_outside_tests\tignored_blocks\tseconds\tdetail\tlog\n' >"$run/units.tsv"
printf 'target\taddress\tseconds\tunits\n' >"$run/targets.tsv"

# The cluster's redis-servers keep settings a unit changed and did not set
# back (a test that fails half-way, e.g. at a refused command, skips its
# own cleanup), where the redis-server alone is started afresh for each
# unit. So each unit through the proxy starts from the settings the
# upstreams had when the cluster formed: recorded before the first unit,
# set back directly on each redis-server before every other one (with the
# hidden settings tests use: `rdb-key-save-delay`, ...). Those
# understudy itself manages (replication, persistence, the password; not the
# ping period or diskless sync, which clients may set) are left alone.
restore_upstream_settings() {
  local node port file key value
  local -A now
  for node in a b; do
    port=${upstream_port[$node]}
    file=$run/procs/settings-$node.txt
    if [ ! -f "$file" ]; then
      {
        redis-cli -p "$port" --raw config get '*'
        # Hidden from `CONFIG GET *`, but set by tests: a save delay left
        # behind makes the next SAVE take for ever.
        for key in rdb-key-save-delay key-load-delay watchdog-period \
          loading-process-events-interval-bytes use-exit-on-panic; do
          redis-cli -p "$port" --raw config get "$key"
        done
      } >"$file" 2>/dev/null || true
      continue
    fi
    now=()
    while IFS= read -r key && IFS= read -r value; do
      now[$key]=$value
    done < <(redis-cli -p "$port" --raw config get '*' 2>/dev/null)
    while IFS= read -r key && IFS= read -r value; do
      case $key in
        # Settings clients may change through the proxy.
        repl-ping-replica-period | repl-ping-slave-period | repl-diskless-sync) ;;
        repl* | replica* | slave* | master* | appendf* | save | appendonly | dir | dbfilename | \
          requirepass | min-replicas* | min-slaves*) continue ;;
      esac
      [ "${now[$key]-}" = "$value" ] && continue
      redis-cli -p "$port" config set "$key" "$value" >/dev/null 2>&1 || true
    done <"$file"
  done
}

# Whether a target can take a unit now; why not in $why.
target_ready() { # target port
  local reply
  if [ "$1" = alone ] && ! restart_alone "$2"; then
    why="redis-server alone did not start again (see procs/redis-alone.log)"
    return 1
  fi
  if [ "$1" != alone ]; then
    # A unit that ended while a script of its ran (a busy loop it meant to
    # kill) leaves the cluster's redis-servers busy: kill it, as the alone
    # target's restart would, and say so.
    local node
    for node in a b; do
      if [[ $(timeout 5 redis-cli -p "${upstream_port[$node]}" ping 2>/dev/null) == BUSY* ]]; then
        redis-cli -p "${upstream_port[$node]}" script kill >/dev/null 2>&1 || true
        redis-cli -p "${upstream_port[$node]}" function kill >/dev/null 2>&1 || true
        local tries=50
        while ((tries--)) && [[ $(timeout 5 redis-cli -p "${upstream_port[$node]}" ping 2>/dev/null) != PONG ]]; do
          sleep 0.1
        done
        say "redis-$node was busy with a script the last unit left running: killed it"
      fi
    done
    restore_upstream_settings
  fi
  reply=$(timeout 5 redis-cli -p "$2" ping 2>/dev/null) || reply=
  [ "$reply" = PONG ] || { why="127.0.0.1:$2 did not answer PING (${reply:-no reply})"; return 1; }
  [ "$1" = alone ] && return 0
  if ! cluster_roles || [ "$now_active" != "$active" ] || [ "$now_standby" != "$standby" ]; then
    why="the cluster's roles changed (active ${now_active:-none}, confirmed standby ${now_standby:-none}; it began with $active active)"
    return 1
  fi
}

run_target() { # target
  local target=$1 port=${target_port[$1]} t0 u0 log rc secs i=0 why
  mkdir -p "$run/out/$target"
  say "running ${#units[@]} unit(s) against $target (127.0.0.1:$port): ./runtest --host 127.0.0.1 --port $port --single UNIT ${runtest_flags[*]}"
  t0=$SECONDS
  for unit in "${units[@]}"; do
    i=$((i + 1))
    log=$run/out/$target/${unit//\//_}.log
    u0=$SECONDS
    why=
    if ! target_ready "$target" "$port"; then
      echo "not run: $why" >"$log"
      say "$target cannot take $unit: $why"
      rc=down
    else
      # timeout(1) runs runtest in a process group of its own and, at the
      # limit, signals the whole group (runtest's test server and client).
      (cd "$tree" && exec env TERM=dumb timeout -k 10 "$unit_timeout" \
        ./runtest --host 127.0.0.1 --port "$port" --single "$unit" "${runtest_flags[@]}") >"$log" 2>&1 </dev/null &
      runner=$!
      rc=0
      wait "$runner" || rc=$?
      runner=
    fi
    secs=$((SECONDS - u0))
    parse_unit "$target" "$unit" "$log" "$rc" "$secs" "$why"
    tail -1 "$run/units.tsv" | awk -F'\t' -v i="$i" -v n="${#units[@]}" \
      '{ printf "  [%d/%d] %-7s %-36s %-9s %4d ok %3d err %3d skip %3d ignored  %4d s%s\n", i, n, $1, $2, $3, $4, $5, $6, $7, $10, ($11 == "" ? "" : "  " substr($11, 1, 90)) }' >&2
  done
  printf '%s\t127.0.0.1:%s\t%d\t%d\n' "$target" "$port" $((SECONDS - t0)) "${#units[@]}" >>"$run/targets.tsv"
  say "$target: ${#units[@]} unit(s) in $((SECONDS - t0)) s"
}

for target in "${targets[@]}"; do run_target "$target"; done

# --- comparing the targets -----------------------------------------------
# A test is known by its unit, its name and which occurrence of that name
# it is in the unit (some names repeat). A test that one target ran and
# another did not (its unit aborted, timed out or was killed before it) is
# "notrun" there.
awk -F'\t' -v targets="${targets[*]}" -v comparison="$run/comparison.tsv" \
  -v regressions="$run/regressions.tsv" -v units_file="$run/units.tsv" -v targets_file="$run/targets.tsv" '
  BEGIN {
    nt = split(targets, T, " ")
    while ((getline l < units_file) > 0) {
      split(l, f, "\t")
      if (f[1] == "target") continue
      ustatus[f[1], f[2]] = f[3]; udetail[f[1], f[2]] = f[11]
      outside[f[1]] += f[8]
      if (!(f[2] in useen)) { useen[f[2]] = 1; U[++nu] = f[2] }
    }
    while ((getline l < targets_file) > 0) { split(l, f, "\t"); tsecs[f[1]] = f[3] }
  }
  FNR == 1 { next }
  {
    k = $2 SUBSEP $3 SUBSEP $4
    if (!(k in kseen)) { kseen[k] = 1; K[$2, ++nk[$2]] = k; kname[k] = $3; kn[k] = $4 }
    out[$1, k] = $5; det[$1, k] = $6
    if ($5 == "ok" || $5 == "err") ran[k] = 1
  }
  function mark(s) {
    return s == "completed" ? " " : s == "aborted" ? "A" : s == "timeout" ? "T" : s == "killed" ? "K" : s == "down" ? "D" : "C"
  }
  function wrap(s, width, indent,   n, w, i, out, len) {
    n = split(s, w, " "); out = ""; len = 0
    for (i = 1; i <= n; i++) {
      if (len > 0 && len + 1 + length(w[i]) > width) { out = out "\n" indent; len = 0 }
      else if (len > 0) { out = out " "; len++ }
      out = out w[i]; len += length(w[i])
    }
    return out
  }
  function label(k) { return kname[k] (kn[k] > 1 ? " (#" kn[k] ")" : "") }
  # The command understudy refuses by design (README, "Refused") that a
  # failure or an aborted unit names, or "".
  # (The detail may be cut short inside "understudy".)
  function refused(d,   tail) {
    tail = " is not allowed through"
    if (!match(d, /ERR [^:]* is not allowed through/)) return ""
    return substr(d, RSTART + 4, RLENGTH - 4 - length(tail))
  }
  END {
    hdr = sprintf("%-34s", "unit"); hdr2 = sprintf("%-34s", "")
    for (t = 1; t <= nt; t++) {
      hdr = hdr sprintf(" | %-18s", T[t])
      hdr2 = hdr2 sprintf(" | %5s %4s %5s  ", "pass", "fail", "n/run")
    }
    print hdr; print hdr2
    printf "unit\ttest\tn" > comparison
    for (t = 1; t <= nt; t++) printf "\t%s", T[t] > comparison
    printf "\n" > comparison
    printf "unit\ttest\tn\ttarget\toutcome\tdetail\tcause\n" > regressions
    compare = (T[1] == "alone" && nt > 1)
    for (u = 1; u <= nu; u++) {
      unit = U[u]
      for (t = 1; t <= nt; t++) { P[t] = 0; F[t] = 0; N[t] = 0 }
      for (i = 1; i <= nk[unit]; i++) {
        k = K[unit, i]
        row = unit "\t" kname[k] "\t" kn[k]
        for (t = 1; t <= nt; t++) {
          o = ((T[t], k) in out) ? out[T[t], k] : "notrun"
          O[t] = o
          # Not run here, and skipped or ignored (by tags) where it was
          # reported: not a test this target missed.
          if (o == "notrun" && !ran[k]) o = "-"

          if (o == "ok") P[t]++
          else if (o == "err") F[t]++
          else if (o == "notrun") N[t]++
          else if (o == "skip") S[t]++
          else if (o == "ignore") I[t]++
          row = row "\t" O[t]
        }
        print row > comparison
        if (!compare || O[1] != "ok") continue
        for (t = 2; t <= nt; t++) {
          if (O[t] == "ok") continue
          reg[t]++
          if (O[t] == "notrun") {
            d = "unit " ustatus[T[t], unit] ": " udetail[T[t], unit]
            nr[unit, t]++
          } else {
            d = det[T[t], k]
            if (!((unit, k) in listed)) { listed[unit, k] = 1; L[unit, ++nl[unit]] = k }
            why[unit, k] = why[unit, k] sprintf("      %s, %s: %s\n", T[t], O[t], substr(d, 1, 160))
          }
          cause = refused(d)
          if (cause != "") {
            byd[t]++
            if (!((t, cause) in bydc)) C[t, ++nc[t]] = cause
            bydc[t, cause]++
          }
          print unit "\t" kname[k] "\t" kn[k] "\t" T[t] "\t" O[t] "\t" d "\t" \
            (cause == "" ? "other" : "refused by design: " cause) > regressions
        }
      }
      row = sprintf("%-34s", unit)
      for (t = 1; t <= nt; t++) {
        row = row sprintf(" | %5d %4d %5d %s ", P[t], F[t], N[t], mark(ustatus[T[t], unit]))
        TP[t] += P[t]; TF[t] += F[t]; TN[t] += N[t]
        st = ustatus[T[t], unit]
        if (st != "completed") {
          g = t SUBSEP st SUBSEP udetail[T[t], unit]
          if (!(g in gunits)) { G[++ng] = g; gt[g] = t; gs[g] = st; gd[g] = udetail[T[t], unit] }
          gunits[g] = gunits[g] " " unit; gn[g]++
        }
      }
      print row
    }
    row = sprintf("%-34s", "total")
    for (t = 1; t <= nt; t++) row = row sprintf(" | %5d %4d %5d   ", TP[t], TF[t], TN[t])
    print row
    print "n/run: not run on that target but run on another. After the counts: A the unit aborted,"
    print "T runtest timed out, K killed at --unit-timeout, D target down before it, C runtest crashed."
    print ""
    for (t = 1; t <= nt; t++)
      printf "%-8s %5d passed, %4d failed, %5d not run, %4d skipped, %4d ignored, %3d errors outside tests; %5d s\n", \
        T[t], TP[t], TF[t], TN[t], S[t], I[t], outside[T[t]], tsecs[T[t]]
    if (ng) {
      print ""
      print "units that did not complete:"
      for (t = 1; t <= nt; t++)
        for (i = 1; i <= ng; i++) {
          g = G[i]
          if (gt[g] != t) continue
          printf "  %s: %d unit(s) %s: %s\n", T[t], gn[g], gs[g], gd[g]
          printf "    %s\n", wrap(substr(gunits[g], 2), 100, "    ")
        }
    }
    if (!compare) exit
    print ""
    line = "tests that pass alone but not through the proxy:"
    for (t = 2; t <= nt; t++) line = line sprintf(" %d on %s%s", reg[t], T[t], t < nt ? "," : "")
    print line
    for (t = 2; t <= nt; t++) {
      line = ""
      for (i = 1; i <= nc[t]; i++) line = line sprintf("%s%s %d", i > 1 ? ", " : "", C[t, i], bydc[t, C[t, i]])
      printf "  %s: %d need a command refused by design%s, %d for other causes\n", \
        T[t], byd[t], nc[t] ? " (" line ")" : "", reg[t] - byd[t]
    }
    for (u = 1; u <= nu; u++) {
      unit = U[u]
      line = ""
      for (t = 2; t <= nt; t++)
        if (nr[unit, t]) line = line sprintf("  %d not run on %s (unit %s);", nr[unit, t], T[t], ustatus[T[t], unit])
      if (line == "" && !nl[unit]) continue
      print "  " unit ":" line
      for (i = 1; i <= nl[unit]; i++) { k = L[unit, i]; printf "    %s\n%s", label(k), why[unit, k] }
    }
  }' "$run/tests.tsv" | tee "$run/summary.txt"

cat <<EOT

Results in $run:
  summary.txt      the table above
  units.tsv        one row per target and unit: status, counts, seconds, log
  tests.tsv        one row per test reported: target, unit, name, occurrence, outcome, detail
  comparison.tsv   one row per test: its outcome on each target (ok, err, skip, ignore, notrun)
  regressions.tsv  the tests that pass alone but not through the proxy, why, and whether a
                   command refused by design (or a unit aborted at one) is the cause
  targets.tsv      each target's address and how long its run took
  out/TARGET/      each unit's full runtest output; procs/ the processes' logs
EOT
