#!/usr/bin/env bash
# Real third-party SOFA Bolt peers for tests/conformance: npm sofa-rpc-node (provider + consumer)
# and PyPI anthunder (listener + client, in its own venv). Pinned, idempotent, outside the source tree.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${SOFAMESH_CACHE:-$REPO/.cache}"

# shellcheck source=../lib/node.sh
source "$REPO/scripts/lib/node.sh"
ensure_node

NPM_DIR="$CACHE/npm/sofa-rpc-node"
if [ ! -f "$NPM_DIR/node_modules/sofa-rpc-node/package.json" ] \
    || ! grep -q '"version": "2.10.0"' "$NPM_DIR/node_modules/sofa-rpc-node/package.json"; then
    mkdir -p "$NPM_DIR"
    [ -f "$NPM_DIR/package.json" ] || echo '{"name": "sofamesh-bolt-peers", "private": true}' > "$NPM_DIR/package.json"
    npm install --prefix "$NPM_DIR" --no-audit --no-fund --loglevel=error sofa-rpc-node@2.10.0
fi

VENV="$CACHE/venv-anthunder"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("anthunder") != "0.8.1")' 2>/dev/null; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check anthunder==0.8.1
fi
