#!/usr/bin/env bash
# The prepared GPU run (benchmarks/device_run.py) on a lent GPU machine that has torch but no
# network, and what it needs from here.
#
#   benchmarks/device_run.sh --prepare        here (PyPI reachable): put the packages the GPU
#                                             machine lacks into .whl/ (about 33 MiB, git-ignored):
#                                             monai and nibabel wheels, and SimpleITK re-packed as
#                                             .tar.xz (its wheel alone is 52 MB; the tree and what
#                                             travels with it must stay under 64 MiB)
#   benchmarks/device_run.sh [ARGS...]        there (carry .whl): install them into a scratch
#                                             folder, then python3 benchmarks/device_run.py ARGS
#                                             (e.g. --budget 420); results in $OUT
#   eval "$(benchmarks/device_run.sh --env)"  there: only install them, and set PYTHONPATH for
#                                             NSLFCore, benchmarks and them (benchmarks/same_budget_gpu.sh)
set -euo pipefail
STARTED="$(date +%s.%N)"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHL="$ROOT/.whl"
PYTHON="${PYTHON:-python3}"

wheel_version() {  # the version constraints.txt pins for package $1
  grep -i "^$1==" "$ROOT/NSLFCore/constraints.txt" | cut -d= -f3
}

if [ "${1:-}" = "--prepare" ]; then
  mkdir -p "$WHL"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  download() {
    "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d "$1" "$2" 2>&1 | { grep -v '^WARNING: Location' || true; }
  }
  for package in monai nibabel; do
    download "$WHL" "$package==$(wheel_version "$package")"
  done
  download "$tmp" "simpleitk==$(wheel_version simpleitk)"
  (cd "$tmp" && unzip -q simpleitk-*.whl 'SimpleITK/*' && tar cf - SimpleITK | xz -9 -T0 > "$WHL/simpleitk.tar.xz")
  du -sh "$WHL"
  exit 0
fi

SITE="${NSLF_DEVICE_SITE:-/tmp/nslf-device-site}"
mkdir -p "$SITE"
if ! "$PYTHON" -c 'import monai, nibabel' 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHL"/*.whl
fi
if ! "$PYTHON" -c 'import SimpleITK' 2>/dev/null; then
  tar xJf "$WHL/simpleitk.tar.xz" -C "$SITE"
fi
export PYTHONPATH="$ROOT/NSLFCore:$ROOT/benchmarks:$SITE${PYTHONPATH:+:$PYTHONPATH}"
if [ "${1:-}" = "--env" ]; then
  echo "export PYTHONPATH='$PYTHONPATH'"
  exit 0
fi
export PYTHONUNBUFFERED=1
exec "$PYTHON" "$ROOT/benchmarks/device_run.py" --started "$STARTED" "$@"
