"""Rewrite downloaded wheels for the device wheelhouse: uncompressed (ZIP_STORED, so xz over the
whole tar compresses them), the files in TRIM dropped together with their RECORD lines.

    python3 tools/device/repack_wheels.py SRC_DIR DEST_DIR PINS_FILE [TRIM_FILE]
    python3 tools/device/repack_wheels.py --tar SRC_DIR PINS_FILE [TRIM_FILE] > wheelhouse.tar

Only wheels named in PINS_FILE are written (one `name==version` a line), so a stale download
never reaches the wheelhouse. TRIM_FILE (one fnmatch pattern a line, `#` comments) replaces TRIM,
the gpu-hopper bundle's list, for another bundle. `--tar` writes the same wheels as a tar stream of
`wheelhouse/` to stdout, one wheel at a time through a temporary file, so a 10 GB wheelhouse never sits on
disk (pack_parts.sh's TAR_STREAM_CMD). Pure standard library.
"""
from __future__ import annotations

import fnmatch
import re
import sys
import zipfile
from pathlib import Path

# never loaded on Hopper with the image's Python 3.12 (tools/device/README.md says why)
TRIM = ("vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so", "vllm/vllm-rs",
        "vllm/third_party/deep_gemm/_C.cpython-310-*.so", "vllm/third_party/deep_gemm/_C.cpython-311-*.so",
        "vllm/third_party/deep_gemm/_C.cpython-313-*.so", "vllm/third_party/deep_gemm/_C.cpython-314-*.so",
        "xgrammar/lib/libxgrammar.a")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[norm(name.split("[", 1)[0])] = version.strip()
    return out


def trimmed(name: str, trim: tuple[str, ...] = TRIM) -> bool:
    return any(fnmatch.fnmatch(name, pat) for pat in trim)


def trim_patterns(path: Path) -> tuple[str, ...]:
    """The patterns of a trim file: one a line, comments and blank lines dropped."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return tuple(line for line in lines if line)


def repack(src: Path, dest: Path, trim: tuple[str, ...] = TRIM) -> tuple[int, int]:
    dropped = 0
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            if trimmed(info.filename, trim):
                dropped += 1
                continue
            data = zin.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = [line for line in data.decode().splitlines() if not trimmed(line.split(",", 1)[0], trim)]
                data = ("\n".join(lines) + "\n").encode()
            out = zipfile.ZipInfo(info.filename, info.date_time)
            out.external_attr = info.external_attr
            out.compress_type = zipfile.ZIP_STORED
            zout.writestr(out, data)
    return dropped, dest.stat().st_size


def tar_stream(src: Path, pin_file: Path, trim: tuple[str, ...], out) -> int:
    """The pinned wheels of `src`, repacked, as members `wheelhouse/<wheel>` of a tar stream on `out`."""
    import tarfile
    import tempfile

    want = pins(pin_file)
    seen, raw = set(), 0
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(fileobj=out, mode="w|") as tar:
        for whl in sorted(src.glob("*.whl")):
            name, version = whl.name.split("-")[:2]
            if want.get(norm(name)) != version:
                continue
            dest = Path(tmp) / whl.name
            dropped, size = repack(whl, dest, trim)
            tar.add(dest, arcname=f"wheelhouse/{whl.name}")
            dest.unlink()
            seen.add(norm(name))
            raw += size
            if dropped:
                print(f"{whl.name}: {dropped} files trimmed, {size / 2**20:.1f} MiB stored", file=sys.stderr)
    missing = sorted(set(want) - seen)
    if missing:
        print(f"error: no downloaded wheel for {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"{len(seen)} wheels, {raw} bytes stored, streamed", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--tar":
        trim = trim_patterns(Path(argv[3])) if len(argv) > 3 and argv[3] else TRIM
        return tar_stream(Path(argv[1]), Path(argv[2]), trim, sys.stdout.buffer)
    src, dest, pin_file = Path(argv[0]), Path(argv[1]), Path(argv[2])
    trim = trim_patterns(Path(argv[3])) if len(argv) > 3 else TRIM
    want = pins(pin_file)
    dest.mkdir(parents=True, exist_ok=True)
    seen = set()
    for whl in sorted(src.glob("*.whl")):
        name, version = whl.name.split("-")[:2]
        if want.get(norm(name)) != version:
            continue
        dropped, size = repack(whl, dest / whl.name, trim)
        seen.add(norm(name))
        if dropped:
            print(f"{whl.name}: {dropped} files trimmed, {size / 2**20:.1f} MiB stored")
    missing = sorted(set(want) - seen)
    if missing:
        print(f"error: no downloaded wheel for {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"{len(seen)} wheels in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
