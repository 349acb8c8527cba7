#!/usr/bin/env bash
# Creates (once) and reuses the Python venv holding scripts/requirements-test.txt, and prints
# the path of its python on stdout (everything else goes to stderr, so callers can do
# `py="$(scripts/venv.sh)"`).
#
# Why outside the checkout: CI clones afresh each run and `git clean` would wipe it; the cache
# dir survives between runs on the same machine, so pip runs only when the pins change.
# Why keyed on the file's hash: a changed requirements file gets a new venv instead of
# upgrading an old one in place, so a venv's contents always match exactly one pin set.
set -euo pipefail
cd "$(dirname "$0")/.."

REQS="scripts/requirements-test.txt"
CACHE="${TEST_TALLY_CACHE_DIR:-$HOME/.cache/tally}"
PYTHON="${PYTHON:-python3}"

hash="$(sha256sum "$REQS" | cut -c1-12)"
venv="$CACHE/venv-$hash"

# The marker is written only after pip succeeded: a venv left half-built by an interrupted or
# failed install is not "existing", and is rebuilt from scratch on the next run.
if [ ! -f "$venv/.installed" ]; then
  echo "venv: creating $venv from $REQS" >&2
  rm -rf "$venv"
  mkdir -p "$CACHE"
  "$PYTHON" -m venv "$venv" >&2
  # --no-input: never wait for a prompt in CI; output to stderr keeps stdout for the path.
  # A pip failure stops the script here (set -e) with pip's own error on stderr.
  if ! "$venv/bin/python" -m pip install --no-input --disable-pip-version-check -q -r "$REQS" >&2; then
    echo "venv: pip install -r $REQS failed; removing $venv" >&2
    rm -rf "$venv"
    exit 1
  fi
  touch "$venv/.installed"
fi

echo "$venv/bin/python"
