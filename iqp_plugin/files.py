"""Atomic file writes: readers and interrupted runs never see half a file."""
from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` (bytes, or text written as UTF-8 without newline translation) to a temporary file
    beside ``path``, then ``os.replace`` it; the parent folder is created. The file gets the usual
    permissions (umask applied)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
