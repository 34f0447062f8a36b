#!/usr/bin/env bash
# xds-protos (Pilot's Envoy messages) ships an old copy of opentelemetry/proto/* that overwrites
# opentelemetry-proto's files (whichever installs last wins) and breaks the OTLP exporters with
# "cannot import name 'InstrumentationScope'". Put opentelemetry-proto's own files back.
# Usage: scripts/reinstall-otel-proto.sh [PYTHON]   (default: .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PYBIN="${1:-.venv/bin/python}"
v="$("$PYBIN" -m pip show opentelemetry-proto 2>/dev/null | sed -n 's/^Version: //p')"
if [ -n "$v" ]; then
  "$PYBIN" -m pip install -q --force-reinstall --no-deps "opentelemetry-proto==$v"
fi
