"""BasicSR datasets that return GT quality scores next to the usual ``lq``/``gt`` pair.

``IQPDegradedDataset`` reads HQ images only and degrades them online the way CodeFormer does
(blur, downsample, Gaussian noise, JPEG; the defaults are the IQPIR authors' ranges).
``IQPPairedDataset`` reads LQ/GT folders.
Both add ``score`` (a float32 scalar tensor) when ``score_csv`` is given, taken from the CSV written by
the scoring step: columns ``imagename`` (path relative to ``dataroot_gt``, posix separators) and ``score``.
With scores, ``top_copies: C`` and ``top_percent: P`` make each target scoring in the top P% appear C times
per epoch, every copy with its own score (:meth:`_ScoredFolder.sample_images`): the good targets weigh more
while the condition still sees the whole range of scores.
A GT image the scorer could not score (listed in the failures of the CSV's sidecar: a flat or tiny image
the metric fails on, an unreadable file) is left out, with its pair, and named in a warning: it never
stops training (:func:`scores_for`). Any other image without a score is an error.

Images are read as basicsr does (``cv2.IMREAD_COLOR``): grayscale, RGBA and 16-bit files become 8-bit BGR;
upright, as everywhere in the project (decoded by :func:`iqp_plugin.io.images.decode_image`).
Randomness (crop, flip, degradation) comes from Python's and NumPy's global generators, which BasicSR seeds
per worker; with an integer ``seed`` option, sample ``index`` depends only on ``(seed, epoch, index)``
(``set_epoch`` sets the epoch, 0 by default), and the global generators are left untouched.
"""
from __future__ import annotations

import math
import random
import warnings
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import torch
from basicsr.data import degradations
from basicsr.data.transforms import augment, paired_random_crop
from basicsr.utils import img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from iqp_plugin.errors import InvalidInputError
from iqp_plugin.io.images import decode_image, list_images, pair_key
from iqp_plugin.prior.score_files import check_scores, failed_images, load_scores


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as basicsr does (``cv2.IMREAD_COLOR``: 8-bit BGR, alpha dropped, gray repeated, 16 bits cut
    to 8 as cv2 does for the format): HWC BGR float32 in [0, 1]; upright."""
    return decode_image(path, cv2.IMREAD_COLOR).astype(np.float32) / 255.0


def scores_for(names: list[str], csv_path: str | Path | None) -> dict[str, float] | None:
    """{name: score in [0, 1]} of ``names`` from ``csv_path`` (None without a CSV). Names the scorer could not
    score (the failures in the CSV's sidecar) are left out with a warning; any other name without a score
    is a ValueError."""
    if csv_path is None:
        return None
    table, failed = load_scores(csv_path), failed_images(csv_path)
    missing = [n for n in names if n not in table and n not in failed]
    if missing:
        raise InvalidInputError(f"{len(missing)} of {len(names)} images have no score in {csv_path}, "
                         f"e.g. {', '.join(missing[:5])}. Score the folder again.")
    left_out = [n for n in names if n not in table]
    if left_out:
        more = f" (+{len(left_out) - 5} more)" if len(left_out) > 5 else ""
        warnings.warn(f"{csv_path}: {len(left_out)} of {len(names)} images could not be scored and are left out: "
                      + ", ".join(f"{n} ({failed[n]})" for n in left_out[:5]) + more, stacklevel=2)
    scores = {n: table[n] for n in names if n in table}
    check_scores(scores, f"the scores in {csv_path}")
    return scores


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    shrink = width * height < img.shape[0] * img.shape[1]
    out = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return np.clip(out, 0, 1)


def fit_square(img: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Make a ``size`` x ``size`` image.

    ``mode`` 'resize' resizes the central square (aligned faces); 'random' / 'center' crop a patch,
    after upscaling images whose short side is under ``size``.
    """
    h, w = img.shape[:2]
    if mode == "resize":
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        return _resize(img[top:top + s, left:left + s], size, size)
    if min(h, w) < size:
        f = size / min(h, w)
        img = _resize(img, max(size, round(w * f)), max(size, round(h * f)))
        h, w = img.shape[:2]
    top, left = ((random.randint(0, h - size), random.randint(0, w - size)) if mode == "random"
                 else ((h - size) // 2, (w - size) // 2))
    return img[top:top + size, left:left + size]


@contextmanager
def seeded(*key: int | None):
    """Seed Python's and NumPy's global generators from ``key`` inside the block, restoring them after.

    Does nothing when the first element (the seed) is None.
    """
    if key[0] is None:
        yield
        return
    state = random.getstate(), np.random.get_state()
    np.random.seed([int(k) for k in key])
    random.seed(int(np.random.randint(2**31)))
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])


class _ScoredFolder(data.Dataset):
    """Shared option handling: phase, seed, epoch, image range, scores."""

    def __init__(self, opt: dict):
        super().__init__()
        self.opt = opt  # BasicSR's validation reads dataset.opt['name']
        backend = (opt.get("io_backend") or {}).get("type", "disk")
        if backend != "disk":
            raise InvalidInputError(f"{type(self).__name__} reads image folders only (io_backend type 'disk'), "
                                    f"got {backend!r}")
        self.train = opt.get("phase", "train") == "train"
        self.seed = opt.get("seed", None if self.train else 0)
        self.epoch = 0
        self.gt_root = Path(opt["dataroot_gt"])
        names = list_images(self.gt_root)
        scores = scores_for(names, opt.get("score_csv"))
        self.gt_names = names if scores is None else list(scores)
        self.left_out = sorted(set(names) - set(self.gt_names))  # GT images the scorer could not score
        self.scores = None if scores is None else list(scores.values())
        self.samples = self.sample_images(opt.get("top_copies", 1), opt.get("top_percent"))
        self.scale = int(opt.get("scale", 1))
        self.gt_size = opt.get("gt_size")
        self.use_hflip = opt.get("use_hflip", self.train)
        low, high = opt.get("image_range", [0, 1])
        self.range = float(low), float(high)

    def sample_images(self, copies, percent) -> list[int]:
        """The image index of each sample: every image once, then each image scoring in the top ``percent``%
        (at or above the scores' ``1 - percent / 100`` quantile, the filtering baseline's threshold)
        ``copies - 1`` times more."""
        everything = list(range(len(self.gt_names)))
        if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
            raise InvalidInputError(f"top_copies must be a positive integer (1: every target once), got {copies!r}.")
        if copies == 1:
            return everything
        if self.scores is None:
            raise InvalidInputError(f"top_copies {copies} repeats the top-scored targets: it needs score_csv.")
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 < percent <= 100:
            raise InvalidInputError(f"top_copies {copies} needs top_percent, the share of top-scored targets to "
                                    f"repeat, in (0, 100], e.g. 40; got {percent!r}.")
        threshold = np.quantile(np.asarray(self.scores), 1 - percent / 100)
        return everything + [i for i, s in enumerate(self.scores) if s >= threshold for _ in range(copies - 1)]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that seeded samples depend on."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def _pack(self, image: int, lq: np.ndarray, gt: np.ndarray, lq_path: Path) -> dict:
        low, high = self.range
        lq, gt = (t * (high - low) + low for t in img2tensor([lq, gt], bgr2rgb=True, float32=True))
        out = {"lq": lq, "gt": gt, "lq_path": str(lq_path), "gt_path": str(self.gt_root / self.gt_names[image])}
        if self.scores is not None:
            out["score"] = torch.tensor(self.scores[image], dtype=torch.float32)
        return out


@DATASET_REGISTRY.register()
class IQPDegradedDataset(_ScoredFolder):
    """HQ image folder with online CodeFormer-style degradations (blur, downsample, noise, JPEG).

    Options (defaults in brackets): dataroot_gt; score_csv [None]; top_copies [1], top_percent [None] (with
    scores: each target in the top top_percent% top_copies times per epoch); gt_size [512];
    use_crop [False: resize the central square of each image to gt_size (aligned faces); True: crop a
    gt_size patch, random in training, central otherwise]; scale [1]; lq_downscale [scale > 1: LQ is
    gt_size // scale (SR hosts); False: LQ is resized back to gt_size (face hosts)];
    blur_kernel_size [41]; kernel_list [['iso', 'aniso']]; kernel_prob [[0.5, 0.5]]; blur_sigma [[1, 15]]
    (None to skip); downsample_range [[4, 30]] (None to skip); noise_range [[0, 20]] (0-255 scale, None to skip);
    jpeg_range [[30, 80]] (None to skip); use_hflip [True in training]; image_range [[0, 1]], e.g. [-1, 1];
    phase ['train']; seed [None in training, 0 otherwise]; dataroot_source [None: the LQ is degraded from
    the GT; a folder: from its image of the same name, cropped and flipped as the GT, e.g. the pristine
    capture of a lower-quality target, so that the input does not show the target's quality].

    Returns dict(lq, gt: CHW RGB float tensors in image_range, lq_path (the source image's path, or gt_path), gt_path,
    score: float32 scalar tensor, only with score_csv).
    """

    def __init__(self, opt: dict):
        super().__init__(opt)
        self.gt_size = int(self.gt_size or 512)
        self.lq_downscale = opt.get("lq_downscale", self.scale > 1)
        if self.lq_downscale and self.gt_size % self.scale:
            raise InvalidInputError(f"gt_size {self.gt_size} is not a multiple of scale {self.scale}")
        self.fit_mode = ("random" if self.train else "center") if opt.get("use_crop", False) else "resize"
        self.kernel_list = opt.get("kernel_list", ["iso", "aniso"])
        self.kernel_prob = opt.get("kernel_prob", [0.5, 0.5])
        self.blur_kernel_size = int(opt.get("blur_kernel_size", 41))
        self.blur_sigma = opt.get("blur_sigma", [1, 15])
        self.downsample_range = opt.get("downsample_range", [4, 30])
        self.noise_range = opt.get("noise_range", [0, 20])
        self.jpeg_range = opt.get("jpeg_range", [30, 80])
        self.source_root = Path(opt["dataroot_source"]) if opt.get("dataroot_source") else None
        if self.source_root is not None:
            missing = [n for n in self.gt_names if not (self.source_root / n).is_file()]
            if missing:
                raise FileNotFoundError(f"dataroot_source {self.source_root} lacks {len(missing)} of the GT images "
                                        f"(e.g. {missing[0]}); it needs one image of the same name per GT image.")

    def degrade(self, gt: np.ndarray) -> np.ndarray:
        """Degrade a square HWC BGR [0, 1] image with the current random state; returns the LQ image."""
        lq = gt
        if self.blur_sigma is not None:
            kernel = degradations.random_mixed_kernels(self.kernel_list, self.kernel_prob, self.blur_kernel_size,
                                                       self.blur_sigma, self.blur_sigma, [-math.pi, math.pi])
            lq = cv2.filter2D(lq, -1, kernel)
        if self.downsample_range is not None:
            small = max(1, int(self.gt_size // np.random.uniform(*self.downsample_range)))
            lq = cv2.resize(lq, (small, small), interpolation=cv2.INTER_LINEAR)
        if self.noise_range is not None:
            lq = degradations.random_add_gaussian_noise(lq, self.noise_range)
        if self.jpeg_range is not None:
            # not basicsr's add_jpg_compression: OpenCV 5 rejects its float quality and warns on float pixels
            quality = int(np.random.uniform(*self.jpeg_range))
            _, buf = cv2.imencode(".jpg", (np.clip(lq, 0, 1) * 255).round().astype(np.uint8),
                                  [cv2.IMWRITE_JPEG_QUALITY, quality])
            lq = cv2.imdecode(buf, cv2.IMREAD_COLOR).astype(np.float32) / 255.0
        out = self.gt_size // self.scale if self.lq_downscale else self.gt_size
        return np.clip(cv2.resize(lq, (out, out), interpolation=cv2.INTER_LINEAR), 0, 1)

    def __getitem__(self, index: int) -> dict:
        image = self.samples[index]
        path = self.gt_root / self.gt_names[image]
        source = None if self.source_root is None else self.source_root / self.gt_names[image]
        with seeded(self.seed, self.epoch, index):
            gt = read_image(path)
            if source is not None:  # one crop and flip for both: stack them along the channels
                src = read_image(source)
                if src.shape != gt.shape:
                    raise InvalidInputError(f"{source} is {src.shape[1]}x{src.shape[0]}, "
                                            f"its GT {path} {gt.shape[1]}x{gt.shape[0]}: "
                                            "dataroot_source images must have their GT's size.")
                gt = np.concatenate([gt, src], axis=2)
            gt = augment(np.ascontiguousarray(fit_square(gt, self.gt_size, self.fit_mode)), hflip=self.use_hflip,
                         rotation=False)
            gt, src = (gt[..., :3], gt[..., 3:]) if source is not None else (gt, gt)
            lq = self.degrade(np.ascontiguousarray(src))
        return self._pack(image, lq, np.ascontiguousarray(gt), source or path)


@DATASET_REGISTRY.register()
class IQPPairedDataset(_ScoredFolder):
    """Paired LQ/GT folders, matched by file name stem (a trailing _HR/_LR/_GT/_LQ or x4-style tag is ignored).

    Options (defaults in brackets): dataroot_lq; dataroot_gt; score_csv [None] (keyed by GT name);
    top_copies [1], top_percent [None] (as IQPDegradedDataset's);
    scale [1] (GT size = scale x LQ size); gt_size [None: whole images; in training a paired random
    gt_size crop, otherwise a central one]; use_hflip [True in training]; use_rot [False];
    image_range [[0, 1]]; phase ['train']; seed [None in training, 0 otherwise].

    Returns dict(lq, gt, lq_path, gt_path, score (only with score_csv)).
    """

    def __init__(self, opt: dict):
        super().__init__(opt)
        self.lq_root = Path(opt["dataroot_lq"])
        lq_names = list_images(self.lq_root)
        lq_by_key = {pair_key(n): n for n in lq_names}
        gt_keys = [pair_key(n) for n in self.gt_names]
        if len(lq_by_key) < len(lq_names) or len(set(gt_keys)) < len(gt_keys):
            raise InvalidInputError(f"Two files share a name stem in {self.lq_root} or {self.gt_root}; "
                                    "pairing is ambiguous")
        unmatched_gt = [n for n, k in zip(self.gt_names, gt_keys, strict=False) if k not in lq_by_key]
        paired = {lq_by_key.get(k) for k in gt_keys + [pair_key(n) for n in self.left_out]}
        unmatched_lq = sorted(set(lq_by_key.values()) - paired)
        if unmatched_gt or unmatched_lq:
            raise InvalidInputError(f"Unmatched files between {self.gt_root} and {self.lq_root}: "
                             f"GT without LQ: {unmatched_gt[:5]} ({len(unmatched_gt)}), "
                             f"LQ without GT: {unmatched_lq[:5]} ({len(unmatched_lq)})")
        self.lq_names = [lq_by_key[k] for k in gt_keys]
        self.use_rot = opt.get("use_rot", False)

    def __getitem__(self, index: int) -> dict:
        image = self.samples[index]
        lq_path = self.lq_root / self.lq_names[image]
        gt_path = self.gt_root / self.gt_names[image]
        lq, gt = read_image(lq_path), read_image(gt_path)
        gt = gt[:lq.shape[0] * self.scale, :lq.shape[1] * self.scale]
        if gt.shape[:2] != (lq.shape[0] * self.scale, lq.shape[1] * self.scale):
            raise InvalidInputError(f"GT {gt_path} is smaller than {self.scale} x LQ {lq_path} {lq.shape[:2]}")
        with seeded(self.seed, self.epoch, index):
            if self.train:
                if self.gt_size:
                    gt, lq = paired_random_crop(gt, lq, self.gt_size, self.scale, str(gt_path))
                gt, lq = augment([np.ascontiguousarray(gt), np.ascontiguousarray(lq)],
                                 hflip=self.use_hflip, rotation=self.use_rot)
            elif self.gt_size:
                s = self.gt_size // self.scale
                top, left = (lq.shape[0] - s) // 2, (lq.shape[1] - s) // 2
                lq = lq[top:top + s, left:left + s]
                gt = gt[top * self.scale:(top + s) * self.scale, left * self.scale:(left + s) * self.scale]
        return self._pack(image, np.ascontiguousarray(lq), np.ascontiguousarray(gt), lq_path)
