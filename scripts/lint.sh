#!/usr/bin/env bash
# Formatting and clippy, warnings as errors (what CI checks before the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
scripts/gen-grpc.sh --check
cargo clippy --workspace --all-targets --locked -- -D warnings
