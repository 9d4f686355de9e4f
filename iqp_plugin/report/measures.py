"""The numbers of an ``iqp compare`` report, measured on the saved files (reloaded, so that they match what a
viewer sees): the NR metrics and, against a GT, PSNR, SSIM and the sharpness ratio."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from iqp_plugin.report.metrics import full_reference
from iqp_plugin.report.pictures import load_u8


def measure(path: Path, metrics: dict[str, torch.nn.Module], device: torch.device,
            gt: np.ndarray | None = None) -> dict[str, float]:
    """Every NR metric of the saved image at ``path``, NaN (with a warning) where a metric cannot score it
    (e.g. NIQE on images under 96 px or flat ones); then the full-reference metrics against ``gt`` (uint8 RGB)
    when given."""
    img = load_u8(path)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255).to(device)
    values = {}
    for m, module in metrics.items():
        try:
            with torch.no_grad():
                values[m] = float(module(x))
        except (RuntimeError, ValueError, np.linalg.LinAlgError) as err:
            warnings.warn(f"{m} cannot score {path}: {err}; left out of its means", stacklevel=2)
            values[m] = float("nan")
    if gt is not None:
        values.update(full_reference(img, gt))
    return values
