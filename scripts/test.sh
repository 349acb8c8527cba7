#!/usr/bin/env bash
# The README's test command: installs what is missing, checks the running API against its own
# OpenAPI document with schemathesis (scripts/schemathesis.sh: every check, a fixed seed,
# bounded examples; Python tools in a venv cached under ~/.cache/tally), then starts throwaway
# PostgreSQL, Redis and a Kafka-protocol broker (nisshi, built from crates.io once per machine)
# on loopback (scripts/services.sh), runs every test of the workspace (unit, property,
# conformance, HTTP integration, the kill -9 crash tests, the backends against the real
# servers), and stops the servers again.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --locked -p tally --bin tally
scripts/schemathesis.sh
scripts/with-services.sh cargo test --workspace --all-targets --locked "$@"
