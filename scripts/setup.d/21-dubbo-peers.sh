#!/usr/bin/env bash
# Real third-party Dubbo 2 peers for tests/conformance: npm dubbo2.js (consumer, DirectlyDubbo) and
# @dubbo.ts/provider + @dubbo.ts/application (provider), @dubbo.ts/zookeeper (the provider's own ZooKeeper
# registry: it writes the provider nodes that Pilot reads). Pinned, idempotent, outside the source tree.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${SOFAMESH_CACHE:-$REPO/.cache}"

# shellcheck source=../lib/node.sh
source "$REPO/scripts/lib/node.sh"
ensure_node

NPM_DIR="$CACHE/npm/dubbo"
have() {  # have PACKAGE VERSION
    grep -q "\"version\": \"$2\"" "$NPM_DIR/node_modules/$1/package.json" 2>/dev/null
}
if ! have dubbo2.js 2.3.9 || ! have @dubbo.ts/provider 2.0.7 || ! have @dubbo.ts/application 2.0.4 \
    || ! have @dubbo.ts/zookeeper 2.0.7; then
    mkdir -p "$NPM_DIR"
    [ -f "$NPM_DIR/package.json" ] || echo '{"name": "sofamesh-dubbo-peers", "private": true}' > "$NPM_DIR/package.json"
    npm install --prefix "$NPM_DIR" --no-audit --no-fund --loglevel=error --save-exact \
        dubbo2.js@2.3.9 @dubbo.ts/provider@2.0.7 @dubbo.ts/application@2.0.4 \
        @dubbo.ts/zookeeper@2.0.7
fi
