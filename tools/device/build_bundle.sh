#!/bin/bash
# Build the offline wheelhouse for an offline GPU host (no network there) and split it into
# parts that fit one transfer each (CALL_BYTES, the repository included: pack_parts.sh sizes them).
#   usage: tools/device/build_bundle.sh [WORKDIR] [PARTS_DIR]     (make device-bundle)
# Layout written (run.sh and tools/device/README.md read exactly this; tests/test_device_bundle.py checks it):
#   PARTS_DIR/p0/{part.0,wheelhouse.sha256,parts.txt}  PARTS_DIR/p1/part.1 ...
# The wheelhouse holds the pinned cp312 wheels of bundle-pins.txt. Wheels are rewritten uncompressed
# (ZIP_STORED) so that xz compresses the whole tar well; the vllm wheel is trimmed of files never
# loaded on Hopper (FA2 kernels: FA3 is chosen; vllm-rs: only with VLLM_USE_RUST_FRONTEND; deep_gemm
# builds for other Pythons) with its RECORD rewritten to match. Nothing else is changed.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
W=$(realpath -m "${1:-/tmp/dev}")
PARTS=$(realpath -m "${2:-$ROOT/.whl}")          # absolute before any cd (a relative PARTS broke split)
PINS=${PINS:-$HERE/bundle-pins.txt}                # another bundle: its own pins (and TRIM_FILE, COMPRESS)
TRIM_FILE=${TRIM_FILE:-}                           # empty: repack_wheels.py's own list (the gpu-hopper bundle's)
PLAT="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64
 --platform manylinux_2_26_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64
 --platform manylinux_2_35_x86_64 --platform manylinux_2_5_x86_64"
export PIP_CONSTRAINT=
mkdir -p "$W/dl" "$PARTS"
# a pin marked `# build-from-sdist` has no wheel on the index (flashinfer-python 0.3.1): its wheel is built here
grep -v 'build-from-sdist' "$PINS" > "$W/pins-wheels.txt"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLAT \
  -d "$W/dl" -r "$W/pins-wheels.txt"
for req in $(grep 'build-from-sdist' "$PINS" | sed 's/#.*//'); do
  # a throwaway venv with the sdist's build-system requirements (flashinfer 0.3.1: setuptools>=77, packaging>=24);
  # its JIT-only build compiles nothing, so the wheel is py3-none-any
  [ -x "$W/sdist-build/bin/python" ] || python3 -m venv "$W/sdist-build"
  "$W/sdist-build/bin/python" -m pip install -q 'setuptools>=77' 'packaging>=24' wheel
  "$W/sdist-build/bin/python" -m pip wheel -q --no-deps --no-build-isolation --no-binary :all: -w "$W/dl" "$req"
done
if [ "${STREAM:-0}" = 1 ]; then
  # STREAM=1: the repacked wheels go straight into the compressor (no wheelhouse on disk: ~10 GB for the documents'
  # stack); the parts are the same layout
  export TAR_STREAM_CMD="python3 '$HERE/repack_wheels.py' --tar '$W/dl' '$PINS' '$TRIM_FILE'"
  "$HERE/pack_parts.sh" "$W" "$PARTS"
  exit 0
fi
rm -rf "$W/wheelhouse" && mkdir -p "$W/wheelhouse"
python3 "$HERE/repack_wheels.py" "$W/dl" "$W/wheelhouse" "$PINS" ${TRIM_FILE:+"$TRIM_FILE"}
du -sh "$W/wheelhouse"
"$HERE/pack_parts.sh" "$W" "$PARTS"
