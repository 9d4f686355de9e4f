"""The Image Quality Prior: NR-IQA metrics and their scores on a [0,1] higher-is-better scale.

A prior is a list of pyiqa no-reference metrics with weights. Each raw score is mapped to [0,1]
(1 = best, whatever the metric's direction) by min-max over the scored dataset (the IQPIR
authors' recipe), by pyiqa's nominal score range, or by its rank among the scored images (``rank``:
the empirical distribution function, so that a long tail or an outlier cannot leave part of [0, 1] to
almost no image, and 0.95 means "as good as the best 5%"), then averaged with the weights into one
``score``. The constants are kept in a JSON sidecar so new images land on the same scale. The loss built
from a prior is :class:`iqp_plugin.prior.loss.QualityLoss`.

Nothing here imports pyiqa until a metric is created: metric names, directions and ranges come from
pyiqa's own configuration table, read from its file (:func:`pyiqa_configs`), so that ``iqp score`` starts
without pyiqa's imports (torchvision and more).
"""
from __future__ import annotations

import difflib
import functools
import importlib.util
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from iqp_plugin.errors import InvalidInputError
from iqp_plugin.io.files import write_atomic
from iqp_plugin.prior.offline import create_metric

#: Named priors: metric -> weight. 'offline' needs no download; 'iqpir-face' is the authors' choice.
PRIORS = {
    "offline": {"niqe": 1.0},
    "offline+piqe": {"niqe": 1.0, "piqe": 1.0},
    "iqpir-face": {"musiq": 1.0, "topiq_nr-face": 1.0, "qalign": 1.0},
}
DEFAULT_PRIOR = "offline"

# pyiqa lists these as NR, but they score image sets or need a caption, not one image.
_NOT_PER_IMAGE = {"fid", "fid_dinov2", "sfid", "inception_score", "clipscore"}


@functools.cache
def pyiqa_configs() -> dict[str, dict]:
    """pyiqa's table of metric configurations (``pyiqa.default_model_configs.DEFAULT_CONFIGS``, which
    ``pyiqa.list_models`` filters), read from its file without importing the pyiqa package."""
    spec = importlib.util.find_spec("pyiqa")
    path = Path(spec.submodule_search_locations[0]) / "default_model_configs.py"
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location("_pyiqa_default_configs", path))
    module.__spec__.loader.exec_module(module)
    return module.DEFAULT_CONFIGS


def nr_metrics() -> list[str]:
    """pyiqa's no-reference metrics that score a single image."""
    return sorted(m for m, c in pyiqa_configs().items() if c["metric_mode"] == "NR" and m not in _NOT_PER_IMAGE)


def _config(name: str) -> dict:
    return pyiqa_configs()[name]


@dataclass(frozen=True)
class Prior:
    """pyiqa NR metric names and their weights (normalised to sum 1)."""

    metrics: tuple[str, ...]
    weights: tuple[float, ...]

    @property
    def lower_better(self) -> tuple[bool, ...]:
        return tuple(bool(_config(m).get("lower_better", False)) for m in self.metrics)

    def create_metrics(self, device="cpu", as_loss: bool = False) -> dict[str, nn.Module]:
        """One frozen metric module per metric, created without downloads: pyiqa's, except NIQE
        (:class:`iqp_plugin.prior.niqe.NIQE`) for scoring on the CPU (pyiqa's numbers within 1e-8, several times
        faster, without importing pyiqa) and for every loss (``as_loss``): pyiqa's NIQE gradient ignores the
        AGGD shape features, and descending it raises NIQE."""
        modules = {}
        for name in self.metrics:
            if name == "niqe" and (as_loss or torch.device(device).type == "cpu"):
                from iqp_plugin.prior.niqe import NIQE

                module = NIQE(differentiable=as_loss).to(device)
            else:
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
        raise InvalidInputError("a prior needs at least one metric")
    if len(weights) != len(metrics):
        raise InvalidInputError(f"{len(weights)} weights for {len(metrics)} metrics {metrics}")
    if len(set(metrics)) != len(metrics):
        raise InvalidInputError(f"metric listed twice: {metrics}")
    if not all(math.isfinite(w) for w in weights) or min(weights) < 0 or sum(weights) <= 0:
        raise InvalidInputError(f"weights must be finite numbers >= 0 with a positive sum, got {weights}")
    valid = nr_metrics()
    for name in metrics:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise InvalidInputError(f"unknown NR-IQA metric '{name}'.{hint} Valid NR metrics: {', '.join(valid)}. "
                             f"Named priors: {', '.join(PRIORS)}.")
    total = sum(weights)
    return Prior(tuple(metrics), tuple(w / total for w in weights))


def fixed_range(name: str) -> tuple[float, float]:
    """pyiqa's nominal score range of a metric ('~0, ~100' -> (0, 100)); ValueError when open-ended."""
    text = _config(name).get("score_range", "")
    try:
        lo, hi = (float(part.strip().lstrip("~")) for part in text.split(","))
    except ValueError:
        raise InvalidInputError(f"pyiqa gives metric '{name}' no fixed score range ('{text}'): "
                                "use min-max normalisation") from None
    return lo, hi


#: how raw scores are mapped to [0, 1] (see the module doc)
NORMALISATIONS = ("minmax", "fixed", "rank")
#: 'rank' keeps the raw values at this many + 1 evenly spaced quantiles
RANK_KNOTS = 100


@dataclass
class Normalizer:
    """Maps raw metric scores to one [0,1] higher-is-better ``score``; saved as the JSON sidecar."""

    prior: Prior
    ranges: dict[str, tuple[float, float]]
    mode: str = "minmax"
    #: 'rank' only: per metric, the raw values at the quantiles 0, 1/K, ..., 1 of the scored images
    quantiles: dict[str, list[float]] | None = None
    #: the sidecar it was read from, if any
    source: str | None = field(default=None, compare=False)

    @classmethod
    def fit(cls, prior: Prior, raw: Mapping[str, Sequence[float]], mode: str = "minmax") -> Normalizer:
        """Ranges from the scored values ('minmax', NaNs ignored), from pyiqa's nominal ranges ('fixed'), or the
        scored values' quantiles ('rank', :data:`RANK_KNOTS` + 1 of them)."""
        if mode == "fixed":
            return cls(prior, {m: fixed_range(m) for m in prior.metrics}, mode)
        if mode not in NORMALISATIONS:
            raise InvalidInputError(f"normalisation must be one of {', '.join(NORMALISATIONS)}, got '{mode}'")
        ranges, quantiles = {}, {}
        for m in prior.metrics:
            values = [v for v in raw[m] if not math.isnan(v)]
            if not values:
                raise InvalidInputError(f"no valid '{m}' scores to normalise")
            ranges[m] = (min(values), max(values))
            if mode == "rank":
                quantiles[m] = np.quantile(values, np.linspace(0, 1, RANK_KNOTS + 1)).tolist()
        return cls(prior, ranges, mode, quantiles or None)

    def normalise(self, metric: str, value: float) -> float:
        """One metric's raw value on [0,1], 1 = best (clipped outside the fitted range)."""
        lo, hi = self.ranges[metric]
        if hi <= lo:
            x = 0.5
        elif self.mode == "rank":  # the fraction of scored images below value, interpolated between the knots
            knots = self.quantiles[metric]
            x = float(np.interp(value, knots, np.linspace(0, 1, len(knots))))
        else:
            x = (value - lo) / (hi - lo)
        x = min(max(x, 0.0), 1.0)
        return 1.0 - x if self.prior.lower_better[self.prior.metrics.index(metric)] else x

    def __call__(self, raw: Mapping[str, float]) -> float:
        """The weighted ``score`` of one image's raw scores."""
        return sum(w * self.normalise(m, raw[m]) for m, w in zip(self.prior.metrics, self.prior.weights, strict=False))

    def to_dict(self) -> dict:
        return {"metrics": list(self.prior.metrics), "weights": list(self.prior.weights),
                "lower_better": list(self.prior.lower_better), "norm": self.mode,
                "ranges": {m: list(r) for m, r in self.ranges.items()},
                **({"quantiles": self.quantiles} if self.mode == "rank" else {})}

    def save(self, path: str | Path, **extra) -> None:
        """Write the sidecar atomically; ``extra`` keys are stored beside the constants."""
        write_atomic(path, json.dumps({**self.to_dict(), **extra}, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Normalizer:
        """The normalizer of a sidecar; InvalidInputError naming the file and the field that cannot be used."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            d = None
        if not isinstance(d, dict):
            raise InvalidInputError(f"{path} is not a JSON object: pass the .json sidecar that `iqp score` wrote")
        return cls.from_dict(d, path)

    @classmethod
    def from_dict(cls, d: Mapping, source: str | Path) -> Normalizer:
        """The normalizer that :meth:`to_dict` gave, checked field by field: a sidecar edited or damaged by hand
        must fail here, naming ``source`` and the field, not give NaN, constant or out-of-range scores."""

        def bad(key: str, problem: str) -> InvalidInputError:
            return InvalidInputError(f"{source}: {key} {problem}; correct it, or score that set again "
                                     "(iqp score --replace) to write a new sidecar")

        def numbers(value, key: str, size: int | None = None) -> list[float]:
            ok = isinstance(value, list) and all(isinstance(v, int | float) and not isinstance(v, bool)
                                                 for v in value)
            if not ok or (size is not None and len(value) != size):
                what = f"a list of {size} number{'s' * (size != 1)}" if size else "a list of numbers"
                raise bad(key, f"is {json.dumps(value)}, not {what}")
            if not all(math.isfinite(v) for v in value):
                raise bad(key, f"is {json.dumps(value)}: not finite")
            return [float(v) for v in value]

        metrics = d.get("metrics")
        if not (isinstance(metrics, list) and metrics and all(isinstance(m, str) for m in metrics)):
            raise bad("'metrics'", f"is {json.dumps(metrics)}, not a list of metric names")
        weights = numbers(d.get("weights"), "'weights'", len(metrics))
        try:
            prior = create_prior(metrics, weights)
        except InvalidInputError as err:
            raise bad("'metrics'/'weights'", f"cannot be used ({err})") from None
        if math.isclose(sum(weights), 1.0, rel_tol=1e-9):  # as written: equal to the normalizer that wrote them
            prior = Prior(prior.metrics, tuple(weights))
        lower = d.get("lower_better", list(prior.lower_better))
        if lower != list(prior.lower_better):
            raise bad("'lower_better'", f"is {json.dumps(lower)}, but pyiqa gives {json.dumps(prior.lower_better)} "
                      f"for {', '.join(metrics)}")
        mode = d.get("norm")
        if mode not in NORMALISATIONS:
            raise bad("'norm'", f"is {json.dumps(mode)}, not one of {', '.join(NORMALISATIONS)}")
        table = d.get("ranges")
        if not isinstance(table, dict) or set(metrics) - set(table):
            raise bad("'ranges'", f"must give [low, high] for each of {', '.join(metrics)}, got {json.dumps(table)}")
        ranges = {}
        for m in metrics:
            lo, hi = numbers(table[m], f"'ranges' of {m}", 2)
            if not lo < hi:
                raise bad(f"'ranges' of {m}", f"is [{lo}, {hi}]: "
                          + ("inverted" if lo > hi else "empty, every image would score 0.5"))
            ranges[m] = (lo, hi)
        quantiles = None
        if mode == "rank":
            table = d.get("quantiles")
            if not isinstance(table, dict) or set(metrics) - set(table):
                raise bad("'quantiles'", f"must list the raw values at {RANK_KNOTS + 1} quantiles for each of "
                          f"{', '.join(metrics)} (norm 'rank')")
            quantiles = {}
            for m in metrics:
                knots = numbers(table[m], f"'quantiles' of {m}")
                if len(knots) < 2 or any(b < a for a, b in zip(knots, knots[1:], strict=False)):
                    raise bad(f"'quantiles' of {m}", "must be at least 2 values in increasing order")
                quantiles[m] = knots
        return cls(prior, ranges, mode, quantiles, str(source))
