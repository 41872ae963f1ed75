#!/usr/bin/env bash
# Installs what building and testing understudy needs, when it is missing:
# protoc and protobuf's well-known .proto files (etcd-client's build imports
# google/protobuf/descriptor.proto, which Debian ships in libprotobuf-dev,
# not in protobuf-compiler), etcd (comparisons and the etcd-backed arbiter),
# a C compiler and make (jemalloc's build), redis-server and redis-tools
# (proxy mode's tests, its local cluster and redis-benchmark), iptables (the
# fault suite's network partitions), and the tools that check the deployment
# kit: haproxy, promtool (Debian's prometheus package) and systemd-analyze;
# chromium and chromedriver (the dashboard's test in a real browser),
# libfaketime (the fault suite's clock skew), openssl (deploy/make-certs.sh); on
# Debian via apt-get; and kubernetes-validate (the Kubernetes manifests'
# schema check) via pip. Rust itself must already be installed.
set -euo pipefail

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v curl >/dev/null 2>&1 || need+=(curl)
# deploy/make-certs.sh (the TLS tests' and local TLS cluster's certificates).
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# jemalloc (the replica's allocator) is built from C with make.
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v make >/dev/null 2>&1 || need+=(make)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# The fault suite's clock-rate skew.
[ -f /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || need+=(libfaketime)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
[ -x /usr/sbin/iptables ] || [ -x /sbin/iptables ] || command -v iptables >/dev/null 2>&1 || need+=(iptables)

if ((${#need[@]})); then
  echo "installing: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1; then
    apt-get update >/dev/null
    apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
  fi
  # Debian's etcd-server and redis-server packages may start system services
  # on 2379 and 6379; ours pick their own ports, so they are harmless, but
  # stop them to keep the machine quiet.
  if command -v systemctl >/dev/null 2>&1; then
    systemctl stop etcd >/dev/null 2>&1 || true
    systemctl stop redis-server >/dev/null 2>&1 || true
    systemctl stop haproxy prometheus prometheus-node-exporter >/dev/null 2>&1 || true
  fi
fi

# The Kubernetes manifests' schema check (no cluster needed): from PyPI.
if ! python3 -m kubernetes_validate --version >/dev/null 2>&1; then
  echo "installing: kubernetes-validate (PyPI)" >&2
  python3 -m pip install --quiet --root-user-action=ignore kubernetes-validate==1.37.0
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
