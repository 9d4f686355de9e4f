"""Images in and out of ``iqp restore`` and ``compare``, and the one decoder of image files (also the datasets'):
read, write and list.

Images are read upright (EXIF orientation applied, see :mod:`iqp_plugin.exif`) by :func:`decode_image`;
:func:`read_picture` keeps what the file had: alpha (resized to the output), grayscale and 16-bit depth.
Files are written upright, without the tag, and atomically (temporary file + ``os.replace``), so an
interrupted run never leaves half a file. (``iqp score`` decodes with PIL, as pyiqa does: see
:func:`iqp_plugin.scoring.load_image`.)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from iqp_plugin.exif import exif_orientation, upright
from iqp_plugin.files import IMAGE_SUFFIXES, image_files, write_atomic


@dataclass
class Picture:
    """An image as RGB float32 HWC in [0, 1] plus what its file had beyond RGB."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None  # H x W float32 in [0, 1]
    gray: bool = False
    bits: int = 8


def decode_image(path: str | Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """The pixels of an image file as ``cv2.imdecode(..., flags)`` gives them (gray, BGR or BGRA; uint8 or
    uint16), upright: the EXIF orientation is applied here, never by cv2. ValueError when the file cannot be
    read or decoded (unreadable, empty, corrupt, truncated, or not 8/16-bit)."""
    try:
        data = Path(path).read_bytes()
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags | cv2.IMREAD_IGNORE_ORIENTATION)
    except (OSError, cv2.error) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err
    if img is None or img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"cannot decode image {path} (corrupt, truncated or unsupported)")
    return upright(img, exif_orientation(data))


def read_picture(path: str | Path) -> Picture:
    """Read any 8/16-bit gray, RGB or RGBA file, upright; ValueError when it cannot be read or decoded
    (unreadable, empty, corrupt, truncated)."""
    img = decode_image(path)
    bits = 16 if img.dtype == np.uint16 else 8
    img = img.astype(np.float32) / (65535.0 if bits == 16 else 255.0)
    gray = img.ndim == 2 or img.shape[2] == 1
    alpha = None
    if gray:
        rgb = np.repeat(img.reshape(*img.shape[:2], 1), 3, axis=2)
    else:
        if img.shape[2] == 4:
            alpha = img[..., 3]
        rgb = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)
    return Picture(np.ascontiguousarray(rgb), alpha, gray, bits)


def encode_picture(pic: Picture, suffix: str) -> bytes:
    """Encode to the format of ``suffix``; the alpha is resized to the RGB size; 16 bits where the format has them."""
    h, w = pic.rgb.shape[:2]
    img = cv2.cvtColor(np.clip(pic.rgb, 0, 1), cv2.COLOR_RGB2GRAY if pic.gray else cv2.COLOR_RGB2BGR)
    if pic.alpha is not None and not pic.gray:
        alpha = pic.alpha if pic.alpha.shape == (h, w) else cv2.resize(pic.alpha, (w, h), interpolation=cv2.INTER_LINEAR)
        img = np.dstack([img, np.clip(alpha, 0, 1)])
    deep = pic.bits == 16 and suffix.lower() in (".png", ".tif", ".tiff")
    img = (img * (65535.0 if deep else 255.0)).round().astype(np.uint16 if deep else np.uint8)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(suffix, img, params)
    if not ok:
        raise ValueError(f"cannot encode an image as {suffix}")
    return buf.tobytes()


def write_picture(path: str | Path, pic: Picture) -> None:
    """Encode ``pic`` in the format of ``path``'s suffix and write it atomically."""
    write_atomic(path, encode_picture(pic, Path(path).suffix))


def find_images(path: str | Path) -> list[tuple[str, Path]]:
    """``(name, file)`` pairs: the file itself, or every image under a folder (recursive, sorted; broken
    symbolic links are named in a warning)."""
    root = Path(path)
    if root.is_file():
        return [(root.name, root)]
    if not root.is_dir():
        raise FileNotFoundError(f"input not found: {root}")
    items = [(p.relative_to(root).as_posix(), p) for p in image_files(root)]
    if not items:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    return items
