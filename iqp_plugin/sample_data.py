"""Real photos that ship with scikit-image, cut into seeded crops: HQ targets needing no download.

    python -m iqp_plugin.sample_data OUT_DIR [--count 48] [--size 64] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

#: Colour photographs bundled inside the scikit-image wheel (no fetch needed).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "retina", "immunohistochemistry", "hubble_deep_field")


def _photo(name: str) -> np.ndarray:
    if name == "motorcycle_left":
        return skdata.stereo_motorcycle()[0]
    return getattr(skdata, name)()


def write_crops(out_dir: str | Path, count: int = 48, size: int = 64, seed: int = 0,
                photos: Sequence[str] = PHOTOS) -> list[Path]:
    """Write ``count`` random ``size`` x ``size`` PNG crops of the bundled ``photos`` (names from
    :data:`PHOTOS`, taken in turn); existing files are kept."""
    unknown = set(photos) - set(PHOTOS)
    if unknown or not photos:
        raise ValueError(f"photos must name bundled photos ({', '.join(PHOTOS)}), got {list(photos)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = [_photo(name) for name in photos]
    paths = []
    for i in range(count):
        k = i % len(images)
        img = images[k]
        y = rng.integers(0, img.shape[0] - size + 1)
        x = rng.integers(0, img.shape[1] - size + 1)
        path = out / f"{photos[k]}_{i:04d}.png"
        if not path.exists():
            tmp = path.with_suffix(".tmp.png")
            Image.fromarray(np.ascontiguousarray(img[y:y + size, x:x + size, :3])).save(tmp)
            os.replace(tmp, path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--count", type=int, default=48)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(f"wrote {len(write_crops(a.out_dir, a.count, a.size, a.seed))} crops to {a.out_dir}")


if __name__ == "__main__":
    main()
