"""Scripts pushed to the target and run there with the target's Python (they import nothing of ours)."""
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent


def read(name: str) -> bytes:
    return (SCRIPTS / name).read_bytes()
