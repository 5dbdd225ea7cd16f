#!/usr/bin/env bash
# README command (1): set up and run the service on its embedded default: SQLite, local
# storage and a SQLite-backed Celery broker under $DPSYNTH_DATA_DIR (default ~/.dpsynth),
# the API on http://127.0.0.1:8000 and one embedded worker process. The first run creates
# a tenant "default" with one API key per role and prints the keys.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e .
.venv/bin/dpsynth admin bootstrap
exec .venv/bin/dpsynth serve "$@"
