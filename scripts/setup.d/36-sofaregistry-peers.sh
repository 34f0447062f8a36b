#!/usr/bin/env bash
# The real SOFARegistry client for tests/conformance: npm sofa-registry-node@0.0.1 (with its deps
# sofa-bolt-node and sofa-hessian-node). Pinned, idempotent, outside the source tree.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${SOFAMESH_CACHE:-$REPO/.cache}"

# shellcheck source=../lib/node.sh
source "$REPO/scripts/lib/node.sh"
ensure_node

NPM_DIR="$CACHE/npm/sofa-registry"
if [ ! -f "$NPM_DIR/node_modules/sofa-registry-node/package.json" ] \
    || ! grep -q '"version": "0.0.1"' "$NPM_DIR/node_modules/sofa-registry-node/package.json"; then
    mkdir -p "$NPM_DIR"
    [ -f "$NPM_DIR/package.json" ] || echo '{"name": "sofamesh-sofaregistry-peers", "private": true}' > "$NPM_DIR/package.json"
    npm install --prefix "$NPM_DIR" --no-audit --no-fund --loglevel=error sofa-registry-node@0.0.1
fi
