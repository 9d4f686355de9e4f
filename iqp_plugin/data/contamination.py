"""Mixed-quality ground truth, simulated: a seeded fraction of HQ targets replaced by lower-quality copies.

Restoration datasets in the wild hold GT of varying quality (soft, resampled, compressed photos). The demo
and ``benchmarks/beyond_gt.py`` simulate it on clean images so that the result can be checked against the
pristine originals, which training never sees.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from iqp_plugin.io.images import write_u8

#: Contamination levels of a GT image: the ranges of its steps, applied in this order (each sampled uniformly per
#: image). ``light`` halves each parameter's distance from the identity (sigma 0, factor 1, quality 100).
CONTAMINATION = {
    "standard": {"blur_sigma": (1.0, 2.0), "down_up_factor": (1.0, 2.0), "jpeg_quality": (30, 60)},
    "light": {"blur_sigma": (0.5, 1.0), "down_up_factor": (1.0, 1.5), "jpeg_quality": (65, 80)},
}


def contaminate(img: np.ndarray, rng: np.random.Generator, level: str = "standard") -> tuple[np.ndarray, dict]:
    """A lower-quality copy of an HWC BGR uint8 image: Gaussian blur, down-and-up sampling, JPEG.

    Returns the image (same size, uint8) and the parameters drawn from ``CONTAMINATION[level]``.
    """
    ranges = CONTAMINATION[level]
    sigma = float(rng.uniform(*ranges["blur_sigma"]))
    factor = float(rng.uniform(*ranges["down_up_factor"]))
    quality = int(rng.integers(ranges["jpeg_quality"][0], ranges["jpeg_quality"][1] + 1))
    h, w = img.shape[:2]
    out = cv2.GaussianBlur(img, (0, 0), sigma)
    small = (max(1, round(w / factor)), max(1, round(h / factor)))
    out = cv2.resize(cv2.resize(out, small, interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_CUBIC)
    out = cv2.imdecode(cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_COLOR)
    return out, {"blur_sigma": round(sigma, 4), "down_up_factor": round(factor, 4), "jpeg_quality": quality}


def write_mixed(images: dict[str, np.ndarray], train_dir: Path, pristine_dir: Path, fraction: float,
                seed: int = 0, level: str = "standard") -> dict[str, dict]:
    """Write ``images`` (PNG name -> HWC BGR uint8) twice: all pristine into ``pristine_dir`` (an oracle's GT),
    and into ``train_dir`` with a seeded ``fraction`` of them contaminated at ``level``. Both as PNG, so that the
    file format does not tell the two kinds apart. Returns ``{name: contamination parameters}``."""
    names = sorted(images)
    chosen = set(np.random.default_rng(seed).permutation(len(names))[:round(fraction * len(names))].tolist())
    contaminated = {}
    for i, name in enumerate(names):
        img = images[name]
        write_u8(Path(pristine_dir) / name, img)
        if i in chosen:
            img, contaminated[name] = contaminate(img, np.random.default_rng([seed, i]), level)
        write_u8(Path(train_dir) / name, img)
    return contaminated
