#!/usr/bin/env bash
# README command (2): set up the environment and run the whole test suite, lint included.
# .ci/run calls this script; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[dev]'
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Real PostgreSQL and Redis for tests/integration: installed here when missing, and
# required, so that a missing server fails the run instead of skipping its tests.
bash scripts/system-packages.sh
export DPSYNTH_REQUIRE_SERVERS=1
status=0
.venv/bin/python -m pytest --cov --cov-report=term "$@" || status=$?
# pytest exits 5 when it collected no test: say so instead of failing the run.
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests"
  exit 0
fi
exit "$status"
