#!/usr/bin/env bash
# Registry servers for the zookeeper/etcd registry plugin tests: Debian zookeeper (started by the
# pytest fixtures with java directly, not as a service) and etcd-server. Idempotent.
set -euo pipefail

need_apt=()
[ -f /usr/share/java/zookeeper.jar ] || need_apt+=(zookeeper)
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
if ((${#need_apt[@]})); then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi
