#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, then lint, type-check and test.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql openssl sqlite3 >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e '.[dev]'

echo "== ruff"; ruff check .
echo "== mypy"; mypy
echo "== pytest"
status=0
python3 -m pytest -p no:cacheprovider "$@" || status=$?
if [ "$status" = 5 ]; then
    echo "error: pytest collected no tests" >&2
fi
exit "$status"
