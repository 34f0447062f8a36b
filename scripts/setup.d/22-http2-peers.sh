#!/usr/bin/env bash
# HTTP/2 peers for the http2 protocol plugin's conformance tests:
#   Debian nghttp2-client (nghttp, h2load), curl and openssl, and PyPI apache-dubbo 3.0.0b1 (Triple) in its
#   own venv, because it installs a top-level `dubbo` package. grpcio comes with the dev extras.
# Idempotent: anything already present is left alone.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${SOFAMESH_CACHE:-$repo/.cache}"
python="${PY:-python3}"

missing=()
command -v nghttp >/dev/null 2>&1 || missing+=(nghttp2-client)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)  # self-signed certificates for TLS + ALPN tests
if ((${#missing[@]})); then
    if [[ "$(id -u)" != 0 ]]; then
        echo "22-http2-peers: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
        exit 1
    fi
    apt-get update -q
    # shellcheck disable=SC2046  # one word per package name
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        $(printf '%s\n' "${missing[@]}" | sort -u)
fi

venv="$cache/venv-dubbo3"
check="import importlib.metadata as m, dubbo; assert m.version('apache-dubbo') == '3.0.0b1'"
if ! "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
    mkdir -p "$cache"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check --pre "apache-dubbo==3.0.0b1"
fi
"$venv/bin/python" -c "$check"
echo "22-http2-peers: nghttp $(nghttp --version | head -1 | awk '{print $2}'), curl, apache-dubbo 3.0.0b1 in $venv"
