"""``iqp score``: score image folders with an NR-IQA prior into a CSV, and summarise such a CSV.

    iqp score -i DIR [-i DIR ...] -o scores.csv [--metrics niqe,piqe] [--weights 1,1] [--batch N]
              [--device auto] [--norm rank|minmax|fixed] [--replace]
    iqp score --summary scores.csv [--top 20]
    torchrun --nproc_per_node N -m iqp_plugin.scoring -i DIR -o scores.csv     (files sharded over ranks;
    torchrun --nproc_per_node N --no-python iqp score -i DIR -o scores.csv       the same)

Raw scores go to one partial CSV per rank as they are computed, so an interrupted run resumes
where it stopped; at the end rank 0 writes ``scores.csv`` (imagename, one raw column per metric,
normalised ``score``) and the sidecar ``scores.json`` (normalisation constants, failures, and the
signature of every scored file) atomically. ``-o`` naming a folder (existing, or ending in ``/``)
means ``FOLDER/scores.csv``.

Scoring into an existing CSV merges: its rows are kept, one row per image name, and the images of
this run are added; an image whose file is unchanged since it was scored (same inode, size and
modification time) is not computed again, a new or changed one is, and its row gets the new scores
(or, when it cannot be scored any more, it moves to the sidecar's failures).
The ``score`` column is normalised over all rows. ``--replace`` ignores the CSV's earlier rows: the
CSV written at the end holds the images of this run (and of the interrupted run it resumes) only.
A ``.json`` at the sidecar's path that is not a sidecar is never overwritten.

An image that a metric cannot score (NIQE fails on flat or tiny images) or that cannot be read gets no
row: it is named in a warning and, with the reason, in the sidecar's ``failed`` list; the datasets leave
it out with a warning (:func:`iqp_plugin.datasets.scores_for`), so it never stops training. An input
folder without images, or where no image can be scored, is an error. Outputs are checked (not a folder,
a writable place) before any metric loads; a value in a CSV that is not a number is an error naming the
file and line.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from iqp_plugin import parsers
from iqp_plugin.cli import writing
from iqp_plugin.devices import resolve_device
from iqp_plugin.exif import exif_orientation, upright
from iqp_plugin.files import IMAGE_SUFFIXES, check_writable, image_files, write_atomic
from iqp_plugin.quality import DEFAULT_PRIOR, Normalizer, Prior, create_prior
from iqp_plugin.score_files import load_normalizer, number, read_sidecar, sidecar_path

_NOTES = {
    "alpha": "images with an alpha channel: alpha ignored, RGB scored",
    "grayscale": "grayscale images: scored as RGB with three equal channels",
    "16-bit": "16-bit images: scored as float RGB at full precision",
}
@dataclass(frozen=True)
class Item:
    name: str  # path relative to its input root, posix separators
    path: Path


@dataclass(frozen=True)
class Record:
    """What the outputs say of one image: its raw scores, or the error that stopped it, and its file signature."""

    raw: dict[str, float] | None
    error: str = ""
    file: str | None = None


def output_csv(out: str | Path) -> Path:
    """The scores CSV that ``-o out`` names: ``out/scores.csv`` for an existing folder or a path ending in a
    separator, else ``out`` itself (a ``.json`` is refused: that name belongs to the sidecar)."""
    text = str(out)
    path = Path(out)
    if text.endswith(("/", os.sep)) or path.is_dir():
        return path / "scores.csv"
    if sidecar_path(path) == path:
        raise ValueError(f"the output should be a .csv file (the .json beside it is the sidecar), got {path}")
    return path


def file_signature(path: Path) -> str:
    """Inode, size and modification time of a file: a scored image whose signature changed is scored anew."""
    st = path.stat()
    return f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"


def list_images(roots: list[str | Path]) -> list[Item]:
    """Image files under the roots, recursively, sorted by name; a root without images, or a name given by
    two roots, is an error."""
    items: dict[str, Item] = {}
    for root in map(Path, roots):
        if not root.is_dir():
            raise FileNotFoundError(f"input folder not found: {root}")
        paths = image_files(root)
        if not paths:
            raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
        for path in paths:
            name = path.relative_to(root).as_posix()
            if name in items:
                raise ValueError(f"two inputs give the image name '{name}': {items[name].path} and {path}")
            items[name] = Item(name, path)
    return [items[k] for k in sorted(items)]


def load_image(path: str | Path) -> tuple[torch.Tensor, str | None]:
    """An image, upright, as a float RGB tensor (3, H, W) in [0,1], and a note on what was converted (or None)."""
    data = Path(path).read_bytes()
    # PIL as in pyiqa: cv2 (images.py) differs by 0 px on 2900 face JPEGs but on all px of CMYK JPEGs and 16-bit RGB
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        mode = im.mode
        if mode in ("I;16", "I;16B", "I;16L", "I"):
            arr, note = np.asarray(im, dtype=np.float32)[..., None].repeat(3, -1) / 65535.0, "16-bit"
        else:
            has_alpha = mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info)
            note = "alpha" if has_alpha else "grayscale" if mode in ("L", "1") else None
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    arr = upright(arr, exif_orientation(data))
    return torch.from_numpy(arr).permute(2, 0, 1).clamp(0, 1), note


def score_batch(modules: dict[str, torch.nn.Module], x: torch.Tensor) -> list[dict[str, float]]:
    """Raw scores of a batch (B, 3, H, W) in [0,1]: one {metric: value} per image."""
    with torch.no_grad():
        columns = {name: m(x).reshape(-1).double().tolist() for name, m in modules.items()}
    return [{name: columns[name][i] for name in modules} for i in range(x.shape[0])]


def _read_records(path: Path, metrics: tuple[str, ...], files: dict[str, str] | None = None) -> dict[str, Record]:
    """{name: Record} of a final CSV (file signatures from the sidecar's ``files``) or of a partial CSV, a
    later row of a name winning; rows cut short by an interruption are skipped."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header, n = next(reader, None), len(metrics)
        if header is None:
            return {}
        if header not in (["imagename", *metrics, "score"], ["imagename", *metrics, "error", "file"]):
            raise ValueError(f"{path} holds scores for other metrics or columns ({', '.join(header)}), not "
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
                raw = {m: number(v, path, reader.line_num, name, m) for m, v in zip(metrics, row[1:n + 1])}
                records[name] = Record(raw, "", file)
    return records


def _records(out: Path, metrics: tuple[str, ...], replace: bool) -> dict[str, Record]:
    """Everything the outputs say of each image name, oldest first and the latest winning: the failures
    and rows of ``out`` and its sidecar (unless ``replace``), then the rows of the partial files."""
    records = {}
    if not replace:
        side = read_sidecar(sidecar_path(out))
        records.update((f["imagename"], Record(None, f["error"])) for f in side.get("failed", []))
        if out.exists():
            records.update(_read_records(out, metrics, side.get("files")))
    for path in _partials(out):
        records.update(_read_records(path, metrics))
    return records


def _partials(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f"{out.name}.rank*.partial.csv"))


def _open_partial(path: Path, metrics: tuple[str, ...]):
    """Open a rank's partial CSV for appending (header on a new file; a cut-off last line is ended)."""
    if path.exists() and path.stat().st_size:
        _read_records(path, metrics)  # checks the header
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\r\n")
        f = open(path, "a", newline="")
    else:
        f = open(path, "w", newline="")
        csv.writer(f).writerow(["imagename", *metrics, "error", "file"])
    return f


def _dist_init() -> tuple[int, int, bool]:
    """(rank, world size, whether this call started the process group); gloo is enough for a barrier."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
        return dist.get_rank(), dist.get_world_size(), True
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    return 0, 1, False


def _score_items(items: list[Item], prior: Prior, partial: Path, batch: int, device: torch.device,
                 progress: bool) -> None:
    """Score ``items`` and append their rows to ``partial``, flushing after every batch."""
    modules = prior.create_metrics(device)
    noted: set[str] = set()
    with _open_partial(partial, prior.metrics) as f, tqdm(total=len(items), disable=not progress,
                                                          desc="scoring", unit="img") as bar:
        writer = csv.writer(f)

        def write(rows):
            writer.writerows(rows)
            f.flush()
            bar.update(len(rows))

        def flush(pending):
            try:
                results = score_batch(modules, torch.stack([x for _, x in pending]).to(device))
            except Exception as err:  # noqa: BLE001  (retry one by one to isolate the image at fault)
                if len(pending) > 1:
                    for one in pending:
                        flush([one])
                    return
                results = [f"metric failed: {err}"]
            rows = []
            for (item, _), raw in zip(pending, results):
                bad = raw if isinstance(raw, str) else ", ".join(
                    f"{m} = {v}" for m, v in raw.items() if not math.isfinite(v))
                if bad:
                    warnings.warn(f"{item.path}: {bad}; left out (no row)")
                    rows.append([item.name, *[""] * len(prior.metrics), bad, file_signature(item.path)])
                else:
                    rows.append([item.name, *[raw[m] for m in prior.metrics], "", file_signature(item.path)])
            write(rows)

        pending = []
        for item in items:
            try:
                x, note = load_image(item.path)
            except Exception as err:  # noqa: BLE001  (any unreadable file is reported and skipped)
                warnings.warn(f"{item.path}: cannot read ({err}); left out (no row)")
                write([[item.name, *[""] * len(prior.metrics), f"unreadable: {err}", file_signature(item.path)]])
                continue
            if note and note not in noted:
                noted.add(note)
                warnings.warn(_NOTES[note])
            if pending and (x.shape != pending[0][1].shape or len(pending) >= batch):
                flush(pending)
                pending = []
            pending.append((item, x))
        if pending:
            flush(pending)


def _merge(items: list[Item], prior: Prior, out: Path, norm: str, replace: bool,
           normalizer: Normalizer | None = None) -> dict:
    """Write the final CSV and sidecar from the earlier rows (unless ``replace``) and all partial files; remove
    the partials. The ``score`` column is normalised by ``normalizer``, or by one fitted to the rows (``norm``).
    Returns the rows now in the CSV and the failures among ``items``."""
    records = _records(out, prior.metrics, replace)
    for it in items:
        records.setdefault(it.name, Record(None, "not scored"))
    scored = {n: r for n, r in sorted(records.items()) if r.raw is not None}
    if not scored:
        name, record = min(records.items())
        raise ValueError(f"none of the {len(records)} images could be scored with {', '.join(prior.metrics)}, "
                         f"e.g. {name} ({record.error})")
    normalizer = normalizer or Normalizer.fit(prior, {m: [r.raw[m] for r in scored.values()] for m in prior.metrics}, norm)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["imagename", *prior.metrics, "score"])
    for n, r in scored.items():
        writer.writerow([n, *[r.raw[m] for m in prior.metrics], normalizer(r.raw)])
    write_atomic(out, buf.getvalue())
    normalizer.save(sidecar_path(out), count=len(scored),
                    failed=[{"imagename": n, "error": r.error} for n, r in sorted(records.items()) if r.raw is None],
                    files={n: r.file for n, r in scored.items() if r.file})
    for path in _partials(out):
        path.unlink()
    return {"scored": len(scored), "failed": {it.name: records[it.name].error for it in items
                                              if records[it.name].raw is None}}


def score_folders(roots: list[str | Path], out: str | Path, prior: Prior | None = None, batch: int = 16,
                  device: str = "auto", norm: str = "rank", progress: bool = True,
                  replace: bool = False, normalizer: Normalizer | None = None) -> dict | None:
    """Score the images under ``roots`` into the CSV ``out`` (see :func:`output_csv`), merged with its rows
    unless ``replace``, resuming a partial run; see the module doc. With ``normalizer`` (from another run's
    sidecar, :func:`load_normalizer`) the scores land on that run's scale and its prior is used.

    Under torchrun each rank scores its shard; rank 0 merges and returns {'scored': rows in the CSV,
    'failed': {name: error} of this run's images}; the other ranks return None.
    """
    import torch.distributed as dist

    prior = normalizer.prior if normalizer is not None else prior or create_prior(DEFAULT_PRIOR)
    out = output_csv(out)
    check_writable(out)
    check_writable(sidecar_path(out), given=out)
    read_sidecar(sidecar_path(out))  # a foreign .json there is refused before any work
    items = list_images(roots)
    out.parent.mkdir(parents=True, exist_ok=True)
    rank, world, owned = _dist_init()
    try:
        records = _records(out, prior.metrics, replace)

        def current(it: Item) -> bool:
            r = records.get(it.name)
            return r is not None and r.raw is not None and r.file == file_signature(it.path)

        todo = [it for it in items[rank::world] if not current(it)]
        partial = out.parent / f"{out.name}.rank{rank}.partial.csv"
        if todo:
            writing(partial)
            _score_items(todo, prior, partial, batch, resolve_device(device), progress and rank == 0)
        if world > 1:
            dist.barrier()
        merged = _merge(items, prior, out, norm, replace, normalizer) if rank == 0 else None
        if world > 1:
            dist.barrier()  # leave together: a rank that exits while rank 0 merges can make gloo abort it
        return merged
    finally:
        if owned:
            dist.destroy_process_group()


def summarize(csv_path: str | Path, top: float = 20.0) -> dict:
    """Statistics per column, histogram PNGs, and the score threshold that keeps the top ``top`` % as HQ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    csv_path = Path(csv_path)
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{csv_path} has no scored images")
    columns = [c for c in rows[0] if c != "imagename"]
    values = {c: np.array([number(r[c], csv_path, i + 2, r["imagename"], c) for i, r in enumerate(rows)])
              for c in columns}
    score = values["score"]
    threshold = float(np.quantile(score, 1 - top / 100))
    order = np.argsort(score, kind="stable")
    summary = {
        "csv": str(csv_path), "count": len(rows), "top_percent": top, "hq_threshold": threshold,
        "hq_count": int((score >= threshold).sum()),
        "stats": {c: dict(zip(("mean", "std", "min", "q25", "median", "q75", "max"),
                              map(float, (v.mean(), v.std(), *np.quantile(v, [0, .25, .5, .75, 1])))))
                  for c, v in values.items()},
        "lowest": [rows[i]["imagename"] for i in order[:5]],
        "highest": [rows[i]["imagename"] for i in order[::-1][:5]],
        "histograms": {},
    }
    sidecar = sidecar_path(csv_path)
    if sidecar.exists():
        summary["failed"] = json.loads(sidecar.read_text()).get("failed", [])
    for c, v in values.items():
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.hist(v, bins=50, color="tab:blue")
        if c == "score":
            ax.axvline(threshold, color="tab:red", label=f"top {top:g}%: >= {threshold:.3f}")
            ax.legend()
        ax.set(title=f"{csv_path.name}: {c}", xlabel=c, ylabel="images")
        fig.tight_layout()
        png = csv_path.with_name(f"{csv_path.stem}_hist_{c}.png")
        fig.savefig(png, dpi=100)
        plt.close(fig)
        summary["histograms"][c] = str(png)
    write_atomic(csv_path.with_name(f"{csv_path.stem}_summary.json"), json.dumps(summary, indent=2))
    return summary


def markdown(summary: dict) -> str:
    """The summary as a markdown table and a few lines of text."""
    keys = ("mean", "std", "min", "q25", "median", "q75", "max")
    lines = ["| column | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for c, s in summary["stats"].items():
        lines.append(f"| {c} | " + " | ".join(f"{s[k]:.4g}" for k in keys) + " |")
    lines += ["", (f"{summary['count']} images; top {summary['top_percent']:g}% (HQ targets): "
                   f"score >= {summary['hq_threshold']:.4f} ({summary['hq_count']} images)"),
              f"lowest: {', '.join(summary['lowest'])}", f"highest: {', '.join(summary['highest'])}"]
    failed = summary.get("failed", [])
    if failed:
        lines.append(f"failed ({len(failed)}): " + ", ".join(f"{f['imagename']} ({f['error']})" for f in failed))
    lines.append("histograms: " + ", ".join(summary["histograms"].values()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = parsers.score()
    args = p.parse_args(argv)
    if args.summary:
        print(markdown(summarize(args.summary, args.top)))
        return
    if not args.input or not args.output:
        p.error("scoring needs -i DIR and -o CSV (or --summary CSV)")
    weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    normalizer = load_normalizer(args.normalizer) if args.normalizer else None
    prior = create_prior(args.metrics, weights)
    if normalizer is not None and (args.metrics != "offline" or weights) and prior != normalizer.prior:
        raise ValueError(f"--metrics/--weights give {dict(zip(prior.metrics, prior.weights))}, but the --normalizer "
                         f"sidecar was made with {dict(zip(normalizer.prior.metrics, normalizer.prior.weights))}: "
                         "leave --metrics out to score with the sidecar's")
    result = score_folders(args.input, args.output, prior, max(1, args.batch), args.device, args.norm,
                           replace=args.replace, normalizer=normalizer)
    if result is not None:
        out = output_csv(args.output)
        print(f"{result['scored']} images scored in {out} (constants in {sidecar_path(out)})")
        if result["failed"]:
            print(f"{len(result['failed'])} could not be scored, left out of the CSV and of training (reasons in "
                  f"{sidecar_path(out)}): " + ", ".join(result["failed"]))


if __name__ == "__main__":
    from iqp_plugin.cli import run

    run(main)
