#!/usr/bin/env bash
# Makes a private CA and one certificate per name, for a local or test
# cluster's TLS:
#
#   deploy/make-certs.sh DIR NAME...
#
# writes DIR/ca.pem (give every process as --tls-ca), DIR/ca-key.pem (keep
# it private; only this script needs it), and for each NAME DIR/NAME.pem and
# DIR/NAME-key.pem (--tls-cert, --tls-key). Each certificate names NAME,
# localhost, 127.0.0.1 and ::1, plus any extra names listed in
# UNDERSTUDY_CERT_SANS (comma-separated, e.g. "DNS:replica-0.example,IP:10.0.0.5"),
# and serves both as a server and as a client certificate (mutual TLS).
# Keys are ECDSA P-256. An existing CA in DIR is reused, so running the
# script again adds or renews certificates that the same CA signs.
# Needs openssl (Debian package openssl).
set -euo pipefail

if (($# < 2)); then
  echo "usage: $0 DIR NAME... (e.g. $0 /etc/understudy/tls arbiter a b)" >&2
  exit 2
fi
dir=$1
shift
days=${UNDERSTUDY_CERT_DAYS:-825}
command -v openssl >/dev/null 2>&1 || {
  echo "openssl not found: apt-get install -y openssl" >&2
  exit 1
}
mkdir -p "$dir"
umask 077

if [ ! -f "$dir/ca.pem" ] || [ ! -f "$dir/ca-key.pem" ]; then
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" -days "$days" \
    -subj "/CN=understudy local CA $(date -u +%Y%m%dT%H%M%SZ) $(openssl rand -hex 4)" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "made CA $dir/ca.pem" >&2
fi

for name in "$@"; do
  case "$name" in
    *[!A-Za-z0-9._-]*|'') echo "bad name: '$name' (letters, digits, '.', '_', '-')" >&2; exit 2 ;;
  esac
  sans="DNS:$name,DNS:localhost,IP:127.0.0.1,IP:::1"
  [ -n "${UNDERSTUDY_CERT_SANS:-}" ] && sans="$sans,$UNDERSTUDY_CERT_SANS"
  ext=$(mktemp)
  trap 'rm -f "$ext" "$dir/$name.csr"' EXIT
  printf '%s\n' \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth,clientAuth" \
    "subjectAltName=$sans" >"$ext"
  # Written next to the target and renamed, so a process watching the
  # files never reads half of one.
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$dir/.$name-key.pem.new" -out "$dir/$name.csr" -subj "/CN=$name" 2>/dev/null
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
    -CAcreateserial -CAserial "$dir/ca.srl" -out "$dir/.$name.pem.new" -days "$days" \
    -extfile "$ext" 2>/dev/null
  mv "$dir/.$name-key.pem.new" "$dir/$name-key.pem"
  mv "$dir/.$name.pem.new" "$dir/$name.pem"
  rm -f "$ext" "$dir/$name.csr"
  trap - EXIT
  echo "made $dir/$name.pem and $dir/$name-key.pem ($sans)" >&2
done
