"""The Image Quality Prior: NR-IQA metrics, their scores on a [0,1] higher-is-better scale, and the quality loss.

A prior is a list of pyiqa no-reference metrics with weights. Each raw score is mapped to [0,1]
(1 = best, whatever the metric's direction) by min-max over the scored dataset (the IQPIR
authors' recipe) or by pyiqa's nominal score range, then averaged with the weights into one
``score``. The constants are kept in a JSON sidecar so new images land on the same scale.
"""
from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from iqp_plugin import _compat  # noqa: F401  (before basicsr)
from basicsr.utils.registry import LOSS_REGISTRY

from iqp_plugin.files import write_atomic
from iqp_plugin.offline_metrics import create_metric

#: Named priors: metric -> weight. 'offline' needs no download; 'iqpir-face' is the authors' choice.
PRIORS = {
    "offline": {"niqe": 1.0},
    "offline+piqe": {"niqe": 1.0, "piqe": 1.0},
    "iqpir-face": {"musiq": 1.0, "topiq_nr-face": 1.0, "qalign": 1.0},
}
DEFAULT_PRIOR = "offline"

# pyiqa lists these as NR, but they score image sets or need a caption, not one image.
_NOT_PER_IMAGE = {"fid", "fid_dinov2", "sfid", "inception_score", "clipscore"}


def nr_metrics() -> list[str]:
    """pyiqa's no-reference metrics that score a single image."""
    import pyiqa

    return [m for m in pyiqa.list_models(metric_mode="NR") if m not in _NOT_PER_IMAGE]


def _config(name: str) -> dict:
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    return DEFAULT_CONFIGS[name]


@dataclass(frozen=True)
class Prior:
    """pyiqa NR metric names and their weights (normalised to sum 1)."""

    metrics: tuple[str, ...]
    weights: tuple[float, ...]

    @property
    def lower_better(self) -> tuple[bool, ...]:
        return tuple(bool(_config(m).get("lower_better", False)) for m in self.metrics)

    def create_metrics(self, device="cpu", as_loss: bool = False) -> dict[str, nn.Module]:
        """One frozen pyiqa metric module per metric, created without downloads."""
        modules = {}
        for name in self.metrics:
            module = create_metric(name, as_loss=as_loss, device=torch.device(device))
            modules[name] = module.eval().requires_grad_(False)
        return modules


def create_prior(metrics: str | Sequence[str] | Mapping[str, float] = DEFAULT_PRIOR,
                 weights: Sequence[float] | None = None) -> Prior:
    """Build a Prior from a PRIORS name, a comma list 'niqe,piqe', a list, or a {metric: weight} dict."""
    if isinstance(metrics, str):
        metrics = PRIORS.get(metrics) or [m.strip() for m in metrics.split(",") if m.strip()]
    if isinstance(metrics, Mapping):
        if weights is None:
            weights = list(metrics.values())
        metrics = list(metrics)
    metrics = list(metrics)
    weights = [1.0] * len(metrics) if weights is None else [float(w) for w in weights]
    if not metrics:
        raise ValueError("a prior needs at least one metric")
    if len(weights) != len(metrics):
        raise ValueError(f"{len(weights)} weights for {len(metrics)} metrics {metrics}")
    if len(set(metrics)) != len(metrics):
        raise ValueError(f"metric listed twice: {metrics}")
    if min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {weights}")
    valid = nr_metrics()
    for name in metrics:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown NR-IQA metric '{name}'.{hint} Valid NR metrics: {', '.join(valid)}. "
                             f"Named priors: {', '.join(PRIORS)}.")
    total = sum(weights)
    return Prior(tuple(metrics), tuple(w / total for w in weights))


def fixed_range(name: str) -> tuple[float, float]:
    """pyiqa's nominal score range of a metric ('~0, ~100' -> (0, 100)); ValueError when open-ended."""
    text = _config(name).get("score_range", "")
    try:
        lo, hi = (float(part.strip().lstrip("~")) for part in text.split(","))
    except ValueError:
        raise ValueError(f"pyiqa gives metric '{name}' no fixed score range ('{text}'): use min-max normalisation")
    return lo, hi


@dataclass
class Normalizer:
    """Maps raw metric scores to one [0,1] higher-is-better ``score``; saved as the JSON sidecar."""

    prior: Prior
    ranges: dict[str, tuple[float, float]]
    mode: str = "minmax"

    @classmethod
    def fit(cls, prior: Prior, raw: Mapping[str, Sequence[float]], mode: str = "minmax") -> Normalizer:
        """Ranges from the scored values ('minmax', NaNs ignored) or from pyiqa's nominal ranges ('fixed')."""
        if mode == "fixed":
            return cls(prior, {m: fixed_range(m) for m in prior.metrics}, mode)
        if mode != "minmax":
            raise ValueError(f"normalisation must be 'minmax' or 'fixed', got '{mode}'")
        ranges = {}
        for m in prior.metrics:
            values = [v for v in raw[m] if not math.isnan(v)]
            if not values:
                raise ValueError(f"no valid '{m}' scores to normalise")
            ranges[m] = (min(values), max(values))
        return cls(prior, ranges, mode)

    def normalise(self, metric: str, value: float) -> float:
        """One metric's raw value on [0,1], 1 = best (clipped outside the fitted range)."""
        lo, hi = self.ranges[metric]
        x = (value - lo) / (hi - lo) if hi > lo else 0.5
        x = min(max(x, 0.0), 1.0)
        return 1.0 - x if self.prior.lower_better[self.prior.metrics.index(metric)] else x

    def __call__(self, raw: Mapping[str, float]) -> float:
        """The weighted ``score`` of one image's raw scores."""
        return sum(w * self.normalise(m, raw[m]) for m, w in zip(self.prior.metrics, self.prior.weights))

    def to_dict(self) -> dict:
        return {"metrics": list(self.prior.metrics), "weights": list(self.prior.weights),
                "lower_better": list(self.prior.lower_better), "norm": self.mode,
                "ranges": {m: list(r) for m, r in self.ranges.items()}}

    def save(self, path: str | Path, **extra) -> None:
        """Write the sidecar atomically; ``extra`` keys are stored beside the constants."""
        write_atomic(path, json.dumps({**self.to_dict(), **extra}, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Normalizer:
        d = json.loads(Path(path).read_text())
        prior = Prior(tuple(d["metrics"]), tuple(d["weights"]))
        return cls(prior, {m: tuple(r) for m, r in d["ranges"].items()}, d["norm"])


@LOSS_REGISTRY.register()
class QualityLoss(nn.Module):
    """Differentiable NR-IQA loss to minimise: sum of weight * (+score if lower is better else -score).

    ``metrics``/``weights`` as in ``create_prior`` (weights normalised to sum 1). ``image_range`` is the
    range of the network output; it is mapped to the [0,1] pyiqa expects. The metric modules are
    frozen and stay in eval mode.
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
        loss = sum(w * s * m(x) for m, w, s in zip(self.metrics, self.prior.weights, self.signs))
        return self.loss_weight * loss
