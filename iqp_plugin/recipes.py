"""Named recipes: everything that makes a plug-in what the benchmark measured, defined once.

A recipe has three sides, and each is read where it acts:

* ``plugin``: the plug-in's options (``network_g: plugin: {preset: NAME}``; :data:`iqp_plugin.plugin.PRESETS` is
  this table's ``plugin`` side);
* ``data``: how the training targets' scores are made and used: ``norm`` for ``iqp score --norm``, and the
  datasets' ``top_copies`` / ``top_percent`` (each target in the top ``top_percent``% by score ``top_copies``
  times per epoch in stages 2-3, every copy with its own score);
* ``train``: stage 2's learning rate (``train: optim_g: lr`` of the predictor stage).

``benchmarks/beyond_gt.py --recipe NAME`` and ``make demo`` apply a recipe from this table; the configs in
``configs/<host>/`` write its data and train sides out, and a test checks that they agree with it. Which recipe a
host gets by default is its adapter's ``default_recipe``. benchmarks/RESULTS.md holds the results behind each.
"""
from __future__ import annotations

from dataclasses import dataclass


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
