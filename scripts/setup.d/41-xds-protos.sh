#!/usr/bin/env bash
# Envoy's generated Python stubs (PyPI xds-protos), in a venv of their own under $SOFAMESH_CACHE:
# the tests check that sofamesh's RLS v3 messages are byte-compatible with Envoy's. A separate venv
# because xds-protos ships an old copy of opentelemetry/proto that would overwrite opentelemetry-proto's.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${SOFAMESH_CACHE:-$PWD/.cache}"
VENV="$CACHE/venv-xds"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import envoy.service.ratelimit.v3.rls_pb2" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "xds-protos==1.85.0"
fi
