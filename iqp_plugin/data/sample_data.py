"""Real photos that ship with scikit-image, cut into seeded crops: HQ targets needing no download.

    python -m iqp_plugin.data.sample_data OUT_DIR [--count 48] [--size 64] [--seed 0] [--min-std 2]

A near-flat crop (luma standard deviation under ``--min-std`` grey levels, e.g. the black border of
``retina``) is drawn again: NR metrics cannot score such a crop (NIQE fails on it). The redraw uses a
generator of its own, so every other crop is the one the plain seeded draw gives.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

from iqp_plugin.errors import InvalidInputError
from iqp_plugin.io.files import atomic_path

#: Luma standard deviation (0-255 grey levels) under which a crop is near-flat and drawn again.
MIN_STD = 2.0
#: Draws of a near-flat crop before giving up.
MAX_REDRAWS = 100
#: Colour photographs bundled inside the scikit-image wheel (no fetch needed).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "retina", "immunohistochemistry",
          "hubble_deep_field")


def _photo(name: str) -> np.ndarray:
    if name == "motorcycle_left":
        return skdata.stereo_motorcycle()[0]
    return getattr(skdata, name)()


def _crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    y = rng.integers(0, img.shape[0] - size + 1)
    x = rng.integers(0, img.shape[1] - size + 1)
    return np.ascontiguousarray(img[y:y + size, x:x + size, :3])


def _flat(crop: np.ndarray, min_std: float) -> bool:
    return float((crop.astype(np.float64) @ [0.299, 0.587, 0.114]).std()) < min_std


def write_crops(out_dir: str | Path, count: int = 48, size: int = 64, seed: int = 0,
                photos: Sequence[str] = PHOTOS, min_std: float = MIN_STD) -> list[Path]:
    """Write ``count`` random ``size`` x ``size`` PNG crops of the bundled ``photos`` (names from
    :data:`PHOTOS`, taken in turn), drawing a near-flat crop (luma std under ``min_std``) again; existing
    files are kept."""
    unknown = set(photos) - set(PHOTOS)
    if unknown or not photos:
        raise InvalidInputError(f"photos must name bundled photos ({', '.join(PHOTOS)}), got {list(photos)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = [_photo(name) for name in photos]
    paths = []
    for i in range(count):
        k = i % len(images)
        crop = _crop(images[k], size, rng)
        redraw = np.random.default_rng([seed, i])
        for _ in range(MAX_REDRAWS):
            if not _flat(crop, min_std):
                break
            crop = _crop(images[k], size, redraw)
        else:
            raise InvalidInputError(f"no {size} px crop of '{photos[k]}' varies by {min_std} grey levels in "
                             f"{MAX_REDRAWS} draws: choose a larger --size or a smaller --min-std")
        path = out / f"{photos[k]}_{i:04d}.png"
        if not path.exists():
            with atomic_path(path) as tmp:
                Image.fromarray(crop).save(tmp, format="PNG")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--count", type=int, default=48)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-std", type=float, default=MIN_STD, help="draw crops flatter than this again (grey levels)")
    a = p.parse_args(argv)
    paths = write_crops(a.out_dir, a.count, a.size, a.seed, min_std=a.min_std)
    print(f"wrote {len(paths)} crops to {a.out_dir}")


if __name__ == "__main__":
    from iqp_plugin.cli import run

    run(main)
