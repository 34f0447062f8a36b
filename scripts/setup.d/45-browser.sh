#!/usr/bin/env bash
# Headless Chromium (Debian's chromium): the dashboard test loads Pilot's /ui in it, reads the DOM
# after the page's JS ran (--dump-dom) and keeps a screenshot. Installed from Debian when missing.
set -euo pipefail
# shellcheck source=../lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/apt.sh"
need=()
command -v chromium >/dev/null || need+=(chromium)
apt_install_missing "${need[@]}"
