"""EXIF orientation: every reader of the project (restore, compare, score, the datasets) uses an image upright,
as viewers show it, whatever library decodes it.

Decoders are told to ignore the tag (or ignore it anyway: cv2's ``IMREAD_UNCHANGED``, PIL), then
:func:`upright` turns the pixels as :func:`exif_orientation` says, so all readers agree for every format PIL
reads EXIF from (JPEG, PNG, WebP, TIFF). Outputs are written upright and without the tag.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import ExifTags, Image

_PNG = b"\x89PNG\r\n\x1a\n"


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8) of an encoded image; 1 when it has none or it cannot be parsed."""
    if data.startswith(_PNG) and b"eXIf" not in data:
        return 1  # PIL would decode the whole PNG to look for an EXIF chunk after the pixels
    try:
        with Image.open(io.BytesIO(data)) as im:
            value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001  (a broken tag means no orientation; the decoder reports broken pixels)
        return 1
    return value if value in range(1, 9) else 1


def upright(img: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an image array (H, W[, C]) decoded as stored into its upright view (EXIF orientation 1-8)."""
    if orientation in (5, 6, 7, 8):
        img = np.swapaxes(img, 0, 1)  # transpose: 5 is done; 6, 7, 8 are a transpose and a flip
    flip_rows = orientation in (3, 4, 7, 8)
    flip_cols = orientation in (2, 3, 6, 7)
    return np.ascontiguousarray(img[::-1 if flip_rows else 1, ::-1 if flip_cols else 1])
