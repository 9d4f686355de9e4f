"""The device a command runs on (``--device``), chosen in one place for every command; torch only, no BasicSR,
so that ``iqp score`` stays light."""
from __future__ import annotations

import os

import torch

from iqp_plugin.errors import InvalidInputError


def resolve_device(name: str) -> torch.device:
    """The device ``--device name`` asks for: 'auto' is the GPU when CUDA is available (under torchrun, the
    process's ``LOCAL_RANK``), else the CPU. A name torch does not know, a device type this machine lacks, or a
    CUDA index past its GPUs is an InvalidInputError."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        name = f"cuda:{os.environ['LOCAL_RANK']}" if "LOCAL_RANK" in os.environ else "cuda"
    try:
        device = torch.device(name)
        if device.type == "meta":  # tensors without data: nothing could be computed
            raise ValueError
    except (RuntimeError, TypeError, ValueError):
        raise InvalidInputError(f"--device {name} is not a device name: use auto, cpu, cuda or cuda:N") from None
    backend = getattr(torch, device.type, None) if device.type != "cpu" else None
    available = getattr(backend, "is_available", None)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"--device {name}, but no CUDA device is available")
    if callable(available) and not available():
        raise InvalidInputError(f"--device {name}, but this machine has no {device.type} device: use auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InvalidInputError(f"--device {name}, but this machine has {torch.cuda.device_count()} CUDA device(s): "
                                f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device
