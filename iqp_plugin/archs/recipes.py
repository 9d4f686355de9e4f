"""Named recipes: everything that makes a plug-in what the benchmark measured, defined once.

A recipe has three sides, and each is read where it acts:

* ``plugin``: the plug-in's options (``network_g: plugin: {preset: NAME}``; :data:`PRESETS` is
  this table's ``plugin`` side, and :func:`plugin_options` checks them);
* ``data``: how the training targets' scores are made and used: ``norm`` for ``iqp score --norm``, and the
  datasets' ``top_copies`` / ``top_percent`` (each target in the top ``top_percent``% by score ``top_copies``
  times per epoch in stages 2-3, every copy with its own score);
* ``train``: stage 2's learning rate (``train: optim_g: lr`` of the predictor stage).

``benchmarks/beyond_gt.py --recipe NAME`` and ``make demo`` apply a recipe from this table; the configs in
``configs/<host>/`` write its data and train sides out, and a test checks that they agree with it. Which recipe a
host gets by default is its adapter's ``default_recipe``. benchmarks/RESULTS.md holds the results behind each.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from iqp_plugin.errors import InvalidInputError


@dataclass(frozen=True)
class Recipe:
    """One named recipe (see the module doc)."""

    plugin: dict
    norm: str
    top_copies: int
    top_percent: int
    predictor_lr: float


RECIPES = {
    # full-resolution hosts (SwinIR, hook hosts): the configuration the beyond-GT benchmark adopted
    "pixel": Recipe(
        plugin={
            "dim": "auto",               # the host's bottleneck width / 2, a multiple of 32, at least 64
            "depth": 2,
            "heads": "auto",             # dim / 32
            "cond": "adaln",             # per-block adaLN-zero modulation by the score
            "index_head": "dense",       # a logit layer per codebook
            "common_size": 256,
            "hq_size": 128,
            "share_host_codebook": "auto",
            "codes": "pixel",            # a code per bottleneck pixel, predicted from 2x2-pixel tokens
            "patch": 2,
            "hq_weight": 1.0,            # the HQ code is the residual the common code leaves
            "inject_kernel": 7,          # W_o sees each pixel's 7x7 neighbourhood of codes
            "code_temperature": 0.5,     # inference decodes softmax(logits / 0.5) @ C
        },
        norm="rank", top_copies=16, top_percent=40, predictor_lr=4e-3),
    # codebook face hosts (CodeFormer, RestoreFormer): designed for size; its benefit is not shown yet
    "lean": Recipe(
        plugin={
            "dim": "auto",
            "depth": 4,
            "heads": "auto",
            "cond": "adaln_single",      # PixArt-alpha: one modulation layer shared by all blocks
            "index_head": "similarity",  # logits from distances to the codes: no parameter per code
            "common_size": 512,          # used only when the host has no codebook of its own
            "hq_size": 512,
            "share_host_codebook": "auto",
            "codes": "token",
            "patch": None,
            "hq_weight": 0.8,            # the authors' weight
            "inject_kernel": 1,
            "code_temperature": 0.0,
        },
        norm="rank", top_copies=16, top_percent=40, predictor_lr=1e-3),
}

#: Named presets: the ``plugin`` side of :data:`RECIPES`. ``plugin: {preset: NAME, ...}`` starts
#: from one (default: the host adapter's ``default_recipe``); any key can be overridden.
PRESETS = {name: recipe.plugin for name, recipe in RECIPES.items()}
DEFAULT_PRESET = "pixel"
#: Options every preset shares.
SHARED_OPTIONS = {
    "mlp_ratio": 2.0,
    "drop_path": 0.0,
    "grid": 16,              # token grid (gh = gw = grid) when patch is None
    "num_scores": 1,         # M: length of the score vector (several NR metrics)
    "target_score": 0.95,    # score asked for at inference when none is given
}
CHOICES = {"cond": ("adaln", "adaln_single"), "index_head": ("dense", "similarity"), "codes": ("token", "pixel"),
           "share_host_codebook": (True, False, "auto")}


def plugin_options(channels: int, has_host_codebook: bool, overrides: dict) -> dict:
    """The full option dict of a plug-in: its preset, then ``overrides``, with the ``auto`` values resolved
    for a host bottleneck of ``channels`` channels."""
    overrides = dict(overrides)
    preset = overrides.pop("preset", DEFAULT_PRESET)
    if preset not in PRESETS:
        raise InvalidInputError(f"Unknown plugin preset {preset!r}; presets: {', '.join(PRESETS)}.")
    valid = set(PRESETS[preset]) | set(SHARED_OPTIONS)
    unknown = set(overrides) - valid
    if unknown:
        raise InvalidInputError(f"Unknown plugin option(s) {sorted(unknown)}; "
                                f"valid options: {sorted(valid | {'preset'})}.")
    cfg = {"preset": preset, **SHARED_OPTIONS, **PRESETS[preset], **overrides}
    for key, allowed in CHOICES.items():
        if cfg[key] not in allowed:
            raise InvalidInputError(f"plugin {key} must be one of {', '.join(map(repr, allowed))}, got {cfg[key]!r}.")
    if cfg["dim"] == "auto":
        cfg["dim"] = max(64, 32 * math.ceil(channels / 2 / 32))
    if cfg["heads"] == "auto":
        cfg["heads"] = max(1, cfg["dim"] // 32)
    if cfg["dim"] % cfg["heads"]:
        raise InvalidInputError(f"plugin dim ({cfg['dim']}) must be a multiple of heads ({cfg['heads']}).")
    if cfg["share_host_codebook"] == "auto":
        cfg["share_host_codebook"] = has_host_codebook
    if cfg["codes"] == "pixel" and not cfg["patch"]:
        raise InvalidInputError("plugin codes: pixel needs patch: P (each token's P x P pixels get their own codes).")
    kernel = cfg["inject_kernel"]  # a bool is an int in Python: refused, not read as 0 or 1
    if isinstance(kernel, bool) or not (isinstance(kernel, int) and kernel > 0 and kernel % 2):
        raise InvalidInputError(f"plugin inject_kernel must be an odd positive integer (1, 3, 5, ...), got {kernel!r}.")
    temperature = cfg["code_temperature"]
    if isinstance(temperature, bool) or not (isinstance(temperature, (int, float)) and temperature >= 0):
        raise InvalidInputError(f"plugin code_temperature must be a number >= 0 (0: the most likely code), "
                                f"got {temperature!r}.")
    if cfg["share_host_codebook"] and not has_host_codebook:
        raise InvalidInputError("plugin share_host_codebook: true, but this host has no codebook of its own.")
    return cfg
