"""Where things live on the target. Root uses the documents' paths (/opt/vllm, ...);
a non-root user gets a state dir under ~/.cache/phoenix instead of /opt."""
from __future__ import annotations

import posixpath
from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    venv: str
    model_dir: str
    state_dir: str
    log_dir: str

    @property
    def python(self) -> str:
        return posixpath.join(self.venv, "bin", "python")

    @property
    def pip(self) -> list[str]:
        return [self.python, "-m", "pip"]

    @property
    def vllm(self) -> str:
        return posixpath.join(self.venv, "bin", "vllm")

    @classmethod
    def for_target(cls, *, uid: int, home: str, venv: str, model_dir: str) -> Layout:
        if uid == 0:
            return cls(venv=venv, model_dir=model_dir, state_dir="/var/lib/phoenix", log_dir="/var/log/phoenix")
        base = posixpath.join(home, ".cache", "phoenix")

        def remap(path: str) -> str:
            return posixpath.join(base, path.strip("/").removeprefix("opt/")) if path.startswith("/") else path

        return cls(venv=remap(venv), model_dir=remap(model_dir), state_dir=posixpath.join(base, "state"),
                   log_dir=posixpath.join(base, "log"))
