#!/usr/bin/env bash
# Regenerates crates/model/src/grpc/inference.rs from proto/inference/grpc_predict_v2.proto
# (needs protoc: apt protobuf-compiler). With --check, fails if the committed file differs
# from what the .proto generates (scripts/lint.sh runs that).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "gen-grpc: protoc missing (apt-get install protobuf-compiler)" >&2; exit 1; }
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/grpc-codegen" \
  cargo run -q --locked --manifest-path tools/grpc-codegen/Cargo.toml -- "$out"
generated="$out/inference.rs"
target="crates/model/src/grpc/inference.rs"
if [ "${1:-}" = "--check" ]; then
  if ! diff -q "$generated" "$target" >/dev/null; then
    echo "gen-grpc: $target is out of date with the .proto; run scripts/gen-grpc.sh" >&2
    diff "$generated" "$target" | head -20 >&2
    exit 1
  fi
else
  mkdir -p "$(dirname "$target")"
  cp "$generated" "$target"
  echo "gen-grpc: wrote $target" >&2
fi
