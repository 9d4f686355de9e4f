"""Files the project reads and writes: image listings, output checks made before any work, atomic writes.

Readers and interrupted runs never see half a file: every output is written to a temporary file beside it
and swapped in (:func:`atomic_path`). Outputs are checked before a model loads (:func:`check_writable`), so
a wrong or read-only ``-o`` fails at once. Listings skip broken symbolic links, naming them in a warning.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from iqp_plugin.errors import InvalidInputError

#: Suffixes of the image files that every command and dataset reads (any case).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def image_files(root: str | Path) -> list[Path]:
    """The image files under the folder ``root`` (recursive, sorted); broken symbolic links with an image
    suffix are skipped and named in a warning."""
    files, broken = [], []
    for path in sorted(Path(root).rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            if path.is_file():
                files.append(path)
            elif path.is_symlink() and not path.exists():
                broken.append(f"{path} -> {os.readlink(path)}")
    if broken:
        s = "s" if len(broken) > 1 else ""
        more = f" (+{len(broken) - 5} more)" if len(broken) > 5 else ""
        warnings.warn(f"{len(broken)} broken symbolic link{s} skipped: {', '.join(broken[:5])}{more}", stacklevel=2)
    return files


def check_writable(path: str | Path, folder: bool = False, option: str = "-o", given: str | Path | None = None) -> None:
    """ValueError unless a file (or, with ``folder``, files in a folder) can be written at ``path``: it is not
    the other kind, and its nearest existing folder is one this process may write in (missing folders are
    made on writing). ``given`` is what the user passed as ``option`` when ``path`` lies under it."""
    path = Path(path)
    given = path if given is None else Path(given)
    if path.exists() and path.is_dir() != folder:
        want, got = ("folder", "file") if folder else ("file", "folder")
        what = f"{option} {path}" if given == path else f"{option} {given}: {path}"
        raise InvalidInputError(f"{what} is a {got}, not a {want}: choose another {option}")
    where = path if folder else path.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        raise InvalidInputError(f"{option} {given}: {where} is a file, not a folder: choose another {option}")
    if not os.access(where, os.W_OK | os.X_OK):
        raise InvalidInputError(f"{option} {given}: cannot write in {where} (read-only, or no permission): "
                                f"choose another {option}")


def check_outputs_apart(inputs: list[str | Path], files: dict[str, str | Path] | None = None,
                        folders: dict[str, str | Path] | None = None) -> None:
    """Refuse, before any work, an output that would overwrite an input or be read as one by the next run.

    ``inputs``: the files and folders a command reads; ``files``: {what: path} of the output files it writes
    (results, CSVs, sidecars); ``folders``: {what: path} of the folders it writes images into. An output file
    may not be an input file nor one of a folder's inputs' files; an output folder may not be an input folder,
    lie inside one, or hold an input."""
    sources = [Path(p).resolve() for p in inputs]
    for what, path in (files or {}).items():
        out = Path(path).resolve()
        for src in sources:
            if out == src or (src.is_dir() and out.suffix.lower() in IMAGE_SUFFIXES and out.is_relative_to(src)
                              and out.exists()):
                raise InvalidInputError(f"{what} {path} is an input of this command: write it elsewhere")
    for what, path in (folders or {}).items():
        out = Path(path).resolve()
        for src in sources:
            if src.is_relative_to(out):
                raise InvalidInputError(f"{what} {path} holds the input {src}: its outputs could overwrite it; "
                                        "choose a folder outside the inputs")
            if src.is_dir() and out.is_relative_to(src):
                raise InvalidInputError(f"{what} {path} lies inside the input folder {src}: the next run would read "
                                        "its images as inputs; choose a folder outside the inputs")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on a clean exit it replaces ``path`` (``os.replace``),
    on an error it is removed. The parent folder is created. A killed writer leaves only ``.<name>.<pid>.tmp``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` (bytes, or text written as UTF-8 without newline translation) to ``path`` atomically
    (see :func:`atomic_path`). The file gets the usual permissions (umask applied)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
