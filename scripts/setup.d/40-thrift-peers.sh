#!/usr/bin/env bash
# Real third-party Thrift peers for contrib/sofamesh-thrift's tests, pinned, in their own venv
# under $SOFAMESH_CACHE: PyPI thriftpy2 (client and server) and Apache's PyPI thrift (client).
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${SOFAMESH_CACHE:-$PWD/.cache}"
VENV="$CACHE/venv-thrift"
PINS=("thriftpy2==0.7.1" "thrift==0.25.0")
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c '
import sys, importlib.metadata as m
sys.exit(m.version("thriftpy2") != "0.7.1" or m.version("thrift") != "0.25.0")' 2>/dev/null; then
  exit 0
fi
PY="${PY:-python3}"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PINS[@]}"
"$VENV/bin/python" -c 'import thriftpy2, thrift; print("thriftpy2", thriftpy2.__version__, "and thrift in", "'"$VENV"'")'
