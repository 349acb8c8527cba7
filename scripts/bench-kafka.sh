#!/usr/bin/env bash
# `tally bench inventory --stack kafka` on throwaway PostgreSQL, Redis and Kafka-protocol
# (nisshi) servers started like scripts/test.sh does; extra arguments go to the benchmark.
#   scripts/bench-kafka.sh --events 200000 --skus 100000 --json
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked
scripts/with-services.sh ./target/release/tally bench inventory --stack kafka "$@"
