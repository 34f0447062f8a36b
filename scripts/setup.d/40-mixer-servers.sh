#!/usr/bin/env bash
# Servers the mixer filters are tested against: Debian's Prometheus (scrapes the sidecar's
# istio_* metrics) and redis-server (the store behind `sofamesh ratelimit-server`).
set -euo pipefail
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
    # The packages start system services; the tests run their own instances on free ports.
    for svc in prometheus redis-server; do
      if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
        systemctl stop "$svc" || true
      fi
    done
  else
    echo "missing: ${need[*]} (run as root, or install them)" >&2
    exit 1
  fi
fi
