#!/usr/bin/env bash
# Base tools the tests use as real third-party clients: curl, wrk (HTTP/1.1 keep-alive load through a hot
# upgrade). Installed from Debian when missing.
set -euo pipefail
# shellcheck source=../lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/apt.sh"
need=()
command -v curl >/dev/null || need+=(curl)
command -v wrk >/dev/null || need+=(wrk)
apt_install_missing "${need[@]}"
