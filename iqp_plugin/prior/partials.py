"""The files of a scoring run (:func:`iqp_plugin.prior.scoring.score_folders`): the partial CSV of each rank, to
which raw scores are appended as they are computed, so that an interrupted run resumes where it stopped; and the
merge that writes the final CSV and its sidecar from them at the end.

A partial CSV (``scores.csv.rank<R>.partial.csv``) holds imagename, one raw column per metric, the error that
stopped an image (empty when scored), its :func:`file_signature` and its absolute path. The final CSV holds
imagename, the raw columns and the normalised ``score``; its sidecar the normalisation constants, the failures,
and the signature and path of every scored file. Merging keeps the CSV's earlier rows (unless ``replace``), one
row per image name, the latest record of a name winning: an image scored again gets its new scores, or, when it
cannot be scored any more, moves to the sidecar's failures. Every score written is checked to lie in [0, 1].
"""
from __future__ import annotations

import csv
import io
import os
import warnings
from dataclasses import dataclass
from dataclasses import replace as replace_fields
from pathlib import Path

from iqp_plugin.errors import InvalidInputError
from iqp_plugin.io.files import write_atomic
from iqp_plugin.prior.metrics import Normalizer, Prior
from iqp_plugin.prior.score_files import check_scores, number, read_sidecar, sidecar_path


@dataclass(frozen=True)
class Record:
    """What the outputs say of one image: its raw scores, or the error that stopped it, and its file signature."""

    raw: dict[str, float] | None
    error: str = ""
    file: str | None = None
    path: str | None = None  # absolute; None in files written before paths were recorded


def file_signature(path: Path) -> str:
    """Inode, size and modification time of a file: a scored image whose signature changed is scored anew."""
    st = path.stat()
    return f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"


def file_path(path: Path) -> str:
    """The absolute path that records which file an image name stood for."""
    return str(path.resolve())


def partial_path(out: Path, rank: int) -> Path:
    """The partial CSV that ``rank`` appends to while scoring into the CSV ``out``."""
    return out.parent / f"{out.name}.rank{rank}.partial.csv"


def partial_files(out: Path) -> list[Path]:
    """The partial CSVs of every rank beside the CSV ``out``."""
    return sorted(out.parent.glob(f"{out.name}.rank*.partial.csv"))


def _headers(metrics: tuple[str, ...]) -> tuple[list[str], list[str], list[str]]:
    """The header of a final CSV, of a partial CSV, and of a partial CSV written before paths were recorded."""
    partial = ["imagename", *metrics, "error", "file"]
    return ["imagename", *metrics, "score"], [*partial, "path"], partial


def read_records(path: Path, metrics: tuple[str, ...], side: dict | None = None) -> dict[str, Record]:
    """{name: Record} of a final CSV (file signatures and paths from its sidecar ``side``) or of a partial CSV, a
    later row of a name winning; rows cut short by an interruption are skipped."""
    final, partial, legacy = _headers(metrics)
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header, n = next(reader, None), len(metrics)
            if header is None:
                return {}
            if header not in (final, partial, legacy):
                raise InvalidInputError(f"{path} holds scores for other metrics or columns ({', '.join(header)}), "
                                        f"not {', '.join(metrics)}: delete it, write to another output, or pass "
                                        "--replace")
            files, paths = (side or {}).get("files") or {}, (side or {}).get("paths") or {}
            records = {}
            for row in reader:
                if len(row) != len(header):
                    continue  # a row cut short by an interruption
                name = row[0]
                if header == final:
                    file, where, error = files.get(name), paths.get(name), ""
                else:
                    file, where, error = row[n + 2], (row[n + 3] or None) if header == partial else None, row[n + 1]
                raw = None if error else {m: number(v, path, reader.line_num, name, m)
                                          for m, v in zip(metrics, row[1:n + 1], strict=False)}
                records[name] = Record(raw, error, file, where)
    except (UnicodeDecodeError, csv.Error) as err:
        raise InvalidInputError(f"{path} is not a scores CSV ({err}): delete it, write to another output, or pass "
                                "--replace") from None
    return records


def load_records(out: Path, metrics: tuple[str, ...], replace: bool) -> dict[str, Record]:
    """Everything the outputs say of each image name, oldest first and the latest winning: the failures
    and rows of ``out`` and its sidecar (unless ``replace``), then the rows of the partial files. With
    ``replace``, a partial file for other metrics (which no run could resume) is removed."""
    records = {}
    if not replace:
        side = read_sidecar(sidecar_path(out))
        records.update((f["imagename"], Record(None, f["error"], None, f.get("path")))
                       for f in side.get("failed", []))
        if out.exists():
            records.update(read_records(out, metrics, side))
    for path in partial_files(out):
        try:
            records.update(read_records(path, metrics))
        except InvalidInputError:
            if not replace:
                raise
            path.unlink()
    return records


def open_partial(path: Path, metrics: tuple[str, ...]):
    """Open a rank's partial CSV for appending (header on a new file; a cut-off last line is ended; a file
    written before paths were recorded gets the path column)."""
    _, partial, legacy = _headers(metrics)
    if path.exists() and path.stat().st_size:
        read_records(path, metrics)  # checks the header
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if rows[0] == legacy:
            buf = io.StringIO()
            csv.writer(buf).writerows([partial, *[[*r, ""] for r in rows[1:] if len(r) == len(legacy)]])
            write_atomic(path, buf.getvalue())
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\r\n")
        f = open(path, "a", newline="")
    else:
        f = open(path, "w", newline="")
        csv.writer(f).writerow(partial)
    return f


def merge(paths: dict[str, Path], prior: Prior, out: Path, norm: str, replace: bool,
          normalizer: Normalizer | None = None) -> dict:
    """Write the final CSV and sidecar from the earlier rows (unless ``replace``) and all partial files; remove
    the partials. ``paths``: {name: file} of this run's images. The ``score`` column is normalised by
    ``normalizer`` (recorded in the sidecar as ``constants_from``), or by one fitted to the rows (``norm``).
    Returns the rows now in the CSV and the failures among this run's images."""
    records = load_records(out, prior.metrics, replace)
    for name, path in paths.items():
        r = records.setdefault(name, Record(None, "not scored", None, file_path(path)))
        try:
            moved = r.file is not None and r.path != file_path(path) and r.file == file_signature(path)
        except OSError:  # deleted since it was listed
            moved = False
        if moved:  # the same file in a moved folder
            records[name] = replace_fields(r, path=file_path(path))
    scored = {n: r for n, r in sorted(records.items()) if r.raw is not None}
    if not scored:
        name, record = min(records.items())
        raise InvalidInputError(f"none of the {len(records)} images could be scored with {', '.join(prior.metrics)}, "
                                f"e.g. {name} ({record.error})")
    extra = {}
    if normalizer is None:
        normalizer = Normalizer.fit(prior, {m: [r.raw[m] for r in scored.values()] for m in prior.metrics}, norm)
    else:
        extra["constants_from"] = str(Path(normalizer.source).resolve()) if normalizer.source else "the caller"
    scores = {n: normalizer(r.raw) for n, r in scored.items()}
    check_scores(scores, f"the scores computed for {out}")  # never written silently out of range or NaN
    if len(scores) > 1 and len(set(scores.values())) == 1:
        warnings.warn(f"all {len(scores)} images in {out} have the same score {next(iter(scores.values()))}: "
                      "their raw scores do not tell them apart (or all lie beyond the --normalizer range)",
                      stacklevel=2)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["imagename", *prior.metrics, "score"])
    for n, r in scored.items():
        writer.writerow([n, *[r.raw[m] for m in prior.metrics], scores[n]])
    write_atomic(out, buf.getvalue())
    failed = [{"imagename": n, "error": r.error, **({"path": r.path} if r.path else {})}
              for n, r in sorted(records.items()) if r.raw is None]
    normalizer.save(sidecar_path(out), **extra, count=len(scored), failed=failed,
                    files={n: r.file for n, r in scored.items() if r.file},
                    paths={n: r.path for n, r in scored.items() if r.path})
    for path in partial_files(out):
        path.unlink()
    return {"scored": len(scored), "failed": {n: records[n].error for n in paths if records[n].raw is None}}
