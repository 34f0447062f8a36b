#!/usr/bin/env bash
# Real third-party clients of the Eureka, Nacos and Consul registry APIs that Pilot serves
# (tests/conformance/test_registry_apis.py): PyPI py-eureka-client and py-consul in one venv of
# their own, pinned; npm nacos (its naming client speaks Nacos's v1 HTTP API); PyPI nacos-sdk-python 3.x
# (Nacos 2's gRPC protocol) in a second venv, as its dependencies are many.
# Idempotent, outside the source tree.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${SOFAMESH_CACHE:-$REPO/.cache}"
VENV="$CACHE/venv-registry-apis"
PINS=("py-eureka-client==0.13.3" "py-consul==1.8.0")

have_all() {
    [ -x "$VENV/bin/python" ] || return 1
    local frozen
    frozen="$("$VENV/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null)" || return 1
    for pin in "${PINS[@]}"; do
        grep -qix "$pin" <<<"$frozen" || return 1
    done
}

if have_all; then
    echo "37-registry-api-peers: ${PINS[*]} already in $VENV"
else
    mkdir -p "$CACHE"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}"
fi

NACOS_VENV="$CACHE/venv-nacos-grpc"
NACOS_PIN="nacos-sdk-python==3.2.0"
if ! { [ -x "$NACOS_VENV/bin/python" ] \
    && "$NACOS_VENV/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null | grep -qix "$NACOS_PIN"; }; then
    mkdir -p "$CACHE"
    python3 -m venv "$NACOS_VENV"
    "$NACOS_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$NACOS_PIN"
fi

# shellcheck source=../lib/node.sh
source "$REPO/scripts/lib/node.sh"
ensure_node
NACOS_JS_VERSION="2.6.3"
NPM_DIR="$CACHE/npm/registry-apis"
if [ ! -f "$NPM_DIR/node_modules/nacos/package.json" ] \
    || ! grep -q "\"version\": \"$NACOS_JS_VERSION\"" "$NPM_DIR/node_modules/nacos/package.json"; then
    mkdir -p "$NPM_DIR"
    [ -f "$NPM_DIR/package.json" ] || echo '{"name": "sofamesh-registry-api-peers", "private": true}' > "$NPM_DIR/package.json"
    npm install --prefix "$NPM_DIR" --no-audit --no-fund --loglevel=error "nacos@$NACOS_JS_VERSION"
fi
