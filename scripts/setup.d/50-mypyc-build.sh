#!/usr/bin/env bash
# The compiled build for tests/conformance/test_compiled_build.py: sofamesh with its codecs and
# stream path compiled by mypyc, in $SOFAMESH_CACHE/venv-mypyc (scripts/build-mypyc.sh; mypy pinned
# there, build time only). Needs a C compiler and the interpreter's headers: Debian gcc and, for
# Debian's own python3, python3-dev. Quick when the build matches the sources (a hash is kept).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=../lib/apt.sh
source "$REPO/scripts/lib/apt.sh"
PY="$REPO/.venv/bin/python"
[ -x "$PY" ] || PY=python3

need=()
command -v gcc >/dev/null || need+=(gcc)
inc="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
[ -f "$inc/Python.h" ] || need+=(python3-dev)
apt_install_missing "${need[@]}"

PY="$PY" exec bash "$REPO/scripts/build-mypyc.sh"
