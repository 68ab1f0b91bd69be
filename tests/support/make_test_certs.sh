#!/usr/bin/env bash
# Test certificates for the TLS tests, made fresh in DIR (nothing is checked
# in): a CA, a server certificate for 127.0.0.1 / localhost signed by it, a
# client certificate signed by it, and a client certificate from a second,
# untrusted CA.
#
#   tests/support/make_test_certs.sh DIR
set -euo pipefail
dir=$1
mkdir -p "$dir"
cd "$dir"
q() { "$@" >/dev/null 2>&1 || { echo "make_test_certs: $* failed" >&2; "$@"; exit 1; }; }

ca() {  # NAME
  q openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$1" \
    -keyout "$1.key" -out "$1.crt"
}
leaf() {  # NAME CA EXTENSIONS
  q openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" -keyout "$1.key" -out "$1.csr"
  printf '%s\n' "$3" >"$1.ext"
  q openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days 2 \
    -extfile "$1.ext" -out "$1.crt"
}

ca ca
ca other-ca
leaf server ca "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
leaf client ca "extendedKeyUsage=clientAuth"
leaf stranger other-ca "extendedKeyUsage=clientAuth"
chmod 600 ./*.key
