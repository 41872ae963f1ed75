#!/usr/bin/env bash
# Installs what a part of understudy needs, when it is missing, and says
# what and why before it starts. Rust itself must already be installed.
#
#   deploy/prereqs.sh build    # building: protoc and protobuf's .proto files, a C compiler, make
#   deploy/prereqs.sh cluster  # local-cluster.sh: curl (its readiness check and the commands it prints)
#   deploy/prereqs.sh etcd     # local-cluster.sh --etcd: etcd
#   deploy/prereqs.sh redis    # local-cluster.sh --redis: redis-server and redis-cli
#   deploy/prereqs.sh tls      # local-cluster.sh --tls: openssl (deploy/make-certs.sh)
#   deploy/prereqs.sh test     # the whole test suite: all of the above and its own tools
#   deploy/prereqs.sh redis-suite  # tests/redis-suite.sh (Redis's own tests): redis, tcl, dpkg-dev
#
# Several parts may be named at once (`deploy/prereqs.sh build redis`).
# Packages come from Debian (apt-get); the test suite's schema check of the
# Kubernetes manifests comes from PyPI (pip).
set -euo pipefail

packages=()  # Debian packages to install
reasons=()   # one line per package: why
want() { # package, reason
  local p
  for p in "${packages[@]}"; do [ "$p" = "$1" ] && return 0; done
  packages+=("$1")
  reasons+=("  $1: $2")
}
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

part_build() {
  # etcd-client's build runs protoc on etcd's API, which imports protobuf's
  # well-known .proto files; Debian ships those in libprotobuf-dev.
  have protoc || want protobuf-compiler "protoc, run by etcd-client's build on etcd's API"
  [ -f /usr/include/google/protobuf/descriptor.proto ] ||
    want libprotobuf-dev "protobuf's well-known .proto files, which etcd's API imports"
  # jemalloc (the replica's allocator) is built from C with make.
  have cc || want gcc "a C compiler for jemalloc, the replica's allocator"
  have make || want make "jemalloc's build"
}
part_cluster() { have curl || want curl "the local cluster's readiness check and the commands it prints"; }
part_etcd() { have etcd || want etcd-server "etcd, where the arbiters keep their state and elect a leader"; }
part_redis() {
  have redis-server || want redis-server "the upstreams that proxy mode fronts"
  have redis-cli || want redis-tools "redis-cli and redis-benchmark, to talk to them"
}
part_redis_suite() {
  part_redis
  # runtest looks for tclsh8.5, 8.6 or 8.7 by those names.
  have tclsh8.6 || have tclsh8.7 || have tclsh8.5 || want tcl "Redis's test suite is written in Tcl (runtest)"
  have dpkg-source || want dpkg-dev "apt-get source unpacks Redis's source package with dpkg-source"
}
part_tls() { have openssl || want openssl "deploy/make-certs.sh makes the CA and certificates with it"; }
part_test() {
  part_build
  part_etcd
  part_redis
  part_tls
  part_cluster
  have iptables || want iptables "the fault suite's network partitions"
  have haproxy || want haproxy "checks deploy/haproxy.cfg and drives writes through it"
  have promtool || want prometheus "promtool checks deploy/prometheus/ and its alert tests"
  have systemd-analyze || want systemd "systemd-analyze verifies deploy/systemd/"
  have chromium || want chromium "the dashboard's test in a real browser"
  have chromedriver || want chromium-driver "drives that browser (WebDriver)"
  [ -f /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] ||
    want libfaketime "the fault suite's slow replica clock"
  test_pip=true
}

test_pip=false
(($#)) || set -- build
for part in "$@"; do
  case "$part" in
    build | cluster | etcd | redis | tls | test) "part_$part" ;;
    redis-suite) part_redis_suite ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "deploy/prereqs.sh: unknown part '$part' (build, cluster, etcd, redis, tls, redis-suite or test)" >&2; exit 2 ;;
  esac
done

if ((${#packages[@]})); then
  echo "installing from Debian (apt-get), for $*:" >&2
  printf '%s\n' "${reasons[@]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null 2>&1; then
    apt-get update >/dev/null
    apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null
  fi
  # Debian's etcd-server, redis-server, haproxy and prometheus packages may
  # start system services on their usual ports; understudy's clusters and
  # tests pick their own, so these are harmless, but stop them to keep the
  # machine quiet.
  if command -v systemctl >/dev/null 2>&1; then
    systemctl stop etcd redis-server haproxy prometheus prometheus-node-exporter >/dev/null 2>&1 || true
  fi
fi

if $test_pip && ! python3 -m kubernetes_validate --version >/dev/null 2>&1; then
  echo "installing from PyPI (pip), for test:" >&2
  echo "  kubernetes-validate: the Kubernetes manifests' schema check (no cluster needed)" >&2
  python3 -m pip install --quiet --root-user-action=ignore kubernetes-validate==1.37.0
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
