#!/bin/bash
# Build the offline vLLM bundle for the borrowed H100 (no network there).
# Here: download pinned cp312 wheels, install them into a --target site dir, trim, tar+xz,
# split into parts that fit one `run` call each (<= 58 MiB, the working tree limit is 64 MiB).
# usage: tools/device/build_bundle.sh WORKDIR PARTS_DIR
set -euo pipefail
W=${1:-/tmp/dev}; PARTS=${2:-$(git rev-parse --show-toplevel)/.whl}
PINS=$(dirname "$0")/bundle-pins.txt
PLAT="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64
 --platform manylinux_2_26_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64
 --platform manylinux_2_35_x86_64 --platform manylinux_2_5_x86_64"
export PIP_CONSTRAINT=
mkdir -p "$W/wheels" "$PARTS"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLAT \
  -d "$W/wheels" -r "$PINS" nvidia-cutlass-dsl-libs-cu13==4.6.0
rm -rf "$W/site"
python3 -m pip install -q --no-deps --no-index --no-compile --target "$W/site" --python-version 3.12 \
  --implementation cp --only-binary=:all: $PLAT $(ls "$W"/wheels/*.whl | grep -v nvidia_cutlass_dsl_libs_cu13)
# the cu13 flavour shares the top-level dir nvidia_cutlass_dsl/ with -base: pip --target refuses, unzip on top
(cd "$W/site" && unzip -q -n "$W"/wheels/nvidia_cutlass_dsl_libs_cu13-*.whl)
# trim: FA2 is never chosen on Hopper (FA3 is), vllm-rs only runs with VLLM_USE_RUST_FRONTEND,
# static libs are never loaded, deep_gemm builds for other Pythons
cd "$W/site"
rm -rf vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so vllm/vllm-rs xgrammar/lib/libxgrammar.a \
  vllm/third_party/deep_gemm/_C.cpython-31[0134]-x86_64-linux-gnu.so
find . -name '*.a' -delete
find . -name __pycache__ -prune -exec rm -rf {} +
du -sh "$W/site"
cd "$W"
rm -f "$PARTS"/part.* "$W/site.tar.xz"
t=$(date +%s)
tar -cf - site | xz -6 -T2 > "$W/site.tar.xz"
echo "xz_s=$(( $(date +%s) - t )) size=$(stat -c %s "$W/site.tar.xz")"
split -b 60817408 -d -a 1 "$W/site.tar.xz" "$PARTS/part."      # 58 MiB parts
sha256sum "$W/site.tar.xz" | awk '{print $1"  site.tar.xz"}' > "$PARTS/site.sha256"
ls -la "$PARTS"
