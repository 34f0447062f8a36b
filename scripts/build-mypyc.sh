#!/usr/bin/env bash
# The compiled build: a venv with sofamesh installed (not editable, with the demo extra) from a wheel
# whose hot-path modules (setup.py COMPILED: the codecs, the HTTP/2 engine and the stream path) are
# compiled by mypyc into C extensions. The wheel stays in $SOFAMESH_CACHE/wheels.
# Usage: scripts/build-mypyc.sh [VENV]      (default: $SOFAMESH_CACHE/venv-mypyc)
# Needs a C compiler and the Python headers: without them it says what is missing and exits 3
# (`make demo` then runs the pure-Python install). Idempotent: rebuilds only when the sources changed
# (a hash of sofamesh/**/*.py, pyproject.toml, setup.py and scripts/packaging is kept in VENV/.sofamesh-build).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
SOFAMESH_CACHE="${SOFAMESH_CACHE:-$REPO/.cache}"
VENV="$(realpath -m "${1:-$SOFAMESH_CACHE/venv-mypyc}")"  # absolute: the build runs from a copy
PY="${PY:-python3}"
MYPY_VERSION="$(sed -n 's/^MYPY_VERSION = "\([^"]*\)".*/\1/p' scripts/packaging/sofamesh_compile.py)"

stamp="$( (cd "$REPO" && find sofamesh -name '*.py' -print0 | sort -z | xargs -0 sha256sum
           sha256sum pyproject.toml setup.py scripts/packaging/*.py; echo "mypy $MYPY_VERSION") | sha256sum | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.sofamesh-build" 2>/dev/null)" = "$stamp" ]; then
  echo "compiled build up to date: $VENV"
  exit 0
fi

if ! missing="$("$PY" scripts/packaging/sofamesh_compile.py)"; then
  echo "no compiled build: $missing" >&2
  exit 3
fi
echo "building the compiled build once (mypyc; 3 to 5 minutes on 2 cores) into $VENV"
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# mypyc type-checks what the compiled modules import, as `mypy sofamesh/core` does in the dev venv:
# the runtime dependencies (a pure install pulls them) and the stubs must be there.
"$VENV/bin/python" -m pip install -q "setuptools>=77" wheel "mypy==$MYPY_VERSION" types-PyYAML

# Build from a copy: keeps build/ (mypyc's C sources, setuptools' objects) out of the checkout and
# leaves no stale module from an earlier build.
src="$(mktemp -d)"
trap 'rm -rf "$src"' EXIT
cp -r sofamesh pyproject.toml setup.py README.md MANIFEST.in "$src/"
mkdir -p "$src/scripts" && cp -r scripts/packaging "$src/scripts/"
find "$src" -name __pycache__ -prune -exec rm -rf {} +
start=$SECONDS
SOFAMESH_MYPYC=0 "$VENV/bin/python" -m pip install -q "$src[demo]"
pure=$SECONDS
wheels="$SOFAMESH_CACHE/wheels"
mkdir -p "$wheels"
rm -f "$wheels"/sofamesh-*.whl
(cd "$src" && SOFAMESH_MYPYC=1 "$VENV/bin/python" -m pip wheel -q --no-build-isolation --no-deps -w "$wheels" "$src")
wheel="$(ls "$wheels"/sofamesh-*.whl)"
"$VENV/bin/python" -m pip install -q --no-deps --force-reinstall "$wheel"
echo "compiled build installed in $VENV from $wheel (pure install $((pure - start)) s, compile $((SECONDS - pure)) s)"
bash scripts/reinstall-otel-proto.sh "$VENV/bin/python"
# Fail here, not in a test, if the modules are not the compiled ones.
(cd / && "$VENV/bin/python" -c 'import sofamesh.core.proxy.stream as m; assert m.__file__.endswith(".so"), m.__file__')
echo "$stamp" > "$VENV/.sofamesh-build"
