"""Comparing restorations, shared by ``iqp compare``, training validation and the benchmarks: full-reference
metrics against a GT (PSNR, SSIM, sharpness ratio), summaries over images, and verdicts from paired per-image
differences."""
from __future__ import annotations

import math

import cv2
import numpy as np
from basicsr.metrics import calculate_psnr, calculate_ssim

#: A verdict is 'same' when the mean paired difference is under this many standard errors (or under
#: SAME_RTOL of the baseline's mean, for differences a single image cannot resolve).
NOISE_SE = 2.0
SAME_RTOL = 1e-4
FULL_REF = {"psnr": False, "ssim": False, "sharpness": False}  # metric -> lower_better (against the GT)


def high_frequency_energy(rgb: np.ndarray) -> float:
    """Mean squared Laplacian of the luma of an HWC RGB image (uint8 or [0, 1] float), on the [0, 1] scale."""
    img = rgb.astype(np.float32) / (255.0 if rgb.dtype == np.uint8 else 1.0)
    luma = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return float(np.mean(cv2.Laplacian(luma, cv2.CV_32F, borderType=cv2.BORDER_REFLECT) ** 2))


def sharpness_ratio(img: np.ndarray, gt: np.ndarray) -> float:
    """High-frequency energy of ``img`` over that of ``gt``: 1 is as sharp as the GT, under 1 softer."""
    return high_frequency_energy(img) / max(high_frequency_energy(gt), 1e-12)


def full_reference(img: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """PSNR, SSIM and sharpness ratio of a uint8 RGB image against its GT."""
    return {"psnr": float(calculate_psnr(img, gt, crop_border=0)),
            "ssim": float(calculate_ssim(img, gt, crop_border=0)), "sharpness": sharpness_ratio(img, gt)}


def summary(values: list[float]) -> dict:
    """Mean and standard error of the finite values, and how many there were."""
    v = np.array([x for x in values if math.isfinite(x)], dtype=np.float64)
    sem = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0
    return {"mean": float(v.mean()) if len(v) else None, "sem": sem, "n": int(len(v))}


def paired(a: list[float], b: list[float], lower_better: bool, rtol: float = SAME_RTOL) -> dict | None:
    """Verdict for system ``a`` against baseline ``b`` from per-image values of the same images (pairs with a
    non-finite value left out): ``a`` and ``b`` means, ``mean`` and ``sem`` of the differences a - b, the
    image count ``n`` and ``verdict``: 'same' when the mean difference is within NOISE_SE standard errors or
    ``rtol`` of the baseline's mean, else 'better' or 'worse' for ``a``. None when no pair is finite."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    finite = np.isfinite(a) & np.isfinite(b)
    if not finite.any():
        return None
    a, b = a[finite], b[finite]
    d = a - b
    mean, base = float(d.mean()), float(b.mean())
    sem = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0
    if abs(mean) <= max(NOISE_SE * sem, rtol * max(abs(base), 1e-8)):
        word = "same"
    else:
        word = "better" if (mean < 0) == lower_better else "worse"
    return {"a": float(a.mean()), "b": base, "mean": mean, "sem": sem, "n": int(len(d)), "verdict": word}
