"""Images in and out of ``iqp restore`` and ``compare``, and the one decoder of image files (also the datasets'):
read, write and list.

Images are read upright (EXIF orientation applied, see :mod:`iqp_plugin.io.exif`) by :func:`decode_image`;
:func:`read_picture` keeps what the file had: alpha (resized to the output), grayscale and 16-bit depth.
Files are written upright, without the tag, and atomically (temporary file + ``os.replace``), so an
interrupted run never leaves half a file. (``iqp score`` decodes with PIL, as pyiqa does: see
:func:`iqp_plugin.prior.scoring.load_image`.)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from iqp_plugin.errors import InvalidInputError
from iqp_plugin.io.exif import exif_orientation, upright
from iqp_plugin.io.files import IMAGE_SUFFIXES, image_files, write_atomic


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
        raise InvalidInputError(f"cannot read image {path}: {err}") from err
    if img is None or img.dtype not in (np.uint8, np.uint16):
        raise InvalidInputError(f"cannot decode image {path} (corrupt, truncated or unsupported)")
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
        alpha = (pic.alpha if pic.alpha.shape == (h, w)
                 else cv2.resize(pic.alpha, (w, h), interpolation=cv2.INTER_LINEAR))
        img = np.dstack([img, np.clip(alpha, 0, 1)])
    deep = pic.bits == 16 and suffix.lower() in (".png", ".tif", ".tiff")
    img = (img * (65535.0 if deep else 255.0)).round().astype(np.uint16 if deep else np.uint8)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(suffix, img, params)
    if not ok:
        raise InvalidInputError(f"cannot encode an image as {suffix}")
    return buf.tobytes()


def write_u8(path: str | Path, img: np.ndarray) -> None:
    """Write an 8-bit HWC BGR array (cv2's order) through :func:`write_picture`, losslessly for PNG."""
    write_picture(path, Picture(cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0))


def write_picture(path: str | Path, pic: Picture) -> None:
    """Encode ``pic`` in the format of ``path``'s suffix and write it atomically."""
    write_atomic(path, encode_picture(pic, Path(path).suffix))


def find_images(*paths: str | Path) -> list[tuple[str, Path]]:
    """The one image lister: ``(name, file)`` pairs, sorted by name, of each given file (named by its file name)
    and of every image under each given folder (recursive, named by the path relative to the folder; broken
    symbolic links are named in a warning). A missing path, a folder without images, or a name that two paths
    give is an error."""
    found: dict[str, Path] = {}
    for root in map(Path, paths):
        if root.is_file():
            items = [(root.name, root)]
        elif root.is_dir():
            items = [(p.relative_to(root).as_posix(), p) for p in image_files(root)]
            if not items:
                raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
        else:
            raise FileNotFoundError(f"input not found: {root}")
        for name, path in items:
            if name in found:
                raise InvalidInputError(f"two inputs give the image name '{name}': {found[name]} and {path}")
            found[name] = path
    return sorted(found.items())


def list_images(folder: str | Path) -> list[str]:
    """The names :func:`find_images` gives the images under ``folder``."""
    return [name for name, _ in find_images(folder)]


def pair_key(name: str) -> str:
    """The one rule that pairs an input with its GT across folders: the relative name, lower-cased, without its
    extension and without a trailing _HR/_LR/_GT/_LQ or x2..x8 tag (Set5, DIV2K names)."""
    stem = name.rsplit(".", 1)[0]
    return re.sub(r"(?i)([_-](hr|lr|gt|lq))?(((?<=\d)|[_-])x[1-8])?$", "", stem).lower()
