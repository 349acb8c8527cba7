#!/usr/bin/env bash
# The README's test command: installs what is missing, then runs every test of the workspace
# (unit, property, conformance, HTTP integration and the kill -9 crash test).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace --all-targets --locked "$@"
