"""Scoring image folders with an NR-IQA prior, the library of ``iqp score`` (:mod:`iqp_plugin.cli.score`):
images decoded as pyiqa decodes them (:func:`load_image`), the raw scores of a batch (:func:`score_batch`), folders
scored into a CSV and its sidecar, sharded over torchrun ranks and resumable (:func:`score_folders`), and the
summary of such a CSV (:func:`summarize`). The partial files that make a run resumable, and their merge with the
CSV's earlier rows, are :mod:`iqp_plugin.prior.partials`.

An image that a metric cannot score (NIQE fails on flat or tiny images) or that cannot be read gets no
row: it is named in a warning and, with the reason, in the sidecar's ``failed`` list; the datasets leave
it out with a warning (:func:`iqp_plugin.data.datasets.scores_for`), so it never stops training. An input
folder without images, or where no image can be scored, is an error. Outputs are checked (not a folder,
a writable place, not an input) before any metric loads; a value in a CSV that is not a finite number is
an error naming the file and line.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from iqp_plugin.errors import InvalidInputError
from iqp_plugin.inference.devices import resolve_device
from iqp_plugin.io.exif import exif_orientation, upright
from iqp_plugin.io.files import atomic_path, check_outputs_apart, check_writable, write_atomic
from iqp_plugin.io.images import find_images
from iqp_plugin.io.locks import exclusive
from iqp_plugin.prior.metrics import DEFAULT_PRIOR, Normalizer, Prior, create_prior
from iqp_plugin.prior.partials import Record, file_path, file_signature, load_records, merge, open_partial, partial_path
from iqp_plugin.prior.score_files import check_scores, number, read_sidecar, sidecar_path

_NOTES = {
    "alpha": "images with an alpha channel: alpha ignored, RGB scored",
    "grayscale": "grayscale images: scored as RGB with three equal channels",
    "16-bit": "16-bit images: scored as float RGB at full precision",
}


@dataclass(frozen=True)
class Item:
    name: str  # path relative to its input root, posix separators
    path: Path


def output_csv(out: str | Path) -> Path:
    """The scores CSV that ``-o out`` names: ``out/scores.csv`` for an existing folder or a path ending in a
    separator, else ``out`` itself (a ``.json`` is refused: that name belongs to the sidecar)."""
    text = str(out)
    path = Path(out)
    if text.endswith(("/", os.sep)) or path.is_dir():
        return path / "scores.csv"
    if sidecar_path(path) == path:
        raise InvalidInputError(f"the output should be a .csv file (the .json beside it is the sidecar), got {path}")
    return path


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


def _dist_init() -> tuple[int, int, bool]:
    """(rank, world size, whether this call started the process group); gloo is enough for a barrier."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
        return dist.get_rank(), dist.get_world_size(), True
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    return 0, 1, False


def _identity(item: Item) -> tuple[str, str]:
    """The signature and absolute path of an item's file, the last columns of its partial row."""
    return file_signature(item.path), file_path(item.path)


def _score_items(items: list[Item], prior: Prior, partial: Path, batch: int, device: torch.device,
                 progress: bool) -> None:
    """Score ``items`` and append their rows to ``partial``, flushing after every batch."""
    modules = prior.create_metrics(device)
    noted: set[str] = set()
    with open_partial(partial, prior.metrics) as f, tqdm(total=len(items), disable=not progress,
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
            for (item, _), raw in zip(pending, results, strict=False):
                bad = raw if isinstance(raw, str) else ", ".join(
                    f"{m} = {v}" for m, v in raw.items() if not math.isfinite(v))
                if bad:
                    warnings.warn(f"{item.path}: {bad}; left out (no row)", stacklevel=1)
                    rows.append([item.name, *[""] * len(prior.metrics), bad, *_identity(item)])
                else:
                    rows.append([item.name, *[raw[m] for m in prior.metrics], "", *_identity(item)])
            write(rows)

        pending = []
        for item in items:
            try:
                x, note = load_image(item.path)
            except Exception as err:  # noqa: BLE001  (any unreadable file is reported and skipped)
                warnings.warn(f"{item.path}: cannot read ({err}); left out (no row)", stacklevel=1)
                write([[item.name, *[""] * len(prior.metrics), f"unreadable: {err}", *_identity(item)]])
                continue
            if note and note not in noted:
                noted.add(note)
                warnings.warn(_NOTES[note], stacklevel=1)
            if pending and (x.shape != pending[0][1].shape or len(pending) >= batch):
                flush(pending)
                pending = []
            pending.append((item, x))
        if pending:
            flush(pending)


def score_folders(roots: list[str | Path], out: str | Path, prior: Prior | None = None, batch: int = 16,
                  device: str = "auto", norm: str | None = None, progress: bool = True,
                  replace: bool = False, normalizer: Normalizer | None = None) -> dict | None:
    """Score the images under ``roots`` into the CSV ``out`` (see :func:`output_csv`), merged with its rows
    unless ``replace``, resuming a partial run (see :mod:`iqp_plugin.prior.partials`). ``norm``: 'rank', 'minmax'
    or 'fixed'; by default the CSV's, else 'rank'. With ``normalizer`` (from another run's sidecar,
    :func:`~iqp_plugin.prior.score_files.load_normalizer`) the scores land on that run's scale and its prior is
    used; merging into a CSV made with one keeps its constants. A ``norm`` or ``normalizer`` that re-normalises
    the CSV's earlier scores another way is warned about, and named in the result ('renormalised').

    One run at a time writes a CSV: a second one is refused while the first holds the lock
    (:mod:`iqp_plugin.io.locks`). Under torchrun each rank scores its shard; rank 0 holds the lock, merges and
    returns {'scored': rows in the CSV, 'failed': {name: error} of this run's images}; the other ranks return None.
    """
    import torch.distributed as dist

    prior = normalizer.prior if normalizer is not None else prior or create_prior(DEFAULT_PRIOR)
    out = output_csv(out)
    check_outputs_apart(roots, files={"-o": out, "sidecar": sidecar_path(out)})
    check_writable(out)
    check_writable(sidecar_path(out), given=out)
    read_sidecar(sidecar_path(out))  # a foreign .json there is refused before any work
    if normalizer is not None and norm is not None and norm != normalizer.mode:
        raise InvalidInputError(f"--norm {norm}, but the --normalizer sidecar {normalizer.source} normalises by "
                                f"{normalizer.mode}: leave --norm out")
    items = [Item(name, path) for name, path in find_images(*roots)]
    torch_device = resolve_device(device)
    out.parent.mkdir(parents=True, exist_ok=True)
    rank, world, owned = _dist_init()
    try:
        with ExitStack() as lock:
            refusal = None
            if rank == 0:
                try:
                    lock.enter_context(exclusive(out, f"-o {out}", "run this again when it has ended (it then "
                                                 "merges), or choose another -o"))
                except InvalidInputError as err:
                    refusal = str(err)
            if world > 1:
                box = [refusal]
                dist.broadcast_object_list(box, src=0)
                refusal = box[0]
            if refusal:
                raise InvalidInputError(refusal)
            records = load_records(out, prior.metrics, replace)
            change = None
            if not replace:
                norm, normalizer, change = _normalisation(out, norm, normalizer)
                _check_names(items, records, out)
            if change and rank == 0:
                warnings.warn(change, stacklevel=2)

            def current(it: Item) -> bool:
                r = records.get(it.name)
                return r is not None and r.raw is not None and r.file == file_signature(it.path)

            todo = [it for it in items[rank::world] if not current(it)]
            partial = partial_path(out, rank)
            if todo:
                _score_items(todo, prior, partial, batch, torch_device, progress and rank == 0)
            if world > 1:
                dist.barrier()
            merged = merge({it.name: it.path for it in items}, prior, out, norm or "rank", replace,
                           normalizer) if rank == 0 else None
            if merged is not None and change:
                merged["renormalised"] = change
            if world > 1:
                dist.barrier()  # leave together: a rank that exits while rank 0 merges can make gloo abort it
            return merged
    finally:
        if owned:
            dist.destroy_process_group()


def _normalisation(out: Path, norm: str | None,
                   normalizer: Normalizer | None) -> tuple[str | None, Normalizer | None, str | None]:
    """(norm, normalizer, change) for merging into ``out``. Without ``--norm`` and ``--normalizer``, the CSV's
    own normalisation (its ``norm``, or the constants it was made with); ``change`` is the warning to give when
    those options re-normalise the CSV's earlier scores another way (else None)."""
    side = read_sidecar(sidecar_path(out))
    if not side or not out.exists():
        return norm, normalizer, None
    fixed = side.get("constants_from")
    made = f"the constants of {fixed} (--norm {side['norm']})" if fixed else f"--norm {side['norm']}"
    keep = f"--normalizer {fixed}" if fixed else f"--norm {side['norm']}"
    if normalizer is not None:
        constants = json.loads(json.dumps(normalizer.to_dict()))
        if {k: side.get(k) for k in constants} == constants:
            return norm, normalizer, None
        new = f"the constants of --normalizer {normalizer.source} (--norm {normalizer.mode})"
    elif norm is None or (norm == side["norm"] and not fixed):
        if fixed:  # made with --normalizer: keep its constants
            normalizer = Normalizer.from_dict(side, sidecar_path(out))
            normalizer.source = fixed
        return side["norm"], normalizer, None
    else:
        new = f"--norm {norm} over all its rows"
    return norm, normalizer, (f"every earlier score in {out} is normalised again: it was made with {made}, this run "
                              f"uses {new} (leave --norm and --normalizer out, or pass {keep}, to keep its scale)")


def _check_names(items: list[Item], records: dict[str, Record], out: Path) -> None:
    """Refuse an image whose name the outputs already give another file (``A/001.jpg`` scored, then
    ``B/001.jpg``): merging would replace one image's score with the other's. A file moved with its folder
    (same signature) is the same image."""
    for it in items:
        r = records.get(it.name)
        if r is not None and r.path and r.path != file_path(it.path) and r.file != file_signature(it.path):
            raise InvalidInputError(f"'{it.name}' names {file_path(it.path)} here but {r.path} in {out} (or in the "
                                    "partial files of a run into it), another image: score the folders into separate "
                                    "CSVs, or pass --replace to keep only this run's images")


def summarize(csv_path: str | Path, top: float = 20.0) -> dict:
    """Statistics per column, histogram PNGs, and the score threshold that keeps the top ``top`` % as HQ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not 0 <= top <= 100:
        raise InvalidInputError(f"--top {top:g} must be a percentage in [0, 100]")
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            rows, fields = list(reader), reader.fieldnames or []
    except (UnicodeDecodeError, csv.Error) as err:
        raise InvalidInputError(f"{csv_path} is not a scores CSV ({err}): pass the CSV that `iqp score` wrote"
                                ) from None
    if "imagename" not in fields or "score" not in fields:
        raise InvalidInputError(f"{csv_path} is not a scores CSV (its columns: {', '.join(fields) or 'none'}; "
                                "it needs imagename and score): pass the CSV that `iqp score` wrote")
    if not rows:
        raise InvalidInputError(f"{csv_path} has no scored images")
    columns = [c for c in fields if c != "imagename"]
    values = {c: np.array([number(r[c] or "", csv_path, i + 2, r["imagename"], c) for i, r in enumerate(rows)])
              for c in columns}
    check_scores({r["imagename"]: v for r, v in zip(rows, values["score"], strict=True)},
                 f"the score column of {csv_path}")
    score = values["score"]
    threshold = float(np.quantile(score, 1 - top / 100))
    order = np.argsort(score, kind="stable")
    summary = {
        "csv": str(csv_path), "count": len(rows), "top_percent": top, "hq_threshold": threshold,
        "hq_count": int((score >= threshold).sum()),
        "stats": {c: dict(zip(("mean", "std", "min", "q25", "median", "q75", "max"),
                              map(float, (v.mean(), v.std(), *np.quantile(v, [0, .25, .5, .75, 1]))), strict=False))
                  for c, v in values.items()},
        "lowest": [rows[i]["imagename"] for i in order[:5]],
        "highest": [rows[i]["imagename"] for i in order[::-1][:5]],
        "histograms": {},
    }
    try:
        side = read_sidecar(sidecar_path(csv_path))
    except InvalidInputError:
        side = {}  # someone else's .json: no failures to list
    if side:
        summary["failed"] = side.get("failed", [])
    for c, v in values.items():
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.hist(v, bins=50, color="tab:blue")
        if c == "score":
            ax.axvline(threshold, color="tab:red", label=f"top {top:g}%: >= {threshold:.3f}")
            ax.legend()
        ax.set(title=f"{csv_path.name}: {c}", xlabel=c, ylabel="images")
        fig.tight_layout()
        png = csv_path.with_name(f"{csv_path.stem}_hist_{c}.png")
        with atomic_path(png) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
        summary["histograms"][c] = str(png)
    write_atomic(csv_path.with_name(f"{csv_path.stem}_summary.json"), json.dumps(summary, indent=2))
    return summary

