"""Codebooks of the dual-branch prior.

A :class:`Codebook` holds K code vectors of C channels, in the host encoder's feature space (the
space of ``Bottleneck.feat`` on the plug-in's code grid: pooled to its tokens, or per pixel). It is learned
without gradients (stage 1): k-means++-style initialisation from the first batch, exponential-moving-average
k-means updates, and restart of codes that stopped being used. :class:`HostCodebook` borrows a
host's own codebook (CodeFormer, RestoreFormer) read-only, so that it is never stored twice.
:class:`DualCodebook` turns the Transformer's two index predictions into one code map
``q = common + hq_weight * hq``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class Codebook(nn.Module):
    """K x C codes learned by EMA k-means (no gradient); all state lives in buffers."""

    def __init__(self, size: int, dim: int, *, decay: float = 0.99, eps: float = 1e-5, dead_threshold: float = 0.03):
        super().__init__()
        self.size, self.dim, self.decay, self.eps, self.dead_threshold = size, dim, decay, eps, dead_threshold
        self.register_buffer("embed", torch.randn(size, dim) * 0.02)
        self.register_buffer("embed_avg", self.embed.clone())
        self.register_buffer("cluster_size", torch.zeros(size))
        self.register_buffer("initted", torch.tensor(False))

    @property
    def weight(self) -> torch.Tensor:
        return self.embed

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of ``x`` (N, C)."""
        return torch.cdist(x.float(), self.embed.float()).argmin(dim=1)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> dict[str, float]:
        """One EMA k-means step on features ``x`` (N, C); returns usage statistics of this batch.

        Under torch.distributed, pass every rank the same (gathered) ``x``: the updates are then equal
        on all ranks, and the random picks of initialisation and restarts are broadcast from rank 0.
        """
        x = x.detach().float()
        if not bool(self.initted):
            self._init_from(x)
        idx = self.nearest(x)
        onehot = F.one_hot(idx, self.size).type_as(x)
        counts, sums = onehot.sum(0), onehot.t() @ x
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.size * self.eps) * n
        self.embed.copy_(self.embed_avg / smoothed.unsqueeze(1))
        self._restart_dead(x)
        probs = counts / counts.sum().clamp(min=1)
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        return {"perplexity": float(perplexity), "usage": float((counts > 0).float().mean())}

    def _init_from(self, x: torch.Tensor) -> None:
        picks = x[torch.randint(len(x), (self.size,), device=x.device)]
        self.embed.copy_(picks + 1e-3 * torch.randn_like(picks) * x.std())
        self.embed_avg.copy_(self.embed)
        self.cluster_size.fill_(1.0)
        self.initted.fill_(True)
        self._sync_from_rank0()

    def _restart_dead(self, x: torch.Tensor) -> None:
        dead = self.cluster_size < self.dead_threshold
        if dead.any():
            picks = x[torch.randint(len(x), (int(dead.sum()),), device=x.device)]
            self.embed[dead] = picks
            self.embed_avg[dead] = picks
            self.cluster_size[dead] = 1.0
            self._sync_from_rank0()

    def _sync_from_rank0(self) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for buf in (self.embed, self.embed_avg, self.cluster_size):
                torch.distributed.broadcast(buf, src=0)


class HostCodebook(nn.Module):
    """A host's own codebook used as the common branch; read through a getter, never stored here."""

    def __init__(self, getter: Callable[[], torch.Tensor]):
        super().__init__()
        self._getter = getter

    @property
    def weight(self) -> torch.Tensor:
        return self._getter().detach()

    def __deepcopy__(self, memo):  # an EMA copy of the plug-in must not copy the host with the getter
        return HostCodebook(self._getter)

    @property
    def size(self) -> int:
        return self.weight.shape[0]

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cdist(x.float(), self.weight.float()).argmin(dim=1)


class DualCodebook(nn.Module):
    """Common + HQ-specific codebooks; decodes index logits into ``q = common + hq_weight * hq``."""

    def __init__(self, dim: int, common_size: int, hq_size: int, hq_weight: float,
                 host_codebook: Callable[[], torch.Tensor] | None = None):
        super().__init__()
        self.common = HostCodebook(host_codebook) if host_codebook is not None else Codebook(common_size, dim)
        self.hq = Codebook(hq_size, dim)
        self.hq_weight = hq_weight

    @staticmethod
    def _select(logits: torch.Tensor, embed: torch.Tensor, mode: str) -> torch.Tensor:
        """Codes for (B, N, K) logits: 'hard' top-1, 'straight_through' (hard forward, soft gradient),
        or 'continuous' (softmax mixture, the unquantised ablation)."""
        if mode == "hard":
            return F.embedding(logits.argmax(-1), embed).to(logits.dtype)
        soft = logits.softmax(-1) @ embed.to(logits.dtype)
        if mode == "continuous":
            return soft
        hard = F.embedding(logits.argmax(-1), embed).to(logits.dtype)
        return hard + soft - soft.detach()

    def decode(self, logits_common: torch.Tensor, logits_hq: torch.Tensor, mode: str = "hard") -> torch.Tensor:
        """(B, N, C) code features for the two index predictions."""
        common = self._select(logits_common, self.common.weight, mode)
        hq = self._select(logits_hq, self.hq.weight, mode)
        return torch.add(common, hq, alpha=self.hq_weight)

    def targets(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The target codes of features ``feat`` (N, C): the nearest common code, the HQ code nearest to what it
        leaves (the residual, the rule :meth:`update` learns the HQ codebook by), and the decoded
        ``q = common + hq_weight * hq``. Returns (common index, HQ index, q)."""
        common = self.common.weight
        idx_c = self.common.nearest(feat)
        idx_h = self.hq.nearest(feat - common[idx_c])
        return idx_c, idx_h, common[idx_c] + self.hq_weight * self.hq.weight[idx_h]

    @torch.no_grad()
    def update(self, feat: torch.Tensor, hq_feat: torch.Tensor) -> dict[str, float]:
        """One stage-1 step: EMA k-means of the common codebook on every target's features ``feat`` (N, C),
        unless it is the host's (used as it is), then of the HQ codebook on the residuals of the high-score
        targets' features ``hq_feat`` (M, C; M may be 0). Returns the usage statistics of both."""
        logs = {}
        if isinstance(self.common, Codebook):
            logs.update({f"common_{k}": v for k, v in self.common.update(feat).items()})
        if len(hq_feat):
            residual = hq_feat - self.common.weight[self.common.nearest(hq_feat)]
            logs.update({f"hq_{k}": v for k, v in self.hq.update(residual).items()})
        return logs
