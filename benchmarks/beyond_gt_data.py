"""Data of the beyond-GT benchmark: a held-out split, and training GT of mixed quality with its bookkeeping.

From any folder of HQ images (central square resized to ``size``), in WORK/data:

* ``heldout/``         the last ``heldout`` images, pristine: evaluation only, never trained on;
* ``train/``           the first ``train`` of the others: a seeded ``fraction`` of them replaced by contaminated
                       copies (``iqp_plugin.data.contamination``, at ``level``), the rest pristine. Every training
                       except the oracle's reads this folder only;
* ``train_pristine/``  the same training images, all pristine: the oracle's GT, read by nothing else;
* ``manifest.json``    which training image is contaminated and how, and the three file lists;
* ``train_top/``       links to the top-scored training GT (the filtering baseline's), made once the scores
                       are known;
* ``development/``     links to the pristine copies of the first ``DEVELOPMENT`` contaminated training images: the
                       split on which options are chosen before a held-out run (``--split development``).

All images are written as PNG, so the file format does not tell the two kinds apart.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from iqp_plugin.data.contamination import CONTAMINATION, write_mixed
from iqp_plugin.data.datasets import fit_square, read_image
from iqp_plugin.io.files import write_atomic
from iqp_plugin.io.images import list_images, write_u8

SPLITS = ("train", "train_pristine", "heldout")
#: images in the development split
DEVELOPMENT = 50


def prepare(source: str | Path, work: Path, *, train: int, heldout: int, fraction: float, size: int,
            seed: int = 0, level: str = "standard") -> dict:
    """Write WORK/data (see the module doc) once; a rerun with the same arguments reuses it.

    Returns the manifest: ``{"source", "args", "contamination", "contaminated": {name: params},
    "train": [...], "train_pristine": [...], "heldout": [...]}`` (names are PNG file names).
    """
    source = Path(source)
    root = work / "data"
    args = {"train": train, "heldout": heldout, "fraction": fraction, "size": size, "seed": seed, "level": level}
    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        made = {"level": "standard", **manifest["args"]}  # folders made before the levels were standard
        if made == args and manifest["source"] == str(source.resolve()):
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
                               fraction, seed, level)
    for name in held:
        write_u8(root / "heldout" / png[name], square(name))
    manifest = {"source": str(source.resolve()), "args": args, "contamination": CONTAMINATION[level],
                "contaminated": contaminated, **{s: list_images(root / s) for s in SPLITS}}
    write_atomic(manifest_path, json.dumps(manifest, indent=1))
    return json.loads(manifest_path.read_text())  # as a rerun reads it


def external(source: str | Path, work: Path, size: int) -> Path:
    """WORK/data/eval: every image of ``source`` (any folder of pristine images, none of the training data), its
    central square resized to ``size`` as PNG, for ``beyond_gt.py --eval``. Rewritten when ``source`` changes.
    Returns the folder."""
    source, folder = Path(source).resolve(), work / "data" / "eval"
    names = list_images(source)
    if not names:
        raise SystemExit(f"--eval {source}: no images there (PNG, JPEG, ...); name a folder of pristine images")
    stamp = folder / "source.txt"
    if stamp.exists() and stamp.read_text() == str(source):
        return folder
    for old in folder.glob("*.png"):
        old.unlink()
    png = {n: Path(n).with_suffix(".png").as_posix() for n in names}
    if len(set(png.values())) < len(names):
        raise SystemExit(f"--eval {source}: two images share a name stem; rename one")
    for name in names:
        write_u8(folder / png[name],
                 (fit_square(read_image(source / name), size, "resize") * 255).round().astype(np.uint8))
    write_atomic(stamp, str(source))
    return folder


def development(work: Path, manifest: dict, count: int = DEVELOPMENT) -> Path:
    """WORK/data/development: links to the pristine copies of the first ``count`` contaminated training images
    (manifest order), each degraded once for evaluation. Their contaminated copies were trained on (and, with
    ``--lq-from pristine``, inputs degraded from these very images), so they serve choices between options, never
    the held-out claims. Returns the folder."""
    folder = work / "data" / "development"
    folder.mkdir(parents=True, exist_ok=True)
    for name in list(manifest["contaminated"])[:count]:
        link = folder / name
        if link.is_symlink() and not link.exists():  # a link of a work folder since moved
            link.unlink()
        if not link.exists():
            link.symlink_to(Path("..") / "train_pristine" / name)  # relative: the work folder may move
    return folder


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
