#!/usr/bin/env bash
# Runs a command with throwaway PostgreSQL, Redis, Kafka-protocol (nisshi) and ClickHouse servers on
# loopback (scripts/services.sh), their URLs in TEST_TALLY_* variables, and stops them after.
#   scripts/with-services.sh cargo test --workspace
set -euo pipefail
cd "$(dirname "$0")/.."
services="$(scripts/services.sh start postgres redis kafka clickhouse)"
eval "$services"
trap 'scripts/services.sh stop "$TEST_TALLY_SERVICES_DIR"' EXIT
"$@"
