#!/usr/bin/env bash
# The README's test command: installs what is missing, starts throwaway PostgreSQL, Redis and a
# Kafka-protocol broker (nisshi, built from crates.io once per machine) on loopback
# (scripts/services.sh), runs every test of the workspace (unit, property, conformance, HTTP
# integration, the kill -9 crash tests, the backends against the real servers), and stops the
# servers again.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
services="$(scripts/services.sh start postgres redis kafka)"
eval "$services"
trap 'scripts/services.sh stop "$TEST_TALLY_SERVICES_DIR"' EXIT
cargo test --workspace --all-targets --locked "$@"
