"""The IQP plug-in: a quality-conditioned Transformer over a dual-branch codebook, injected at a host's
bottleneck through a zero-initialised output layer.

Notation: ``e`` = host encoder features and ``z`` = the host decoder's input at the bottleneck
(both (B, C, H, W), see ``iqp_plugin.adapters.base.Bottleneck``); ``s`` in [0, 1]^M = quality score(s);
``P`` = adaptive average pooling to the token grid (gh, gw) (a fixed ``grid`` or ``H/patch``);
``U`` = a bilinear resize from the code grid back to (H, W) (the identity when the sizes agree).
``codes``: ``token`` chooses one code per token; ``pixel`` one per bottleneck pixel, for full-resolution hosts
whose detail lives in the pixels (needs ``patch`` = p): the Transformer still runs on the token grid, and a pixel
head turns each final token into features for its p x p pixels. The codebooks then hold per-pixel features
(``Q`` below is the identity) and the correction needs no ``U``.

1. Tokens:     ``t = Linear(LN(P(e))) + pos``; ``pos`` is learned on a 16x16 grid and resampled.
2. Condition:  ``adaln`` (DiT adaLN-zero): ``c = MLP(Fourier(s))``; in every block
               ``x += g1 * Attn(LN(x) * (1 + a1) + b1)`` and ``x += g2 * MLP(LN(x) * (1 + a2) + b2)``
               with ``(a1, b1, g1, a2, b2, g2) = Linear(SiLU(c))``, zero-initialised.
               ``adaln_single`` (PixArt-alpha): the same blocks, but one ``Linear(SiLU(c))`` shared by all
               of them plus a learned (6, dim) table per block, instead of a 6 * dim^2 layer per block.
3. Indices:    ``dense``: ``l_c = W_c h`` and ``l_h = W_h h`` from the final tokens ``h`` (a K-way layer per
               codebook). With ``codes: pixel``, ``h`` is per pixel:
               ``h_px = LN(u + MLP(LN(u)))``, ``u = S(W_s h) + W_e LN(e)``, ``S`` the pixel shuffle of each
               token's ``p * p * dim`` outputs to its p x p pixels: the token's context plus the pixel's own
               feature. ``similarity``: ``l_k = -||W h - C_k||^2 / (tau * v)``, the distance of a
               predicted code feature to every code, ``v`` the codebook's mean squared spread and ``tau``
               learned: no parameter per code, so the codebook size costs nothing.
4. Codes:      ``q = C_c[argmax l_c] + w * C_h[argmax l_h]`` (``w`` = ``hq_weight``); when training,
               straight-through over the code choice: ``hard + soft - stopgrad(soft)``,
               ``soft = softmax(l) @ C``. At inference ``code_temperature: T`` > 0 decodes
               ``softmax(l / T) @ C`` instead of ``C[argmax l]``.
5. Injection:  ``z' = z + U(W_o (q - Q(z)))``, ``Q`` = ``P`` (``codes: token``) or the identity
               (``pixel``), with ``W_o`` a k x k convolution (``inject_kernel: k``: each correction also sees
               its neighbours' codes) whose weight and bias start at zero. Hence a fresh plug-in gives
               ``z' = z`` and the wrapper reproduces the host exactly; as ``W_o`` learns, ``z'`` moves from the
               host's own bottleneck towards the decoded codes. For hosts that keep full-resolution features
               (SwinIR) the correction is added to, never substituted for, the host's detail.

Its options, their presets and their checks are in :mod:`iqp_plugin.archs.recipes`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import Attention, DropPath, Mlp, resample_abs_pos_embed, trunc_normal_
from torch import nn

from iqp_plugin.archs.codebook import DualCodebook
from iqp_plugin.archs.recipes import plugin_options
from iqp_plugin.errors import InvalidInputError


@dataclass
class PluginOutput:
    """What one plug-in pass produced; ``z`` goes to the host decoder, the rest feeds the losses."""

    z: torch.Tensor              # (B, C, H, W) new decoder input
    logits_common: torch.Tensor  # (B, N, K_c)
    logits_hq: torch.Tensor      # (B, N, K_h)
    codes: torch.Tensor          # (B, N, C) decoded q
    grid: tuple[int, int]        # the code grid (gh, gw) (``codes: pixel``: (H, W)), N = gh * gw


@dataclass
class Condition:
    """What the score(s) contribute, computed once per forward (and reused at inference, see
    :meth:`IQPPlugin.condition_for`): per block ``(shift1, 1 + scale1, gate1, shift2, 1 + scale2, gate2)`` and,
    for the output norm, ``(shift, 1 + scale)``, each (B, 1, dim)."""

    blocks: list[tuple[torch.Tensor, ...]]
    out: tuple[torch.Tensor, torch.Tensor]


def split_modulation(m: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(B, 6, dim) -> ``(shift1, 1 + scale1, gate1, shift2, 1 + scale2, gate2)``, each (B, 1, dim)."""
    shift1, scale1, gate1, shift2, scale2, gate2 = m.chunk(6, dim=1)
    return shift1, 1 + scale1, gate1, shift2, 1 + scale2, gate2


class QualityBlock(nn.Module):
    """Pre-norm Transformer block whose residual branches are modulated and gated by the score: ``cond`` adaln by its
    own ``modulation`` layer, adaln_single by the shared layer's output plus its own (6, dim) ``table``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, drop_path: float, cond: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads=heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim)) if cond == "adaln" else None
        self.table = nn.Parameter(torch.zeros(6, dim)) if cond == "adaln_single" else None

    def modulation_for(self, c: torch.Tensor, shared: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """The block's modulation for the conditioning vector ``c`` (adaln) or for the shared layer's
        (B, 6, dim) output ``shared`` (adaln_single)."""
        if self.table is not None:
            return split_modulation(shared + self.table)
        return split_modulation(self.modulation(c).unflatten(-1, (6, -1)))

    def forward(self, x: torch.Tensor, mod: tuple[torch.Tensor, ...]) -> torch.Tensor:
        shift1, factor1, gate1, shift2, factor2, gate2 = mod
        # addcmul: x * factor + shift and x + gate * branch in one kernel each (DropPath's per-sample
        # factor commutes with the gate)
        x = torch.addcmul(x, gate1, self.drop_path(self.attn(torch.addcmul(shift1, self.norm1(x), factor1))))
        return torch.addcmul(x, gate2, self.drop_path(self.mlp(torch.addcmul(shift2, self.norm2(x), factor2))))


class DenseHead(nn.Linear):
    """Index logits by a K-way linear layer (``index_head: dense``); the codes themselves are not used."""

    def forward(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:  # noqa: ARG002
        return super().forward(h)


class SimilarityHead(nn.Module):
    """Index logits ``-||W h - C_k||^2 / (tau * v)`` (``index_head: similarity``): ``v`` = the codebook's mean
    squared distance to its centroid (no gradient), so the logits do not depend on the host's feature scale;
    ``tau`` is learned, starting at 1 (a sharper start saturates the softmax, so that the straight-through
    gradient never reaches the choice of code)."""

    def __init__(self, dim: int, channels: int):
        super().__init__()
        self.proj = nn.Linear(dim, channels)
        self.log_tau = nn.Parameter(torch.zeros(()))

    def forward(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        p = self.proj(h)
        codes = codes.detach().to(p.dtype)
        spread = (codes - codes.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-8)
        dist2 = p.pow(2).sum(-1, keepdim=True) - 2 * p @ codes.t() + codes.pow(2).sum(-1)
        return dist2 / (-spread * self.log_tau.exp())


class ScoreEmbedding(nn.Module):
    """Fourier features of M scores in [0, 1] -> a conditioning vector (adaLN mode)."""

    def __init__(self, num_scores: int, dim: int, frequencies: int = 16):
        super().__init__()
        self.register_buffer("freqs", math.pi * torch.arange(1, frequencies + 1).float(), persistent=False)
        self.mlp = Mlp(num_scores * (2 * frequencies + 1), dim, dim, act_layer=nn.SiLU)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        angles = s.unsqueeze(-1) * self.freqs
        feats = torch.cat([s.unsqueeze(-1), angles.sin(), angles.cos()], dim=-1)
        return self.mlp(feats.flatten(1))


class PixelHead(nn.Module):
    """Per-pixel features for ``codes: pixel``: each final token's ``p * p * dim`` outputs shuffled to its p x p
    pixels, plus the pixel's own bottleneck feature, mixed by a residual MLP (module doc, step 3)."""

    def __init__(self, dim: int, channels: int, patch: int, mlp_ratio: float):
        super().__init__()
        self.patch = patch
        self.expand = nn.Linear(dim, dim * patch * patch)
        self.feat_norm = nn.LayerNorm(channels)
        self.feat_proj = nn.Linear(channels, dim)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        self.norm = nn.LayerNorm(dim)

    def forward(self, h: torch.Tensor, feat: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, gh * gw, dim) tokens and (B, C, H, W) features -> (B, H * W, dim)."""
        height, width = feat.shape[-2:]
        u = rearrange(self.expand(h), "b (gh gw) (p q d) -> b (gh p) (gw q) d", gh=grid[0], p=self.patch, q=self.patch)
        u = u[:, :height, :width] + self.feat_proj(self.feat_norm(feat.permute(0, 2, 3, 1)))
        u = u.flatten(1, 2)
        return self.norm(u + self.mlp(self.mlp_norm(u)))


class IQPPlugin(nn.Module):
    """Quality-conditioned Transformer + dual codebook + zero-initialised injection (see module doc)."""

    def __init__(self, channels: int, *, host_codebook=None, **overrides):
        super().__init__()
        cfg = self.cfg = plugin_options(channels, host_codebook is not None, overrides)
        dim, cond = cfg["dim"], cfg["cond"]
        self.in_norm = nn.LayerNorm(channels)
        self.in_proj = nn.Linear(channels, dim)
        self.pos = nn.Parameter(torch.zeros(1, 16 * 16, dim))
        trunc_normal_(self.pos, std=0.02)
        self.score_embed = ScoreEmbedding(cfg["num_scores"], dim)
        self.shared_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim)) if cond == "adaln_single" else None
        self.blocks = nn.ModuleList(
            QualityBlock(dim, cfg["heads"], cfg["mlp_ratio"], cfg["drop_path"] * i / max(cfg["depth"] - 1, 1), cond)
            for i in range(cfg["depth"]))
        self.out_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.out_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim)) if cond == "adaln" else None
        self.out_table = nn.Parameter(torch.zeros(2, dim)) if cond == "adaln_single" else None
        self.codebook = DualCodebook(channels, cfg["common_size"], cfg["hq_size"], cfg["hq_weight"],
                                     host_codebook if cfg["share_host_codebook"] else None)
        self.pixel_head = PixelHead(dim, channels, cfg["patch"], cfg["mlp_ratio"]) if cfg["codes"] == "pixel" else None
        if cfg["index_head"] == "dense":
            self.head_common = DenseHead(dim, self.codebook.common.size)
            self.head_hq = DenseHead(dim, cfg["hq_size"])
        else:
            self.head_common = SimilarityHead(dim, channels)
            self.head_hq = SimilarityHead(dim, channels)
        kernel = cfg["inject_kernel"]
        #: W_o, zero-initialised
        self.out_conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2)
        #: code selection: 'straight_through' while training, 'hard' at eval; 'continuous' (the unquantised
        #: ablation) decodes the softmax mixture in both
        self.mode = "straight_through"
        #: reuse the score's conditioning between inference calls (see :meth:`condition_for`); off by default
        self.cache_condition = False
        self._condition_cache: tuple[tuple, Condition] | None = None
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        mods = [b.modulation for b in self.blocks] + [self.out_modulation, self.shared_modulation]
        for mod in (m for m in mods if m is not None):  # adaLN-zero: the blocks start as the identity
            nn.init.zeros_(mod[-1].weight)
            nn.init.zeros_(mod[-1].bias)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def freeze_injection(self) -> None:
        """Fix ``W_o``, the map from decoded codes to the host's features (discrete quality optimisation): a loss
        can then change the output only by changing which codes are chosen (or, in 'continuous' mode, their
        softmax mixture), never by writing a pattern of its own through ``W_o``."""
        self.out_conv.requires_grad_(False)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Token grid (gh, gw) for a bottleneck of size (H, W)."""
        patch = self.cfg["patch"]
        if patch is None:
            return self.cfg["grid"], self.cfg["grid"]
        return max(1, math.ceil(height / patch)), max(1, math.ceil(width / patch))

    def code_grid(self, height: int, width: int) -> tuple[int, int]:
        """The grid of codes for a bottleneck of size (H, W): the token grid, or (H, W) with ``codes: pixel``."""
        return (height, width) if self.pixel_head is not None else self.grid_size(height, width)

    def code_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) bottleneck tensor -> (B, N, C) on the code grid: what the codebooks hold and the GT's
        target codes are taken from (``Q`` of the module doc)."""
        if self.pixel_head is not None:
            return rearrange(x, "b c h w -> b (h w) c")
        return self.pool(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """P: (B, C, H, W) bottleneck tensor -> (B, N, C) tokens on the plug-in's grid."""
        grid = self.grid_size(*x.shape[-2:])
        if tuple(x.shape[-2:]) != grid:
            x = F.adaptive_avg_pool2d(x, grid)
        return rearrange(x, "b c h w -> b (h w) c")

    def scores(self, score, batch: int, device: torch.device) -> torch.Tensor:
        """Normalise ``score`` (None, float, (B,) or (B, M)) to a (B, M) tensor in [0, 1].

        Python numbers and CPU tensors are checked on the CPU, so inference on a GPU never waits for
        a device sync here; a score tensor already on the GPU is checked asynchronously.
        """
        m = self.cfg["num_scores"]
        s = torch.as_tensor(self.cfg["target_score"] if score is None else score, dtype=torch.float32)
        if s.dim() == 0:
            s = s.expand(batch)
        if s.dim() == 1:
            s = s.unsqueeze(1).expand(-1, m) if s.shape[0] == batch else s.unsqueeze(0).expand(batch, -1)
        if s.shape != (batch, m):
            raise InvalidInputError(f"score must be a float, a ({batch},) or a ({batch}, {m}) tensor, "
                                    f"got shape {tuple(s.shape)}.")
        in_range = ((s >= 0) & (s <= 1)).all()  # False for NaN too
        if s.device.type == "cpu":
            if not in_range:
                raise InvalidInputError("score values must lie in [0, 1] (normalised NR-IQA scores, higher = better).")
        else:
            torch._assert_async(in_range, "score values must lie in [0, 1]")
        return s.to(device, non_blocking=True)

    def condition(self, s: torch.Tensor) -> Condition:
        """The score embedding and everything computed from it alone, for (B, M) scores ``s``."""
        c = self.score_embed(s)
        if self.cfg["cond"] == "adaln":
            shift, scale = self.out_modulation(c).unsqueeze(1).chunk(2, dim=-1)
            return Condition([block.modulation_for(c) for block in self.blocks], (shift, 1 + scale))
        shared = self.shared_modulation(c).unflatten(-1, (6, -1))  # adaln_single (PixArt-alpha)
        shift, scale = (self.out_table + c.unsqueeze(1)).chunk(2, dim=1)
        return Condition([block.modulation_for(c, shared) for block in self.blocks], (shift, 1 + scale))

    def conditioning_parameters(self) -> list[nn.Parameter]:
        """Every parameter that :meth:`condition` reads."""
        tables = [self.out_table] + [block.table for block in self.blocks]
        layers = [self.score_embed, self.out_modulation, self.shared_modulation] + [b.modulation for b in self.blocks]
        return [t for t in tables if t is not None] + [p for m in layers if m is not None for p in m.parameters()]

    def condition_for(self, score, batch: int, device: torch.device) -> Condition:
        """:meth:`condition` of :meth:`scores`, reused between calls when ``cache_condition`` is set (as
        ``iqp restore``/``compare`` do: about 30 fewer small kernels per call).

        The cache applies at inference only (eval mode, no grad) with a number or None as ``score``, and is
        keyed on the score, batch, device, autocast dtype and the conditioning weights' storage and version
        counter. Writes through ``.data`` (as EMA updates do) bypass the version counter: leave the cache
        off while weights still change.
        """
        if (not self.cache_condition or self.training or torch.is_grad_enabled()
                or not (score is None or isinstance(score, (int, float)))):
            return self.condition(self.scores(score, batch, device))
        autocast = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        score = self.cfg["target_score"] if score is None else score
        key = (score, batch, device, autocast,
               tuple((p.data_ptr(), p._version) for p in self.conditioning_parameters()))
        cached = self._condition_cache
        if cached is None or cached[0] != key:
            cached = self._condition_cache = (key, self.condition(self.scores(score, batch, device)))
        return cached[1]

    def train(self, mode: bool = True) -> IQPPlugin:
        self._condition_cache = None
        return super().train(mode)

    def predict(self, feat: torch.Tensor, score=None) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Index logits over both codebooks for bottleneck features ``feat`` at the given score, and the code
        grid they lie on."""
        grid = self.grid_size(*feat.shape[-2:])
        x = self.in_proj(self.in_norm(self.pool(feat)))
        x = x + resample_abs_pos_embed(self.pos, list(grid), num_prefix_tokens=0)
        cond = self.condition_for(score, feat.shape[0], feat.device)
        for block, mod in zip(self.blocks, cond.blocks, strict=False):
            x = block(x, mod)
        x = torch.addcmul(cond.out[0], self.out_norm(x), cond.out[1])
        if self.pixel_head is not None:
            x, grid = self.pixel_head(x, feat, grid), tuple(feat.shape[-2:])
        return (self.head_common(x, self.codebook.common.weight), self.head_hq(x, self.codebook.hq.weight), grid)

    def forward(self, feat: torch.Tensor, z: torch.Tensor, score=None) -> PluginOutput:
        """Predict codes from ``feat`` and return the decoder input ``z' = z + U(W_o (q - Q(z)))``."""
        logits_c, logits_h, grid = self.predict(feat, score)
        codes = self.decode(logits_c, logits_h)
        return PluginOutput(self.inject(codes, z), logits_c, logits_h, codes, grid)

    def decode(self, logits_c: torch.Tensor, logits_h: torch.Tensor) -> torch.Tensor:
        """Codes for the index logits: while training, by :attr:`mode`; at inference the most likely codes, or with
        ``code_temperature: T`` > 0 the softmax mixture of each codebook at temperature T (between the most likely
        code, T -> 0, and the predicted distribution's mean code, T = 1)."""
        if self.training or self.mode == "continuous":
            return self.codebook.decode(logits_c, logits_h, self.mode)
        temperature = self.cfg["code_temperature"]
        if temperature:
            return self.codebook.decode(logits_c / temperature, logits_h / temperature, "continuous")
        return self.codebook.decode(logits_c, logits_h, "hard")

    def inject(self, codes: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``z + U(W_o (q - Q(z)))`` for (B, N, C) codes ``q`` on the code grid of ``z``."""
        grid = self.code_grid(*z.shape[-2:])
        delta = self.out_conv(rearrange(codes - self.code_features(z), "b (h w) c -> b c h w", h=grid[0], w=grid[1]))
        height, width = z.shape[-2:]
        if tuple(delta.shape[-2:]) != (height, width):
            delta = F.interpolate(delta, size=(height, width), mode="bilinear", align_corners=False)
        return z + delta
