"""Reading and writing the suite's own files: one strict loader for every input, one atomic writer for every output.

Input (config, profiles, the catalog, gate.yaml, deployment.yaml, compliance.json read back): `load_json`,
`load_yaml`, `load_file` refuse a key given twice in one mapping -- json and PyYAML would silently keep the
last one, so a second `"managed": true` after `"managed": false` would change what is protected. The error
is a `DuplicateKey` (a ConfigError: exit 4 in a spec run) naming the key, where it is and both lines:

    config/x.json: duplicate key "managed" in lxc_configs.950 (line 86 and line 93): a key may appear once

Output (reports, ledgers): `write_atomic` / `write_together` write a temp file in the same directory, fsync
it and `os.replace` it over the old one, so a reader sees the old file or the new one, never half of one.
A write that fails (a full disk) raises `WriteFailed` with one line naming the path and the errno, and the
old file is left as it was.

Earlier output read back (the last compliance.json, previous/, a ledger): `load_earlier` returns None for a
missing file and, for a corrupt one, renames it to `<name>.corrupt-<timestamp>` and says so in one line,
so one bad file never breaks the next run.
"""
from __future__ import annotations

import errno as _errno
import json
import json.decoder
import json.scanner
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from provisioners.core.errors import ConfigError

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def json_path(loc) -> str:
    """A location (keys and indexes) as the JSON path an operator reads. Keys that are not plain
    (spaces, dots, control characters, non-ASCII) are shown JSON-quoted, so none hides in a terminal.

    >>> json_path(("lxc_configs", "921", "cores")), json_path(("lxc_configs", "9.21 x", 0))
    ('lxc_configs.921.cores', 'lxc_configs["9.21 x"].0')
    """
    out = ""
    for part in loc:
        part = str(part)
        out += f".{part}" if _PLAIN_KEY.fullmatch(part) else f"[{json.dumps(part)}]"
    return out.lstrip(".")


class DuplicateKey(ConfigError):
    """A mapping names the same key twice (the parsers would keep the last one without a word)."""

    def __init__(self, source: str, key: Any, where: tuple, first: int | None, second: int | None):
        self.key, self.where, self.lines = key, where, (first, second)
        at = f" in {json_path(where)}" if where else " at the top level"
        lines = f" (line {first} and line {second})" if first and second else ""
        super().__init__(f"{source}: duplicate key {json.dumps(str(key))}{at}{lines}: a key may appear once")


# ------------------------------------------------------------------------------------------ JSON
class _Dup(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise _Dup(k)
        out[k] = v
    return out


_KEY = re.compile(r'\s*,?\s*("(?:[^"\\]|\\.)*")\s*:\s*', re.S)


class _Locating(json.JSONDecoder):
    """The pure-Python scanner, watching every key: raises DuplicateKey with both lines and the path.
    Used only after the fast parse found a duplicate (it is slower and recursion-bound)."""

    def __init__(self, source: str):
        super().__init__()
        self.source, self.path = source, []
        self.parse_object, self.parse_array = self._object, self._array
        self.scan_once = json.scanner.py_make_scanner(self)

    def _object(self, s_and_end, strict, scan_once, object_hook, object_pairs_hook, memo=None):
        s, start = s_and_end
        seen: dict[str, int] = {}
        last = [start]

        def value(s: str, idx: int):
            m = _KEY.fullmatch(s, last[0], idx)
            key, line = (json.loads(m[1]), s.count("\n", 0, m.start(1)) + 1) if m else (None, None)
            if m and key in seen:
                raise DuplicateKey(self.source, key, tuple(self.path), seen[key], line)
            if m:
                seen[key] = line
            self.path.append(key)
            try:
                val, end = scan_once(s, idx)
            finally:
                self.path.pop()
            last[0] = end
            return val, end

        return json.decoder.JSONObject(s_and_end, strict, value, object_hook, object_pairs_hook, memo)

    def _array(self, s_and_end, scan_once):
        count = [0]

        def item(s: str, idx: int):
            self.path.append(count[0])
            try:
                return scan_once(s, idx)
            finally:
                self.path.pop()
                count[0] += 1

        return json.decoder.JSONArray(s_and_end, item)


def loads_json(text: str, source: str = "<json>") -> Any:
    """json.loads that refuses duplicate keys (DuplicateKey); syntax errors stay json.JSONDecodeError."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except _Dup as dup:
        key = dup.args[0]
    _Locating(source).decode(text)          # raises DuplicateKey with lines and the path
    raise DuplicateKey(source, key, (), None, None)   # pragma: no cover - the locating parse always finds it


# ------------------------------------------------------------------------------------------ YAML
_MERGE = "tag:yaml.org,2002:merge"


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping key given twice. Keys brought in by a merge (`<<: *base`)
    may be overridden, as YAML intends; two explicit ones in one mapping may not."""

    source = "<yaml>"

    def construct_document(self, node):
        self._check(node, (), set())
        return super().construct_document(node)

    def _check(self, node, path: tuple, seen: set) -> None:
        if id(node) in seen:             # an alias: already checked where its anchor is
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for k, v in node.value:
                if k.tag == _MERGE:
                    self._check(v, path, seen)
                    continue
                key = self.construct_object(k, deep=True) if isinstance(k, yaml.ScalarNode) else None
                try:
                    hash(key)
                except TypeError:
                    key = None
                if key is not None:
                    if key in first:
                        raise DuplicateKey(self.source, key, path, first[key], k.start_mark.line + 1)
                    first[key] = k.start_mark.line + 1
                self._check(v, (*path, key), seen)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                self._check(v, (*path, i), seen)


def loads_yaml(text: str, source: str = "<yaml>") -> Any:
    """yaml.safe_load that refuses duplicate keys (DuplicateKey); syntax errors stay yaml.YAMLError."""
    loader = StrictLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_json(path: str | os.PathLike) -> Any:
    return loads_json(Path(path).read_text(encoding="utf-8"), str(path))


def load_yaml(path: str | os.PathLike) -> Any:
    return loads_yaml(Path(path).read_text(encoding="utf-8"), str(path))


def load_file(path: str | os.PathLike) -> Any:
    """By suffix: .yaml/.yml as YAML, anything else as JSON."""
    return load_yaml(path) if Path(path).suffix in (".yaml", ".yml") else load_json(path)


# ----------------------------------------------------------------------------------------- writes
class WriteFailed(OSError):
    """A report or ledger could not be written; the file that was there is unchanged."""

    def __init__(self, path: str | os.PathLike, exc: OSError):
        self.path = str(path)
        name = _errno.errorcode.get(exc.errno or 0, "")
        super().__init__(exc.errno, f"cannot write {path}: [Errno {exc.errno}{' ' + name if name else ''}] "
                                    f"{exc.strerror or exc}; the file there is unchanged")

    def __str__(self) -> str:
        return self.strerror


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp(path: Path, data: bytes) -> str:
    """data in a fsynced temp file beside `path` (same file system, so os.replace is atomic)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise WriteFailed(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), (path.stat().st_mode & 0o777) if path.exists() else 0o644)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        _unlink(tmp)
        raise WriteFailed(path, exc) from None
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _unlink(p: str) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def _bytes(data: str | bytes) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data


def write_together(files: Mapping[str | os.PathLike, str | bytes]) -> list[Path]:
    """Write several files so that each is whole: every temp file is written and fsynced first, then all
    are moved into place. When one cannot be written (WriteFailed), none is replaced."""
    temps: list[tuple[str, Path]] = []
    try:
        for p, data in files.items():
            temps.append((_temp(Path(p), _bytes(data)), Path(p)))
        for tmp, p in temps:
            try:
                os.replace(tmp, p)
            except OSError as exc:
                raise WriteFailed(p, exc) from None
    finally:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                _unlink(tmp)
    for d in {p.parent for _, p in temps}:
        _fsync_dir(d)
    return [p for _, p in temps]


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write one file atomically: the old content or the new, never a part (WriteFailed on error)."""
    return write_together({path: data})[0]


def write_json(path: str | os.PathLike, obj: Any, **dumps) -> Path:
    return write_atomic(path, json.dumps(obj, **{"indent": 2, **dumps}))


# ------------------------------------------------------------------------------- earlier output
def set_aside(path: str | os.PathLike, why: str, notes: list[str] | None = None) -> Path | None:
    """Rename a corrupt file to <name>.corrupt-<timestamp> and say so in one line (to `notes`, else stderr)."""
    path = Path(path)
    dst = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    n = 1
    while dst.exists():
        dst, n = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{n}"), n + 1
    try:
        os.replace(path, dst)
    except OSError as exc:
        line = f"{path} is corrupt ({why}) and could not be set aside ({exc.strerror}); it is ignored"
        dst = None
    else:
        line = f"{path} is corrupt ({why}); set aside as {dst.name}, and this run goes on without it"
    (notes.append(line) if notes is not None else print(line, file=sys.stderr))
    return dst


def load_earlier(path: str | os.PathLike, notes: list[str] | None = None,
                 valid: Callable[[Any], bool] = lambda d: True) -> Any | None:
    """A file an earlier run wrote (JSON): its data, or None when it is missing or corrupt (then set aside)."""
    path = Path(path)
    try:
        data = load_json(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        line = f"{path}: cannot read ({exc.strerror}); this run goes on without it"
        (notes.append(line) if notes is not None else print(line, file=sys.stderr))
        return None
    except (ValueError, RecursionError) as exc:      # JSONDecodeError, UnicodeDecodeError, DuplicateKey
        why = (f"{exc.msg}: line {exc.lineno} column {exc.colno} (char {exc.pos})" if isinstance(exc, json.JSONDecodeError)
               else str(exc).split(": ", 1)[-1])
        set_aside(path, why, notes)
        return None
    if not valid(data):
        set_aside(path, "not the expected JSON shape", notes)
        return None
    return data
