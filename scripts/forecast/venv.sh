#!/usr/bin/env bash
# Creates (once) the venv the forecasting comparison scripts run in — statsforecast 2.1.1 and
# what it needs, pinned in scripts/forecast/requirements.txt — cached under ~/.cache/tally by
# the requirements' hash, and prints its python. Not used by the tests (they read committed
# fixtures); `tally bench forecast --statsforecast` and scripts/forecast/*.py use it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
req="$here/requirements.txt"
hash="$(sha256sum "$req" | cut -c1-12)"
venv="${TALLY_CACHE:-$HOME/.cache/tally}/forecast-venv-$hash"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import statsforecast" 2>/dev/null; then
  command -v python3 >/dev/null || { echo "python3 is needed (apt-get install python3 python3-venv)" >&2; exit 1; }
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c "import ensurepip" 2>/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >&2
    else
      echo "python3-venv is needed" >&2; exit 1
    fi
  fi
  rm -rf "$venv.tmp"
  python3 -m venv "$venv.tmp" >&2
  "$venv.tmp/bin/pip" install -q --disable-pip-version-check -r "$req" >&2
  "$venv.tmp/bin/python" -c "import statsforecast" >&2
  rm -rf "$venv" && mv "$venv.tmp" "$venv"
  # A moved venv's scripts keep the old path; python itself does not care.
fi
echo "$venv/bin/python"
