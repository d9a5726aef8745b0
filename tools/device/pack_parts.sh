#!/bin/bash
# W/wheelhouse -> PARTS/p0/part.0 (+ PARTS/p0/wheelhouse.sha256, PARTS/p0/parts.txt), PARTS/p1/part.1, ...
# (the layout tools/device/run.sh reads: `recv N` carries PARTS/pN and nothing else). Called by build_bundle.sh.
#   usage: tools/device/pack_parts.sh W PARTS      env CALL_BYTES, PART_BYTES, XZ_OPT,
#          COMPRESS=xz (default: wheelhouse.tar.xz) or zstd (wheelhouse.tar.zst, ZSTD_OPT); run.sh reads either;
#          TAR_STREAM_CMD: a command printing the tar of wheelhouse/ instead of W/wheelhouse (repack_wheels.py --tar)
#          REPART_FROM: the PARTS of an earlier pack, cut again at today's part size (no compressing again: the
#          joined stream and its sha256 stay the same; the tracked tree changed since)
# CALL_BYTES: what one transfer to the host may carry, the repository's tracked files included (64 MiB).
# PART_BYTES (default): CALL_BYTES less the tracked tree and 8 MiB of headroom for files committed between
# calls (evidence), in whole MiB.
# The compressed stream goes straight into the parts (no whole tarball on disk); its sha256 is taken over the parts.
set -euo pipefail
W=$(realpath -m "$1"); PARTS=$(realpath -m "$2")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CALL_BYTES=${CALL_BYTES:-67108864}
tree=$(cd "$ROOT" && git ls-files -z 2>/dev/null | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
PART_BYTES=${PART_BYTES:-$(( (CALL_BYTES - tree - 8388608) / 1048576 * 1048576 ))}
[ "$PART_BYTES" -gt 0 ] || { echo "error: the tracked tree ($tree bytes) leaves no room in CALL_BYTES=$CALL_BYTES" >&2; exit 2; }
echo "parts of $PART_BYTES bytes (tracked tree $tree bytes, CALL_BYTES $CALL_BYTES)"
if [ -n "${REPART_FROM:-}" ]; then
  FROM=$(realpath -m "$REPART_FROM")
  [ "$FROM" != "$PARTS" ] || { echo "error: REPART_FROM is PARTS itself ($PARTS)" >&2; exit 2; }
  n_from=$(cat "$FROM/p0/parts.txt" 2>/dev/null) || { echo "error: no $FROM/p0/parts.txt" >&2; exit 2; }
  read -r sum_from TARBALL < "$FROM/p0/wheelhouse.sha256"
  case "$TARBALL" in *.zst) COMPRESS=zstd ;; *) COMPRESS=xz ;; esac
else
  [ -n "${TAR_STREAM_CMD:-}" ] || [ -d "$W/wheelhouse" ] || { echo "error: no $W/wheelhouse" >&2; exit 2; }
  COMPRESS=${COMPRESS:-xz}
  case "$COMPRESS" in xz) TARBALL=wheelhouse.tar.xz ;; zstd) TARBALL=wheelhouse.tar.zst ;;
    *) echo "error: COMPRESS=$COMPRESS: xz or zstd" >&2; exit 2 ;; esac
fi
mkdir -p "$W" "$PARTS"
rm -rf "$PARTS"/p[0-9]* "$PARTS/parts.txt" "$W/wheelhouse.tar.xz" "$W/wheelhouse.tar.zst" "$W"/part.[0-9]*
t=$(date +%s)
set -o pipefail
if [ -n "${REPART_FROM:-}" ]; then
  for i in $(seq 0 $((n_from - 1))); do cat "$FROM/p$i/part.$i"; done | split -b "$PART_BYTES" -d -a 2 - "$W/part."
else
  { if [ -n "${TAR_STREAM_CMD:-}" ]; then bash -c "$TAR_STREAM_CMD"; else tar -cf - -C "$W" wheelhouse; fi; } |
    if [ "$COMPRESS" = zstd ]; then zstd -q ${ZSTD_OPT:--10 -T0 --long=31} -c; else xz ${XZ_OPT:--6 -T0}; fi |
    split -b "$PART_BYTES" -d -a 2 - "$W/part."
fi
sum=$(cat "$W"/part.[0-9][0-9] | sha256sum | cut -d' ' -f1)
[ -z "${REPART_FROM:-}" ] || [ "$sum" = "$sum_from" ] || { echo "error: the parts of $FROM join to $sum, not $sum_from" >&2; exit 3; }
echo "${COMPRESS}_s=$(( $(date +%s) - t )) size=$(cat "$W"/part.[0-9][0-9] | wc -c)"
n=0
for f in "$W"/part.[0-9][0-9]; do             # two digits from split, numbered without them: part.0 ... part.54
  i=$((10#${f##*.})); mkdir -p "$PARTS/p$i"; mv "$f" "$PARTS/p$i/part.$i"; n=$((n + 1))
done
echo "$sum  $TARBALL" > "$PARTS/p0/wheelhouse.sha256"      # sha256sum -c's format, for the joined parts
echo "$n" > "$PARTS/p0/parts.txt"            # travels with part 0: the count is known from the first call
# zstd parts bring their decompressor: an offline host may lack zstd (Ubuntu 24.04's GPU image had xz only); this
# machine's zstd links libzstd statically and needs only libc, zlib, liblzma and liblz4 there
[ "$COMPRESS" != zstd ] || cp "$(command -v zstd)" "$PARTS/p0/zstd"
ls -la "$PARTS"/p*
