"""``QualityLoss``: the differentiable NR-IQA loss of a quality prior, registered in BasicSR's LOSS_REGISTRY."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from iqp_plugin.prior.metrics import DEFAULT_PRIOR, create_prior


@LOSS_REGISTRY.register()
class QualityLoss(nn.Module):
    """Differentiable NR-IQA loss to minimise: sum of weight * (+score if lower is better else -score).

    ``metrics``/``weights`` as in ``create_prior`` (weights normalised to sum 1). ``image_range`` is the
    range of the network output; it is mapped to the [0,1] pyiqa expects. The metric modules are
    frozen and stay in eval mode; NIQE is :class:`iqp_plugin.prior.niqe.NIQE` with its corrected gradient.
    """

    def __init__(self, metrics: str | Sequence[str] = DEFAULT_PRIOR, weights: Sequence[float] | None = None,
                 image_range: Sequence[float] = (0.0, 1.0), loss_weight: float = 1.0):
        super().__init__()
        self.prior = create_prior(metrics, weights)
        self.image_range = (float(image_range[0]), float(image_range[1]))
        self.loss_weight = loss_weight
        self.metrics = nn.ModuleList(self.prior.create_metrics("cpu", as_loss=True).values())
        self.signs = [1.0 if lb else -1.0 for lb in self.prior.lower_better]

    def train(self, mode: bool = True) -> QualityLoss:
        super().train(mode)
        self.metrics.eval()
        return self

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        lo, hi = self.image_range
        x = ((img - lo) / (hi - lo)).clamp(0, 1)
        loss = sum(w * s * m(x).mean() for m, w, s in zip(self.metrics, self.prior.weights, self.signs, strict=False))
        return self.loss_weight * loss.to(img.dtype)
