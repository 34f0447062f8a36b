#!/usr/bin/env bash
# Real third-party Thrift peers for contrib/sofamesh-thrift's tests: PyPI thriftpy2 (client and
# server, framed transport, binary protocol), pinned, in its own venv under $SOFAMESH_CACHE.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${SOFAMESH_CACHE:-$PWD/.cache}"
VENV="$CACHE/venv-thrift"
PIN="thriftpy2==0.7.1"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import thriftpy2, sys; sys.exit(thriftpy2.__version__ != "0.7.1")' 2>/dev/null; then
  exit 0
fi
PY="${PY:-python3}"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "$PIN"
"$VENV/bin/python" -c 'import thriftpy2; print("thriftpy2", thriftpy2.__version__, "in", "'"$VENV"'")'
