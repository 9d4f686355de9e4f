"""NIQE: a port of pyiqa 0.1.16's ``create_metric('niqe')`` that imports only torch and numpy, for scoring, and
with a correct gradient for the quality loss.

Scoring: importing pyiqa costs seconds (it pulls in torchvision), so ``iqp score`` uses this module instead. It
computes what pyiqa computes, with pyiqa's float32 steps (Y channel, the half-size bicubic resize) done
the same way and the rest in float64, vectorised over images and 96x96 blocks; ``tests/test_niqe.py``
checks it against pyiqa on real faces. The pristine model is basicsr's ``metrics/niqe_pris_params.npz``
(the numbers :mod:`iqp_plugin.prior.offline` gives pyiqa), read without importing basicsr. Like
pyiqa, it raises an error for an image under 96 px high or wide and for a batch holding a flat image.

Loss (``NIQE(differentiable=True)``): pyiqa picks each AGGD shape ``alpha`` by an argmin over a table, so its
gradient gives the 10 shape features of the 36 none, and the scales and means computed from the shapes only a
part of theirs; descending it raises NIQE after a few steps (``tests/test_niqe.py``). Here ``alpha`` is the
table's inverse interpolated linearly between the two nearest entries, and the rounding of the luma passes the
gradient straight through, as pyiqa's does. The value stays within a few thousandths of pyiqa's.
This module imports nothing from iqp_plugin.
"""
from __future__ import annotations

import functools
import importlib.util
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

BLOCK = 96
#: pyiqa's RGB -> YIQ matrix (only Y is used).
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.5959, -0.2746, -0.3213], [0.2115, -0.5227, 0.3112]]).t()
# Neighbour products of the AGGD features, as the (dy, dx) rolls pyiqa applies inside each block.
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


def pristine_params() -> tuple[torch.Tensor, torch.Tensor]:
    """(mu (36,), cov (36, 36)) of the pristine-image model shipped with basicsr, in float64."""
    spec = importlib.util.find_spec("basicsr")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("NIQE needs basicsr's metrics/niqe_pris_params.npz, and basicsr is not installed")
    with np.load(os.path.join(spec.submodule_search_locations[0], "metrics", "niqe_pris_params.npz")) as params:
        return (torch.from_numpy(params["mu_pris_param"].ravel().astype(np.float64)),
                torch.from_numpy(params["cov_pris_param"].astype(np.float64)))


@functools.lru_cache(maxsize=1)
def _aggd_tables() -> tuple[torch.Tensor, ...]:
    """pyiqa's AGGD shape grid (float32 steps in float64): ratio r(alpha) (increasing), alpha, and per alpha
    the factors sqrt(G(1/a)/G(3/a)) (beta from std) and G(2/a)/G(1/a) (the mean of a product)."""
    gam = torch.arange(0.2, 10 + 0.001, 0.001, dtype=torch.float32).to(torch.float64)
    r_gam = (2 * torch.lgamma(2.0 / gam) - (torch.lgamma(1.0 / gam) + torch.lgamma(3.0 / gam))).exp()
    beta = (torch.lgamma(1 / gam) - torch.lgamma(3 / gam)).exp().sqrt()
    mean = (torch.lgamma(2 / gam) - torch.lgamma(1 / gam)).exp()
    return r_gam, gam, beta, mean


@functools.lru_cache(maxsize=1)
def _gauss_taps() -> list[list[float]]:
    """MATLAB's fspecial('gaussian', 7, 7/6) rounded to float32 as pyiqa does, as 7 rows of 7 floats."""
    sigma = 7.0 / 6
    y, x = np.ogrid[-3.0:4.0, -3.0:4.0]
    h = np.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    h[h < np.finfo(h.dtype).eps * h.max()] = 0
    h /= h.sum()
    return h.astype(np.float32).astype(np.float64).tolist()


@functools.lru_cache(maxsize=16)
def _half_weights(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """pyiqa's MATLAB bicubic antialiased weights (float32, (10, size / 2)) for halving an even length ``size``,
    and the source index (10, size / 2) of each tap after MATLAB's symmetric padding."""
    out, taps, scale = math.ceil(size * 0.5), 10, 0.5
    pos = (torch.linspace(0, out - 1, steps=out, dtype=torch.float32) + 0.5) / scale - 0.5
    base = pos.floor() - (taps // 2) + 1
    dist = (pos - base) - torch.arange(taps, dtype=torch.float32).view(-1, 1)
    ax = (dist * scale).abs()  # the cubic kernel (a = -0.5), stretched by 1 / scale
    ax2 = ax * ax
    ax3 = ax * ax2
    weight = (1.5 * ax3 - 2.5 * ax2 + 1) * ax.le(1).float() \
        + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * (ax.gt(1) & ax.le(2)).float()
    weight /= weight.sum(dim=0, keepdim=True)
    pad_pre = max(-int(base.min()), 0)
    j = base.long() + pad_pre + torch.arange(taps).view(-1, 1)  # index into the padded line
    src = torch.where(j < pad_pre, pad_pre - 1 - j, j - pad_pre)
    src = torch.where(src >= size, 2 * size - 1 - src, src)
    return weight, src


def _half(img: torch.Tensor) -> torch.Tensor:
    """pyiqa's ``imresize(img / 255, scale=0.5) * 255`` of (B, H, W) float64, computed in float32 as pyiqa does
    (same taps, same products, same sums over the same layout)."""
    x = (img / 255.0).float()
    b, h, w = x.shape
    wt, src = (t.to(x.device) for t in _half_weights(h))
    x = (x.index_select(1, src.flatten()).view(b, *src.shape, w) * wt.view(1, *wt.shape, 1)).sum(dim=1)
    wt, src = (t.to(x.device) for t in _half_weights(w))
    x = x.transpose(1, 2).index_select(1, src.flatten()).view(b, *src.shape, -1).transpose(2, 3).contiguous()
    return (x * wt.view(1, wt.shape[0], 1, wt.shape[1])).sum(dim=1).double() * 255.0


def _normalize(img: torch.Tensor) -> torch.Tensor:
    """MSCN coefficients of (B, H, W) float64: Gaussian local mean and std, replicate padding. The 7x7 filter
    runs as 49 shifted multiply-adds in the order of MATLAB's (and pyiqa's) convolution, many times faster
    than a float64 conv2d on CPU; at full scale (integer pixels) every sum is exact in float64 anyway."""
    h, w = img.shape[-2:]
    x = F.pad(torch.stack([img, img ** 2]), (3, 3, 3, 3), mode="replicate")
    taps = _gauss_taps()
    if img.requires_grad:  # the same filter as a convolution (``out=`` below has no gradient)
        kernel = torch.tensor(taps, dtype=img.dtype, device=img.device).view(1, 1, 7, 7)
        mu, var = F.conv2d(x.flatten(0, 1).unsqueeze(1), kernel).view(x.shape[0], *img.shape)
        sigma = torch.sqrt((var - mu ** 2).abs() + torch.finfo(torch.float64).eps)
        return (img - mu) / (sigma + 1)
    acc = x[..., :h, :w] * taps[0][0]
    term = torch.empty_like(acc)
    for i in range(7):
        for j in range(7):
            if i or j:
                acc += torch.mul(x[..., i:i + h, j:j + w], taps[i][j], out=term)
    mu, var = acc
    sigma = torch.sqrt((var - mu ** 2).abs() + torch.finfo(torch.float64).eps)
    return (img - mu) / (sigma + 1)


def _block_stats(mscn: torch.Tensor, size: int) -> torch.Tensor:
    """Per block and field (the MSCN map, then its 4 neighbour products, rolled within the block as pyiqa does):
    count < 0, count > 0, sum of squares < 0, sum of squares > 0, mean |v|, mean v^2; as (B, blocks, 5, 6).
    One field at a time: temporaries of a few MB are many times slower (fresh pages from the allocator)."""
    b, h, w = mscn.shape
    blocks = mscn.view(b, h // size, size, w // size, size).transpose(2, 3).reshape(-1, size, size)
    n = size * size
    stats = []
    for shift in (None,) + _SHIFTS:
        field = (blocks if shift is None else blocks * torch.roll(blocks, shift, dims=(1, 2))).view(-1, n)
        left = field.clamp(max=0)
        right = field - left
        sign = field.sign()
        diff, total = sign.sum(-1), (sign * sign).sum(-1)  # count > 0 minus count < 0, and their sum
        sq_l, sq_r = (left * left).sum(-1), (right * right).sum(-1)
        stats.append(torch.stack([(total - diff) / 2, (total + diff) / 2, sq_l, sq_r,
                                  (right.sum(-1) - left.sum(-1)) / n, (sq_l + sq_r) / n], -1))
    return torch.stack(stats, 1).view(b, -1, 5, 6)


def _features(stats: torch.Tensor, differentiable: bool = False) -> torch.Tensor:
    """pyiqa's 18 NIQE features of each block and scale from :func:`_block_stats`; (..., 5, 6) -> (..., 18).
    ``differentiable``: each shape ``alpha`` interpolated between the table's two nearest entries, instead of
    the nearest one (whose gradient is zero)."""
    count_l, count_r, sq_l, sq_r, mean_abs, mean_sq = stats.unbind(-1)
    std_l, std_r = torch.sqrt(sq_l / count_l), torch.sqrt(sq_r / count_r)
    g = std_l / std_r
    rhat = mean_abs.pow(2) / mean_sq
    rhatnorm = (rhat * (g.pow(3) + 1) * (g + 1)) / (g.pow(2) + 1).pow(2)
    r_gam, gam, beta_of, mean_of = (t.to(stats.device) for t in _aggd_tables())
    # argmin |r_gam - rhatnorm| over the increasing grid, first index on ties, 0 when rhatnorm is not finite
    hi = torch.searchsorted(r_gam, rhatnorm.contiguous()).clamp(1, len(r_gam) - 1)
    lo = hi - 1
    if differentiable:
        t = ((rhatnorm - r_gam[lo]) / (r_gam[hi] - r_gam[lo])).clamp(0, 1)
        alpha = torch.where(rhatnorm.isfinite(), gam[lo] + t * (gam[hi] - gam[lo]), gam[0])
        beta = (torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)).exp().sqrt()
        beta_l, beta_r = std_l * beta, std_r * beta
        mean = (beta_r - beta_l) * (torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha)).exp()
    else:
        idx = torch.where((rhatnorm - r_gam[lo]).abs() <= (r_gam[hi] - rhatnorm).abs(), lo, hi)
        idx = torch.where(rhatnorm.isfinite(), idx, 0)
        alpha, beta_l, beta_r = gam[idx], std_l * beta_of[idx], std_r * beta_of[idx]
        mean = (beta_r - beta_l) * mean_of[idx]
    first = torch.stack([alpha[..., 0], (beta_l[..., 0] + beta_r[..., 0]) / 2], -1)
    rest = torch.stack([alpha[..., 1:], mean[..., 1:], beta_l[..., 1:], beta_r[..., 1:]], -1).flatten(-2)
    return torch.cat([first, rest], -1)


def y_channel(x: torch.Tensor) -> torch.Tensor:
    """pyiqa's rounded 0..255 luma of (B, 3, H, W) RGB in [0, 1] (YIQ's Y, computed in x's dtype), or x * 255
    rounded for (B, 1, H, W); as (B, H, W). The rounding passes the gradient straight through (pyiqa's
    ``diff_round``)."""
    if x.shape[1] == 3:
        y = torch.matmul(x.permute(0, 2, 3, 1), _YIQ.to(x)).permute(0, 3, 1, 2)[:, 0] * 255
    elif x.shape[1] == 1:
        y = x[:, 0] * 255
    else:
        raise ValueError(f"NIQE takes (B, 3, H, W) RGB or (B, 1, H, W) gray images, got shape {tuple(x.shape)}")
    return y - y.detach() + y.round()


def niqe(x: torch.Tensor, mu_pris: torch.Tensor, cov_pris: torch.Tensor, differentiable: bool = False) -> torch.Tensor:
    """NIQE of (B, 3, H, W) RGB (or (B, 1, H, W) gray) in [0, 1] against a pristine model; (B,) float64.
    ``differentiable``: interpolated AGGD shapes (see the module docstring), for a loss."""
    if x.ndim != 4:
        raise ValueError(f"NIQE takes a batch (B, C, H, W), got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h < BLOCK or w < BLOCK:
        raise ValueError(f"NIQE needs images of at least {BLOCK}x{BLOCK} pixels, got {h}x{w}")
    img = y_channel(x[..., :h // BLOCK * BLOCK, :w // BLOCK * BLOCK]).double()  # pyiqa crops after y_channel
    stats1 = _block_stats(_normalize(img), BLOCK)
    stats2 = _block_stats(_normalize(_half(img)), BLOCK // 2)
    feats = _features(torch.stack([stats1, stats2], 2), differentiable).flatten(2)  # (B, blocks, 36)
    nan = feats.isnan()
    mu = torch.where(nan, 0, feats).sum(1) / (~nan).sum(1, dtype=torch.float32)
    valid = ~nan.any(-1, keepdim=True)  # the covariance uses the blocks with no NaN feature
    n = valid.sum(1, dtype=torch.float64)
    if (n == 0).any():
        bad = (n == 0).flatten().nonzero().flatten().tolist()
        raise ValueError(f"NIQE is undefined for images {bad} of the batch: every {BLOCK}x{BLOCK} block has "
                         "a feature that is NaN (a flat image)")
    centred = torch.where(valid, feats - torch.where(valid, feats, 0).sum(1, keepdim=True) / n.unsqueeze(1), 0)
    cov = centred.transpose(1, 2) @ centred / (n - (n > 1).double()).unsqueeze(-1)
    inv = torch.linalg.pinv((cov_pris.to(cov) + cov) / 2, hermitian=True)
    diff = (mu_pris.to(mu) - mu).unsqueeze(1)
    return torch.sqrt((diff @ inv @ diff.transpose(1, 2)).flatten())


class NIQE(torch.nn.Module):
    """pyiqa's ``create_metric('niqe')`` (lower is better): forward((B, 3, H, W) RGB in [0, 1]) -> (B,) float64.
    ``differentiable=True`` for a loss: a gradient that lowers NIQE, at a value within a few thousandths of pyiqa's."""

    lower_better = True

    def __init__(self, differentiable: bool = False) -> None:
        super().__init__()
        self.differentiable = differentiable
        mu, cov = pristine_params()
        self.register_buffer("mu_pris", mu, persistent=False)
        self.register_buffer("cov_pris", cov, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return niqe(x, self.mu_pris, self.cov_pris, self.differentiable)
