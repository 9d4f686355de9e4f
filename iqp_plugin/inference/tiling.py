"""Running a wrapper on an image: batches, and tiles for large inputs (with blended overlaps)."""
from __future__ import annotations

import argparse
import math
import warnings

import cv2
import numpy as np
import torch

from iqp_plugin.archs.wrapper import IQPWrapper
from iqp_plugin.errors import InvalidInputError
from iqp_plugin.inference import AUTO_TILE_ABOVE, TILE_OVERLAP


def check_tile_args(args: argparse.Namespace, wrapper: IQPWrapper | None = None) -> None:
    """InvalidInputError for tiling options that cannot work: once before any model loads, and again with the
    ``wrapper`` that will be tiled, before any image, where the tile side is the one :func:`tile_side` gives."""
    if args.tile is not None and args.tile < 0:
        raise InvalidInputError(f"--tile must be >= 0 (0: whole images), got {args.tile}")
    if args.tile_above < 1:
        raise InvalidInputError(f"--tile-above must be a positive pixel count, got {args.tile_above}")
    if wrapper is not None and wrapper.adapter.input_size:
        if args.tile:
            raise InvalidInputError(f"--tile does not apply to {type(wrapper.host).__name__}, "
                                    "which takes whole aligned faces")
        return
    side = args.tile if args.tile is not None else auto_tile_side(args.tile_above, tile_multiple(wrapper))
    check_overlap(side, args.tile_overlap, given=args.tile is not None)


def check_overlap(side: int, overlap: int, given: bool = True) -> None:
    """InvalidInputError unless ``overlap`` fits tiles of ``side`` (0: untiled); ``given``: the side is --tile's,
    else the one --tile-above gives."""
    if side and not 0 <= overlap < side:
        what = "--tile" if given else "the side of the tiles --tile-above gives"
        raise InvalidInputError(f"--tile-overlap must be in [0, {what}) = [0, {side}), got {overlap}")


def tile_multiple(wrapper: IQPWrapper | None) -> int:
    """The multiple that automatic tile sides keep: the host's size multiple and the plug-in's patch (1 without
    a wrapper)."""
    if wrapper is None:
        return 1
    patch = wrapper.plugin.cfg["patch"] if wrapper.plugin is not None else None
    return math.lcm(wrapper.adapter.size_multiple, patch or 1)


def auto_tile_side(above: int, multiple: int = 1) -> int:
    """The side of the tiles for inputs over ``above`` pixels: the largest multiple of ``multiple`` whose square is
    at most ``above`` pixels, at least one ``multiple``."""
    return max(multiple, math.isqrt(above) // multiple * multiple)


def tile_side(wrapper: IQPWrapper, height: int, width: int, tile: int | None = None,
              above: int = AUTO_TILE_ABOVE) -> int:
    """The tile side for a ``height`` x ``width`` input, 0 for the whole image.

    ``tile`` given: that (0: whole). Otherwise inputs of at most ``above`` pixels are whole, larger ones get
    :func:`auto_tile_side` with the :func:`tile_multiple` of the wrapper (so that tiles need no padding inside).
    Hosts that take one fixed size (faces) are never tiled.
    """
    if wrapper.adapter.input_size:
        if tile:
            raise InvalidInputError(f"tiling does not apply to {type(wrapper.host).__name__}, "
                                    "which takes whole aligned faces")
        return 0
    if tile is not None:
        return tile
    if height * width <= above:
        return 0
    return auto_tile_side(above, tile_multiple(wrapper))


def tiled(fn, x: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """Run ``fn`` on ``tile`` x ``tile`` crops of ``x`` (B, C, H, W) and blend them in the output.

    Crops step by ``tile - overlap`` and the last one is aligned to the border, so every crop is full
    size (a side shorter than ``tile`` is taken whole). In the overlaps the crops are cross-faded: along a
    side that borders another crop, the outer ``m = overlap // 4`` pixels (the least context, hence the
    largest error) get weight 0 and the next ``overlap - m`` a linear ramp up to 1; the blend is normalised
    by the summed weights.
    """
    h, w = x.shape[-2:]
    th, tw = min(tile, h), min(tile, w)
    check_overlap(tile, overlap)

    def starts(size: int, t: int) -> list[int]:  # one crop when the side fits in a tile
        return [0] if size <= t else sorted({*range(0, size - t, t - overlap), size - t})

    out = weight = None
    for top in starts(h, th):
        for left in starts(w, tw):
            y = fn(x[..., top:top + th, left:left + tw])
            scale = y.shape[-1] // tw
            if out is None:
                out = y.new_zeros(*y.shape[:2], h * scale, w * scale)
                weight = y.new_zeros(1, 1, h * scale, w * scale)
            ramp_y = _ramp(th * scale, overlap * scale, top > 0, top + th < h, y)
            ramp_x = _ramp(tw * scale, overlap * scale, left > 0, left + tw < w, y)
            m = ramp_y[:, None] * ramp_x[None, :]
            region = (..., slice(top * scale, (top + th) * scale), slice(left * scale, (left + tw) * scale))
            out[region] += y * m
            weight[region] += m
    return out / weight


def _ramp(n: int, overlap: int, before: bool, after: bool, like: torch.Tensor) -> torch.Tensor:
    r = like.new_ones(n)
    if overlap:
        m = overlap // 4
        up = like.new_zeros(overlap)
        up[m:] = torch.arange(1, overlap - m + 1, dtype=like.dtype, device=like.device) / (overlap - m + 1)
        if before:
            r[:overlap] = up
        if after:
            r[n - overlap:] = up.flip(0)
    return r


@torch.no_grad()
def run_batch(wrapper: IQPWrapper, rgb: np.ndarray, score=None, tile: int | None = None,
              overlap: int = TILE_OVERLAP, plugin: bool = True, tile_above: int = AUTO_TILE_ABOVE,
              **host_kwargs) -> np.ndarray:
    """Restore a (B, H, W, 3) RGB [0, 1] batch; returns (B, H', W', 3) RGB [0, 1].

    ``plugin=False`` runs the host alone. Fixed-size hosts (faces) get their size by resizing in and out,
    with a warning. Other hosts restore in overlapping tiles (see :func:`tiled`) of side ``tile`` > 0, or,
    with ``tile`` None, of :func:`tile_side` for inputs over ``tile_above`` pixels; ``tile=0``: whole. Every
    tile is restored at the same ``score``.
    """
    h, w = rgb.shape[1:3]
    tile = tile_side(wrapper, h, w, tile, tile_above)
    size = wrapper.adapter.input_size
    if size and (h, w) != (size, size):
        warnings.warn(f"{type(wrapper.host).__name__} takes aligned {size}x{size} faces: {w}x{h} input "
                      f"resized to {size}x{size} and the output back", stacklevel=2)
        rgb = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_CUBIC) for im in rgb])
    lo, hi = wrapper.adapter.image_range
    device = next(wrapper.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(0, 3, 1, 2))).to(device) * (hi - lo) + lo
    fn = (lambda t: wrapper(t, score, **host_kwargs)) if plugin else (lambda t: wrapper.adapter.run(t, **host_kwargs))
    y = tiled(fn, x, tile, overlap) if tile else fn(x)
    out = ((y.float() - lo) / (hi - lo)).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    if size and (h, w) != (size, size):
        out = np.stack([np.clip(cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA if w < size else cv2.INTER_CUBIC),
                                0, 1) for im in out])
    return out
