"""The device a command runs on (``--device``), chosen in one place for every command; torch only, no BasicSR,
so that ``iqp score`` stays light."""
from __future__ import annotations

import os

import torch

from iqp_plugin.errors import InvalidInputError


def resolve_device(name: str) -> torch.device:
    """The device ``--device name`` asks for: 'auto' is the GPU when CUDA is available (under torchrun, the
    process's ``LOCAL_RANK``), else the CPU; a CUDA device without CUDA is a ValueError."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        name = f"cuda:{os.environ['LOCAL_RANK']}" if "LOCAL_RANK" in os.environ else "cuda"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"--device {name}, but no CUDA device is available")
    return device
