#!/usr/bin/env bash
# Fuzzes the HTTP API against its own OpenAPI document with schemathesis: starts a throwaway
# embedded tally on a free loopback port with API-key auth, runs `st run` with every check
# against /openapi.json, stops tally, and exits with schemathesis's status (non-zero when it
# found failures).
#
#   scripts/schemathesis.sh                        # uses target/debug/tally (build it first)
#   TALLY_BIN=target/release/tally scripts/schemathesis.sh
#   scripts/schemathesis.sh --include-path /v1/events   # extra arguments go to `st run`
#                                                       # (file paths in them: absolute)
#
# Environment: TALLY_BIN (binary, default target/debug/tally), SCHEMATHESIS_MAX_EXAMPLES
# (default 50), SCHEMATHESIS_SEED (default 1), SCHEMATHESIS_WORKERS (default 2),
# SCHEMATHESIS_REPORT_DIR (default target/schemathesis), TEST_TALLY_CACHE_DIR (venv cache).
# Only 127.0.0.1 is contacted: tally listens there, the schema and base URL point there, and
# proxy variables are cleared so nothing is routed elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

log() { echo "schemathesis.sh: $*" >&2; }

bin="${TALLY_BIN:-target/debug/tally}"
case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac
if [ ! -x "$bin" ]; then
  log "no tally binary at $bin (build it first, or set TALLY_BIN)"
  exit 1
fi

# Before anything starts: a pip failure should not leave a tally running.
py="$(scripts/venv.sh)"
st="$(dirname "$py")/st"

report_dir="${SCHEMATHESIS_REPORT_DIR:-$root/target/schemathesis}"
case "$report_dir" in /*) ;; *) report_dir="$root/$report_dir" ;; esac

tmp="$(mktemp -d "${TMPDIR:-/tmp}/tally-schemathesis.XXXXXX")"
tally_pid=""
cleanup() {
  local rc=$?
  if [ -n "$tally_pid" ] && kill -0 "$tally_pid" 2>/dev/null; then
    # SIGTERM first so tally shuts down as in production; SIGKILL if the short grace runs out.
    kill -TERM "$tally_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$tally_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$tally_pid" 2>/dev/null || true
    wait "$tally_pid" 2>/dev/null || true
  fi
  # A failed run keeps tally's log (the server side of a 500 is usually in it) next to the
  # reports, and shows its tail; the rest of the temp dir (database, key) goes either way.
  if [ "$rc" -ne 0 ] && [ -s "$tmp/tally.log" ]; then
    mkdir -p "$report_dir" && cp "$tmp/tally.log" "$report_dir/tally.log" || true
    log "tally's log, last 40 lines (all of it in $report_dir/tally.log):"
    tail -n 40 "$tmp/tally.log" >&2
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# tally reads TALLY_* variables as configuration overrides (and TALLY_CONFIG as the config
# path): run it with none of the caller's, so only the throwaway config below applies.
tally_env=(env)
while IFS= read -r name; do tally_env+=(-u "$name"); done < <(compgen -e | grep '^TALLY_' || true)

# A free loopback port: bind port 0 and let the kernel choose (a tiny race until tally binds it,
# acceptable for a test; a clash fails loudly below rather than silently testing something else).
port="$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

# One admin key: the raw key goes to schemathesis, only the printed config entry (hash) goes to
# tally. Run from the temp dir so no ./tally.toml of the checkout is read.
keygen="$(cd "$tmp" && "${tally_env[@]}" "$bin" api-key new --id admin --scope admin)"
key="$(printf '%s\n' "$keygen" | sed -n 's/^API key[^:]*: *\([^ ]*\)$/\1/p')"
entry="$(printf '%s\n' "$keygen" | sed -n '/^\[\[api\.keys\]\]/,$p')"
if [ -z "$key" ] || [ -z "$entry" ]; then
  log "could not parse the output of 'tally api-key new':"
  printf '%s\n' "$keygen" >&2
  exit 1
fi

mkdir -p "$tmp/data"
cat >"$tmp/tally.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
shutdown_grace_seconds = 5   # stopping at the end should not take the default 30 s

[embedded]
path = "$tmp/data/tally.db"

[api]
auth = "keys"                # the API as deployed: schemathesis also checks auth is enforced

$entry
EOF
"${tally_env[@]}" "$bin" config check --config "$tmp/tally.toml" >/dev/null

(cd "$tmp" && exec "${tally_env[@]}" "$bin" serve --config "$tmp/tally.toml") >"$tmp/tally.log" 2>&1 &
tally_pid=$!

base="http://127.0.0.1:$port"
log "waiting for tally (pid $tally_pid) at $base/readyz"
# Polled with the venv's python rather than curl: one dependency fewer, and no proxy is used.
ready() {
  "$py" - "$1" <<'PY'
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    sys.exit(0 if opener.open(sys.argv[1], timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}
for i in $(seq 1 120); do
  if ! kill -0 "$tally_pid" 2>/dev/null; then
    log "tally exited before it was ready"
    exit 1
  fi
  if ready "$base/readyz"; then break; fi
  if [ "$i" -eq 120 ]; then log "tally was not ready after 60 s"; exit 1; fi
  sleep 0.5
done

# Loopback only: requests honours proxy variables, so clear them for schemathesis.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"

mkdir -p "$report_dir"

# schemathesis 4 keeps a failure cache in ./.schemathesis/ and replays its entries first on the
# next run: that would litter the checkout and make a run depend on earlier ones, so it is
# switched off (the printed curl commands reproduce failures instead of `st replay`). Passing
# --config-file also stops schemathesis from picking up some schemathesis.toml it finds.
#
# Writes may answer 422 to a schema-valid request for what JSON Schema cannot express: an
# id used earlier for a different request (idempotency-key-reused: the generator reuses ids),
# a CloudEvent whose subject is not its data.sku. So positive_data_acceptance accepts 422
# there — and only there; a 400 is still a failure (the document must describe the syntax).
cat >"$tmp/schemathesis.toml" <<'EOF2'
[cache]
enabled = false
EOF2
# 422 is a valid answer to schema-valid data where the engine judges it: a reservation
# rejected, an idempotency key (a transaction id) reused for another request, flags naming a
# model version that has no card (or that the demand model does not answer with), a CloudEvent
# that is no demand event, a time zone name the time zone database does not know.
for op in "POST /v1/events" "POST /v1/reservations" "POST /v1/reservations/{reservation_id}/release" \
  "POST /v1/reservations/{reservation_id}/commit" "POST /v1/stock/{sku}/locations/{location}/adjustments" \
  "POST /v1/fraud/score" "PUT /v1/fraud/profiles/{account_id}" "PUT /v1/fraud/flags" \
  "POST /v1/forecast/events" "PUT /v1/forecast/flags" "PUT /v1/forecast/references"; do
  cat >>"$tmp/schemathesis.toml" <<EOF2

[[operations]]
include-name = "$op"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]
EOF2
done

# Why each option:
#   --checks all                every check schemathesis has (conformance of status codes,
#                               content types, headers and bodies; 5xx; negative data rejected
#                               and positive data accepted; auth ignored; unsupported methods;
#                               the stateful use-after-free / resource-availability checks).
#   --max-examples              bounds the cases per operation and phase so the run stays a few
#                               minutes on two cores.
#   --seed / --generation-database none
#                               the same generated cases every run (a fixed seed, and no
#                               example database replaying an earlier run's cases; the
#                               database would also litter the checkout with .hypothesis/):
#                               a failure in CI reproduces locally with the same command.
#                               (--generation-deterministic is not used: schemathesis rejects
#                               it together with --generation-database, and an explicit seed
#                               takes precedence over it anyway.)
#   --continue-on-failure       report every distinct failure of an operation, not only its
#                               first (costs nothing once the API is clean).
#   --workers                   two cores: one for schemathesis, one for tally.
#   --request-timeout           a hung request is a failure, not a hung CI job.
#   --report junit              a machine-readable record next to the build output.
#   --no-color                  readable CI logs.
# -H sends the admin key on every request (schemathesis also drops/corrupts it for the
# ignored_auth check). Output sanitizing stays on, so the printed reproductions show
# `Authorization: [Filtered]` (and, as its name has "key" in it, `Idempotency-Key: [Filtered]`);
# the key is throwaway, so `--output-sanitize false` as an extra argument is safe when you need
# the exact headers.

set +e
# From the temp dir: Hypothesis (under schemathesis) always creates ./.hypothesis/ (Unicode
# tables, constants) in its working directory, and a fresh one per run keeps runs independent
# and the checkout clean. So give file paths in extra arguments (--baseline, ...) as absolute
# paths, e.g. "$PWD/baseline.json".
(cd "$tmp" && exec "$st" --config-file "$tmp/schemathesis.toml" run "$base/openapi.json" \
  --checks all \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}" \
  --seed "${SCHEMATHESIS_SEED:-1}" \
  --generation-database none \
  --continue-on-failure \
  --workers "${SCHEMATHESIS_WORKERS:-2}" \
  --request-timeout 10 \
  --report junit --report-dir "$report_dir" \
  --no-color \
  -H "Authorization: Bearer $key" \
  "$@")
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
  log "schemathesis reported failures (exit $rc); JUnit report in $report_dir"
fi
exit "$rc"
