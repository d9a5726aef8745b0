"""The gpu-blackwell-hopper wheelhouse as the tar stream pack_parts.sh compresses, without keeping it on disk.

    python3 bundle_stream.py DL_DIR PINS TRIM [--sample CHUNKS MIB] > out

Each pinned wheel of DL_DIR is rewritten as tools/device/repack_wheels.py does (ZIP_STORED, TRIM's files dropped
with their RECORD lines), one at a time through a temporary file, and written to stdout as a member of
`wheelhouse/` in a tar stream: the same bytes `tar -cf - -C W wheelhouse` gives for a built wheelhouse (member
order aside). Piped into a compressor and `wc -c`, it measures the packed size and time of the whole bundle on a
machine without disk room for the 9.9 GB wheelhouse. `--sample 12 64` writes 12 chunks of 64 MiB taken at evenly
spaced offsets of the stream instead (the compressor comparison's sample). Stats go to stderr as one JSON line.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("repack_wheels", ROOT / "tools" / "device" / "repack_wheels.py")
repack_wheels = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(repack_wheels)


class _Sampler:
    """A write-only stream that keeps `chunks` windows of `size` bytes at evenly spaced offsets of `total`."""

    def __init__(self, out, total: int, chunks: int, size: int):
        self.out, self.size, self.pos = out, size, 0
        step = max(total // chunks, size)
        self.windows = [(i * step, i * step + size) for i in range(chunks)]

    def write(self, data: bytes) -> int:
        start, end = self.pos, self.pos + len(data)
        for a, b in self.windows:
            lo, hi = max(a, start), min(b, end)
            if lo < hi:
                self.out.write(data[lo - start:hi - start])
        self.pos = end
        return len(data)

    def flush(self) -> None:
        self.out.flush()


def stored_size(whl: Path, trim: tuple[str, ...]) -> int:
    """The repacked wheel's member bytes (what dominates its stored size), without writing it."""
    import zipfile
    with zipfile.ZipFile(whl) as z:
        return sum(i.file_size for i in z.infolist() if not repack_wheels.trimmed(i.filename, trim))


def main(argv: list[str]) -> int:
    dl, pins_file, trim_file = Path(argv[0]), Path(argv[1]), Path(argv[2])
    trim = repack_wheels.trim_patterns(trim_file)
    want = repack_wheels.pins(pins_file)
    wheels = [w for w in sorted(dl.glob("*.whl"))
              if want.get(repack_wheels.norm(w.name.split("-")[0])) == w.name.split("-")[1]]
    out = sys.stdout.buffer
    if "--sample" in argv:
        i = argv.index("--sample")
        chunks, mib = int(argv[i + 1]), int(argv[i + 2])
        total = sum(stored_size(w, trim) for w in wheels)
        out = _Sampler(out, total, chunks, mib << 20)
    t0, raw, dropped = time.time(), 0, 0
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp, tarfile.open(fileobj=out, mode="w|") as tar:
        for whl in wheels:
            dest = Path(tmp) / whl.name
            n, size = repack_wheels.repack(whl, dest, trim)
            dropped += n
            raw += size
            tar.add(dest, arcname=f"wheelhouse/{whl.name}")
            dest.unlink()
    missing = sorted(set(want) - {repack_wheels.norm(w.name.split("-")[0]) for w in wheels})
    print(json.dumps({"wheels": len(wheels), "raw_bytes": raw, "files_trimmed": dropped, "missing": missing,
                      "stream_s": round(time.time() - t0, 1)}), file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
