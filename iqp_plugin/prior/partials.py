"""The files of a scoring run (:func:`iqp_plugin.prior.scoring.score_folders`): the partial CSV of each rank, to
which raw scores are appended as they are computed, so that an interrupted run resumes where it stopped; and the
merge that writes the final CSV and its sidecar from them at the end.

A partial CSV (``scores.csv.rank<R>.partial.csv``) holds imagename, one raw column per metric, the error that
stopped an image (empty when scored) and its :func:`file_signature`. The final CSV holds imagename, the raw
columns and the normalised ``score``; its sidecar the normalisation constants, the failures and the signature of
every scored file. Merging keeps the CSV's earlier rows (unless ``replace``), one row per image name, the latest
record of a name winning: an image scored again gets its new scores, or, when it cannot be scored any more,
moves to the sidecar's failures.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

from iqp_plugin.errors import InvalidInputError
from iqp_plugin.io.files import write_atomic
from iqp_plugin.prior.metrics import Normalizer, Prior
from iqp_plugin.prior.score_files import number, read_sidecar, sidecar_path


@dataclass(frozen=True)
class Record:
    """What the outputs say of one image: its raw scores, or the error that stopped it, and its file signature."""

    raw: dict[str, float] | None
    error: str = ""
    file: str | None = None


def file_signature(path: Path) -> str:
    """Inode, size and modification time of a file: a scored image whose signature changed is scored anew."""
    st = path.stat()
    return f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"


def partial_path(out: Path, rank: int) -> Path:
    """The partial CSV that ``rank`` appends to while scoring into the CSV ``out``."""
    return out.parent / f"{out.name}.rank{rank}.partial.csv"


def partial_files(out: Path) -> list[Path]:
    """The partial CSVs of every rank beside the CSV ``out``."""
    return sorted(out.parent.glob(f"{out.name}.rank*.partial.csv"))


def read_records(path: Path, metrics: tuple[str, ...], files: dict[str, str] | None = None) -> dict[str, Record]:
    """{name: Record} of a final CSV (file signatures from the sidecar's ``files``) or of a partial CSV, a
    later row of a name winning; rows cut short by an interruption are skipped."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header, n = next(reader, None), len(metrics)
        if header is None:
            return {}
        if header not in (["imagename", *metrics, "score"], ["imagename", *metrics, "error", "file"]):
            raise InvalidInputError(f"{path} holds scores for other metrics or columns ({', '.join(header)}), not "
                                    f"{', '.join(metrics)}: delete it, write to another output, or pass --replace")
        partial = header[-1] == "file"
        records = {}
        for row in reader:
            if len(row) != len(header):
                continue  # a row cut short by an interruption
            name = row[0]
            file = row[-1] if partial else (files or {}).get(name)
            if partial and row[n + 1]:
                records[name] = Record(None, row[n + 1], file)
            else:
                raw = {m: number(v, path, reader.line_num, name, m)
                       for m, v in zip(metrics, row[1:n + 1], strict=False)}
                records[name] = Record(raw, "", file)
    return records


def load_records(out: Path, metrics: tuple[str, ...], replace: bool) -> dict[str, Record]:
    """Everything the outputs say of each image name, oldest first and the latest winning: the failures
    and rows of ``out`` and its sidecar (unless ``replace``), then the rows of the partial files."""
    records = {}
    if not replace:
        side = read_sidecar(sidecar_path(out))
        records.update((f["imagename"], Record(None, f["error"])) for f in side.get("failed", []))
        if out.exists():
            records.update(read_records(out, metrics, side.get("files")))
    for path in partial_files(out):
        records.update(read_records(path, metrics))
    return records


def open_partial(path: Path, metrics: tuple[str, ...]):
    """Open a rank's partial CSV for appending (header on a new file; a cut-off last line is ended)."""
    if path.exists() and path.stat().st_size:
        read_records(path, metrics)  # checks the header
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\r\n")
        f = open(path, "a", newline="")
    else:
        f = open(path, "w", newline="")
        csv.writer(f).writerow(["imagename", *metrics, "error", "file"])
    return f


def merge(names: list[str], prior: Prior, out: Path, norm: str, replace: bool,
          normalizer: Normalizer | None = None) -> dict:
    """Write the final CSV and sidecar from the earlier rows (unless ``replace``) and all partial files; remove
    the partials. The ``score`` column is normalised by ``normalizer``, or by one fitted to the rows (``norm``).
    Returns the rows now in the CSV and the failures among the images ``names`` of this run."""
    records = load_records(out, prior.metrics, replace)
    for name in names:
        records.setdefault(name, Record(None, "not scored"))
    scored = {n: r for n, r in sorted(records.items()) if r.raw is not None}
    if not scored:
        name, record = min(records.items())
        raise InvalidInputError(f"none of the {len(records)} images could be scored with {', '.join(prior.metrics)}, "
                                f"e.g. {name} ({record.error})")
    if normalizer is None:
        normalizer = Normalizer.fit(prior, {m: [r.raw[m] for r in scored.values()] for m in prior.metrics}, norm)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["imagename", *prior.metrics, "score"])
    for n, r in scored.items():
        writer.writerow([n, *[r.raw[m] for m in prior.metrics], normalizer(r.raw)])
    write_atomic(out, buf.getvalue())
    normalizer.save(sidecar_path(out), count=len(scored),
                    failed=[{"imagename": n, "error": r.error} for n, r in sorted(records.items()) if r.raw is None],
                    files={n: r.file for n, r in scored.items() if r.file})
    for path in partial_files(out):
        path.unlink()
    return {"scored": len(scored), "failed": {n: records[n].error for n in names if records[n].raw is None}}
