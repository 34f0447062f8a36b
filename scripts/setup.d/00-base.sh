#!/usr/bin/env bash
# Base tools the tests use as real third-party clients: curl. Installed from Debian when missing.
set -euo pipefail
need=()
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
  else
    echo "missing: ${need[*]} (run as root, or install them)" >&2
    exit 1
  fi
fi
