#!/usr/bin/env bash
# Installs what building and testing tally needs on a fresh Debian 12 machine (root or sudo).
# Idempotent: installs only what is missing. Rust itself comes from rustup (rust-toolchain.toml
# pins the version; rustup fetches it on first use).
#
# Why each package: a C compiler and make for the bundled SQLite, mimalloc and librdkafka
# (built with its own configure script); OpenSSL and zlib headers so librdkafka, the PostgreSQL
# and the Redis clients can speak TLS (and librdkafka SASL and compression); pkg-config to find
# them; the openssl tool for the TLS test's throwaway certificates; promtool (from the
# prometheus package) for the test that lints /metrics; Python's venv for the test tools;
# protoc (protobuf-compiler) for the lint that checks the committed gRPC code against its .proto.
set -euo pipefail

need=()
for pkg in build-essential pkg-config libssl-dev zlib1g-dev openssl protobuf-compiler; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# The schemathesis venv (scripts/venv.sh): Debian's python3 lacks venv/ensurepip without this.
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)

if ((${#need[@]})); then
  echo "setup: installing ${need[*]} from apt" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust with rustup first (https://rustup.rs)" >&2
  exit 1
fi
