#!/usr/bin/env bash
# Base tools the tests use as real third-party clients: curl. Installed from Debian when missing.
set -euo pipefail
# shellcheck source=../lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/apt.sh"
need=()
command -v curl >/dev/null || need+=(curl)
apt_install_missing "${need[@]}"
