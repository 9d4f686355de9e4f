"""Shared inference pieces of ``iqp restore`` and ``iqp compare``: loading a wrapper, image I/O, tiling.

A wrapper comes from either

* ``--config wrapper.yml``: a file with a ``network_g: {type: IQPWrapper, ...}`` block (as the training
  configs) or a bare IQPWrapper option dict; an optional top-level ``plugin_checkpoint: FILE``; or
* ``--host FILE [--plugin F]``: a host checkpoint alone, its architecture and options detected by spandrel
  (``host: auto``, see :mod:`iqp_plugin.wrapper`); no YAML needed;
* ``--host TYPE [--host-opt JSON] --host-checkpoint F [--plugin F]``; with ``--plugin`` alone the host
  is the one recorded in the plug-in checkpoint.

A plug-in file is a training checkpoint (``net_g_*.pth``): ``params_ema`` is loaded when present, else
``params``; its ``plugin_opt`` builds the plug-in when the config has no ``plugin`` block. It records the
SHA-256 of the host file it was trained with: another host file is an error (a plug-in fits only its host),
or a warning with ``--allow-host-mismatch`` (``load_wrapper(..., allow_host_mismatch=True)``).

Images are read upright (EXIF orientation applied, see :mod:`iqp_plugin.exif`) and keep what the file had:
alpha (resized to the output), grayscale and 16-bit depth. Files are written upright, without the tag, and
atomically (temporary file + ``os.replace``), so an interrupted run never leaves half a file.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from iqp_plugin.checkpoint import file_sha256, read_checkpoint
from iqp_plugin.exif import exif_orientation, upright
from iqp_plugin.files import IMAGE_SUFFIXES, image_files, write_atomic
from iqp_plugin.options import read_yaml
from iqp_plugin.parsers import AUTO_TILE_ABOVE, TILE_OVERLAP
from iqp_plugin.registry import check_options
from iqp_plugin.wrapper import IQPWrapper

# ---------------------------------------------------------------- model loading

def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but no CUDA device is available")
    return torch.device(name)


def wrapper_options(config: str) -> tuple[dict, str | None]:
    """IQPWrapper keyword arguments and the plug-in checkpoint named by a wrapper YAML."""
    opt = read_yaml(config, "Config")
    plugin_file = opt.pop("plugin_checkpoint", None)
    net = dict(opt.get("network_g", opt))
    kind = net.pop("type", "IQPWrapper")
    if kind != "IQPWrapper" or "host" not in net:
        raise ValueError(f"{config}: needs network_g: {{type: IQPWrapper, host: {{...}}}} or a bare IQPWrapper "
                         f"dict with a 'host' entry (got type {kind!r}); for a bare host use --host/--host-checkpoint")
    check_options(IQPWrapper, net, config)
    return net, plugin_file


def load_wrapper(net: dict, plugin_file: str | None = None, device: str | torch.device = "cpu",
                 allow_host_mismatch: bool = False) -> IQPWrapper:
    """Build an IQPWrapper from its options, load the plug-in file (if any) and put it in eval mode; a missing
    host checkpoint file is an error before anything is read, and so is a plug-in trained on other host weights
    (a warning with ``allow_host_mismatch``)."""
    net = dict(net)
    host_file = net.get("host_checkpoint")
    if host_file and not os.path.isfile(host_file):
        raise FileNotFoundError(f"host checkpoint not found: {host_file}. Point host_checkpoint in the config, or "
                                "--host / --host-checkpoint, at the host weights")
    if net.get("plugin") is not None and not plugin_file:
        raise ValueError("the config builds a plug-in but names no trained one: an untrained plug-in reproduces "
                         "the host. Add plugin_checkpoint: FILE to the config or pass --plugin FILE "
                         "(or set plugin: null for the host alone)")
    state = None
    if plugin_file:
        ckpt = read_checkpoint(plugin_file)
        state = ckpt.get("params_ema") or ckpt.get("params")
        if not isinstance(state, dict):
            raise ValueError(f"{plugin_file} is not a plug-in checkpoint: it has no 'params_ema' or 'params' "
                             f"(keys: {sorted(ckpt)[:10]})")
        if net.get("plugin") is None:
            net["plugin"] = ckpt.get("plugin_opt") or {}
        _check_host_file(ckpt.get("host") or {}, host_file, plugin_file, allow_host_mismatch)
    try:
        wrapper = IQPWrapper(**net)
    except TypeError as err:
        raise ValueError(str(err)) from err
    if state is not None:
        try:
            wrapper.load_plugin_state_dict(state)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[:4]
            raise ValueError(f"{plugin_file} does not fit the plug-in built from {net['plugin']}: "
                             + " ".join(first)) from err
    if wrapper.plugin is not None:
        wrapper.plugin.cache_condition = True  # weights are fixed from here on
    return wrapper.to(device).eval()


def _check_host_file(trained: dict, host_file: str | None, plugin_file: str, allow: bool) -> None:
    """ValueError (a warning when ``allow``) when the host file is not the one the plug-in was trained with."""
    sha = trained.get("sha256")
    found = file_sha256(host_file) if host_file else None
    if sha and found != sha:
        loads = f"{host_file} (sha256 {found[:12]})" if found else "no weights"
        message = (f"{plugin_file} was trained on host weights {trained.get('checkpoint')} (sha256 {sha[:12]}), but "
                   f"the host loads {loads}, and a plug-in fits only the host it was trained on")
        if not allow:
            raise ValueError(f"{message}: load that host file, or pass --allow-host-mismatch "
                             "(allow_host_mismatch=True) to run it anyway")
        warnings.warn(f"{message}: results may be poor (--allow-host-mismatch)")


def host_kwargs(wrapper: IQPWrapper, **given) -> dict:
    """The host arguments given on the command line (None: not given), each checked against those its adapter
    declares (``HostAdapter.host_args``)."""
    kwargs = {k: v for k, v in given.items() if v is not None}
    for key in kwargs:
        if key not in wrapper.adapter.host_args:
            takes = ", ".join(f"--{k} ({what})" for k, what in wrapper.adapter.host_args.items()) or "no host option"
            raise ValueError(f"--{key} is not an option of this host, {type(wrapper.host).__name__}; it takes {takes}")
    return kwargs


def load_from_args(args: argparse.Namespace) -> IQPWrapper:
    """The wrapper that :func:`iqp_plugin.parsers.add_model_args` options describe, on the chosen device."""
    device = resolve_device(args.device)
    allow = args.allow_host_mismatch
    if args.config:
        if args.host:
            raise ValueError("give either --config or --host, not both")
        net, plugin_file = wrapper_options(args.config)
        return load_wrapper(net, args.plugin or plugin_file, device, allow)
    if args.host and (os.path.isfile(args.host) or not args.host.isidentifier()):  # a file, not an arch type
        if args.host_opt:
            raise ValueError("--host-opt goes with --host TYPE: the options of a --host checkpoint are detected")
        if args.host_checkpoint:
            raise ValueError("give the host checkpoint once: --host FILE, or --host TYPE --host-checkpoint FILE")
        net = {"host": "auto", "host_checkpoint": args.host}
    elif args.host:
        try:
            host_opt = json.loads(args.host_opt or "{}")
        except json.JSONDecodeError as err:
            raise ValueError(f"--host-opt is not valid JSON: {err}") from err
        if not isinstance(host_opt, dict):
            raise ValueError("--host-opt must be a JSON object")
        net = {"host": {**host_opt, "type": args.host}, "host_checkpoint": args.host_checkpoint}
    elif args.plugin:
        host = read_checkpoint(args.plugin).get("host") or {}
        if not host.get("opt"):
            raise ValueError(f"{args.plugin} records no host: give --host FILE, or --host TYPE --host-checkpoint F")
        net = {"host": host["opt"], "host_checkpoint": args.host_checkpoint or host.get("checkpoint")}
    else:
        raise ValueError("choose the model with --config FILE, --host FILE [--plugin F] or "
                         "--host TYPE --host-checkpoint F [--plugin F]")
    return load_wrapper(net, args.plugin, device, allow)


# ---------------------------------------------------------------- images
@dataclass
class Picture:
    """An image as RGB float32 HWC in [0, 1] plus what its file had beyond RGB."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None  # H x W float32 in [0, 1]
    gray: bool = False
    bits: int = 8


def read_picture(path: str | Path) -> Picture:
    """Read any 8/16-bit gray, RGB or RGBA file, upright; ValueError when it cannot be read or decoded
    (unreadable, empty, corrupt, truncated)."""
    try:
        data = Path(path).read_bytes()
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)  # ignores the EXIF orientation
    except (OSError, cv2.error) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err
    if img is None or img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"cannot decode image {path} (corrupt, truncated or unsupported)")
    img = upright(img, exif_orientation(data))
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


# ---------------------------------------------------------------- running the model
def check_tile_args(args: argparse.Namespace) -> None:
    """ValueError for tiling options that cannot work (before any model is loaded)."""
    if args.tile is not None and args.tile < 0:
        raise ValueError(f"--tile must be >= 0 (0: whole images), got {args.tile}")
    if args.tile_above < 1:
        raise ValueError(f"--tile-above must be a positive pixel count, got {args.tile_above}")
    side = args.tile if args.tile is not None else math.isqrt(args.tile_above)
    if side and not 0 <= args.tile_overlap < side:
        what = "--tile" if args.tile is not None else "the side of the tiles --tile-above gives"
        raise ValueError(f"--tile-overlap must be in [0, {what}) = [0, {side}), got {args.tile_overlap}")


def tile_side(wrapper: IQPWrapper, height: int, width: int, tile: int | None = None,
              above: int = AUTO_TILE_ABOVE) -> int:
    """The tile side for a ``height`` x ``width`` input, 0 for the whole image.

    ``tile`` given: that (0: whole). Otherwise inputs of at most ``above`` pixels are whole, larger ones get
    the largest side whose square is at most ``above`` pixels and a multiple of the host's size multiple and
    the plug-in's patch (so that tiles need no padding inside), at least one multiple. Hosts that take one
    fixed size (faces) are never tiled.
    """
    if wrapper.adapter.input_size:
        if tile:
            raise ValueError(f"tiling does not apply to {type(wrapper.host).__name__}, which takes whole aligned faces")
        return 0
    if tile is not None:
        return tile
    if height * width <= above:
        return 0
    patch = wrapper.plugin.cfg["patch"] if wrapper.plugin is not None else None
    multiple = math.lcm(wrapper.adapter.size_multiple, patch or 1)
    return max(multiple, math.isqrt(above) // multiple * multiple)


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
    if overlap < 0 or overlap >= tile:
        raise ValueError(f"--tile-overlap must be in [0, tile) = [0, {tile}), got {overlap}")

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
                      f"resized to {size}x{size} and the output back")
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
