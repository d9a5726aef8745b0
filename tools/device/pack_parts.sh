#!/bin/bash
# W/wheelhouse -> PARTS/p0/part.0 (+ PARTS/p0/wheelhouse.sha256, PARTS/p0/parts.txt), PARTS/p1/part.1, ...
# (the layout tools/device/run.sh reads: `recv N` carries PARTS/pN and nothing else). Called by build_bundle.sh.
#   usage: tools/device/pack_parts.sh W PARTS      env CALL_BYTES, PART_BYTES, XZ_OPT
# CALL_BYTES: what one transfer to the host may carry, the repository's tracked files included (64 MiB).
# PART_BYTES (default): CALL_BYTES less the tracked tree and 8 MiB of headroom for files committed between
# calls (evidence), in whole MiB.
set -euo pipefail
W=$(realpath -m "$1"); PARTS=$(realpath -m "$2")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CALL_BYTES=${CALL_BYTES:-67108864}
tree=$(cd "$ROOT" && git ls-files -z 2>/dev/null | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
PART_BYTES=${PART_BYTES:-$(( (CALL_BYTES - tree - 8388608) / 1048576 * 1048576 ))}
[ "$PART_BYTES" -gt 0 ] || { echo "error: the tracked tree ($tree bytes) leaves no room in CALL_BYTES=$CALL_BYTES" >&2; exit 2; }
echo "parts of $PART_BYTES bytes (tracked tree $tree bytes, CALL_BYTES $CALL_BYTES)"
[ -d "$W/wheelhouse" ] || { echo "error: no $W/wheelhouse" >&2; exit 2; }
mkdir -p "$PARTS"
rm -rf "$PARTS"/p[0-9]* "$PARTS/parts.txt" "$W/wheelhouse.tar.xz" "$W"/part.[0-9]*
t=$(date +%s)
tar -cf - -C "$W" wheelhouse | xz ${XZ_OPT:--6 -T0} > "$W/wheelhouse.tar.xz"
echo "xz_s=$(( $(date +%s) - t )) size=$(stat -c %s "$W/wheelhouse.tar.xz")"
split -b "$PART_BYTES" -d -a 1 "$W/wheelhouse.tar.xz" "$W/part."
n=0
for f in "$W"/part.[0-9]; do
  i=${f##*.}; mkdir -p "$PARTS/p$i"; mv "$f" "$PARTS/p$i/part.$i"; n=$((n + 1))
done
( cd "$W" && sha256sum wheelhouse.tar.xz ) > "$PARTS/p0/wheelhouse.sha256"
echo "$n" > "$PARTS/p0/parts.txt"            # travels with part 0: the count is known from the first call
ls -la "$PARTS"/p*
