"""Data of the beyond-GT benchmark: a held-out split, and training GT of mixed quality with its bookkeeping.

From any folder of HQ images (central square resized to ``size``), in WORK/data:

* ``heldout/``         the last ``heldout`` images, pristine: evaluation only, never trained on;
* ``train/``           the first ``train`` of the others: a seeded ``fraction`` of them replaced by contaminated
                       copies (``iqp_plugin.contamination``), the rest pristine. Every training except the oracle's reads
                       this folder only;
* ``train_pristine/``  the same training images, all pristine: the oracle's GT, read by nothing else;
* ``manifest.json``    which training image is contaminated and how, and the three file lists;
* ``train_top/``       links to the top-scored training GT (the filtering baseline's), and ``train_o<K>/``,
                       ``train_pristine_o<K>/`` the training GT with each top-scored target K times
                       (``--top-copies K``), made once the scores are known.

All images are written as PNG, so the file format does not tell the two kinds apart.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np

from iqp_plugin.contamination import CONTAMINATION, write_mixed
from iqp_plugin.datasets import fit_square, list_images, read_image
from iqp_plugin.files import write_atomic

SPLITS = ("train", "train_pristine", "heldout")


def _png(path: Path, img: np.ndarray) -> None:
    write_atomic(path, cv2.imencode(".png", img)[1].tobytes())


def prepare(source: str | Path, work: Path, *, train: int, heldout: int, fraction: float, size: int,
            seed: int = 0) -> dict:
    """Write WORK/data (see the module doc) once; a rerun with the same arguments reuses it.

    Returns the manifest: ``{"source", "args", "contamination", "contaminated": {name: params},
    "train": [...], "train_pristine": [...], "heldout": [...]}`` (names are PNG file names).
    """
    source = Path(source)
    root = work / "data"
    args = {"train": train, "heldout": heldout, "fraction": fraction, "size": size, "seed": seed}
    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest["args"] == args and manifest["source"] == str(source.resolve()):
            return manifest
        raise SystemExit(f"{root} was made from {manifest['source']} with {manifest['args']}; "
                         f"use another --out or delete {root}")
    names = list_images(source)
    if len(names) < heldout + 2:
        raise ValueError(f"{source} has {len(names)} images; the benchmark needs at least {heldout + 2} "
                         f"({heldout} held out and 2 to train on)")
    held, pool = names[-heldout:], names[:-heldout][:train]
    png = {n: Path(n).with_suffix(".png").as_posix() for n in names}
    if len(set(png.values())) < len(names):
        raise ValueError(f"two images in {source} share a name stem; rename one")

    def square(name: str) -> np.ndarray:
        return (fit_square(read_image(source / name), size, "resize") * 255).round().astype(np.uint8)

    contaminated = write_mixed({png[n]: square(n) for n in pool}, root / "train", root / "train_pristine",
                               fraction, seed)
    for name in held:
        _png(root / "heldout" / png[name], square(name))
    manifest = {"source": str(source.resolve()), "args": args, "contamination": CONTAMINATION,
                "contaminated": contaminated, **{s: list_images(root / s) for s in SPLITS}}
    write_atomic(manifest_path, json.dumps(manifest, indent=1))
    return json.loads(manifest_path.read_text())  # as a rerun reads it


def top_scored(work: Path, scores: dict[str, float], percent: float) -> tuple[Path, float]:
    """WORK/data/train_top: links to the training GT scoring in the top ``percent``% (the filtering
    baseline's data). Returns the folder and the score threshold."""
    threshold = float(np.quantile(np.array(list(scores.values())), 1 - percent / 100))
    folder = work / "data" / "train_top"
    folder.mkdir(parents=True, exist_ok=True)
    for name, s in scores.items():
        link = folder / name
        if s >= threshold and not link.exists():
            link.symlink_to((work / "data" / "train" / name).resolve())
    return folder, threshold


def oversampled_paths(copies: int, score_csv: str) -> dict[str, str]:
    """Where :func:`oversampled` writes, relative to WORK (``--force_yml`` values): ``{"gt", "source", "score_csv"}``."""
    return {"gt": f"data/train_o{copies}", "source": f"data/train_pristine_o{copies}",
            "score_csv": f"{Path(score_csv).with_suffix('').as_posix()}_o{copies}.csv"}


def oversampled(work: Path, top: list[str], copies: int, score_csv: str) -> dict[str, str]:
    """The training GT with each of the ``top`` targets ``copies`` times (the extra ones as links named
    ``o<i>_<name>``, i = 2..copies), for the plug-in's stages 2-3: WORK/data/train_o<copies>, its pristine
    counterpart train_pristine_o<copies> (the inputs' sources under ``--lq-from pristine``), and the scores CSV
    ``score_csv`` (relative to WORK) with each copy scored as its original. Returns :func:`oversampled_paths`."""
    data = work / "data"
    csv_in = work / score_csv
    paths = oversampled_paths(copies, score_csv)
    extra = {f"o{i}_{name}": name for name in top for i in range(2, copies + 1)}
    for key, origin in (("gt", "train"), ("source", "train_pristine")):
        folder = work / paths[key]
        folder.mkdir(parents=True, exist_ok=True)
        for link, name in {**{n: n for n in list_images(data / origin)}, **extra}.items():
            if not (folder / link).exists():
                (folder / link).symlink_to((data / origin / name).resolve())
    with open(csv_in, newline="") as f:
        header, *rows = list(csv.reader(f))
    column = header.index("imagename")
    by_name = {row[column]: row for row in rows}
    copies_rows = [[link if i == column else value for i, value in enumerate(by_name[name])] for link, name in extra.items()]
    out = io.StringIO()
    csv.writer(out).writerows([header, *rows, *copies_rows])
    write_atomic(work / paths["score_csv"], out.getvalue())
    write_atomic((work / paths["score_csv"]).with_suffix(".json"), csv_in.with_suffix(".json").read_text())
    return paths
