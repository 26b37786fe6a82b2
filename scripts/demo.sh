#!/usr/bin/env bash
# Install secserver and run the end-to-end demo on the embedded SQLite default.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -e .
exec secserver demo "$@"
