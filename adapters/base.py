"""What every host adapter provides: where the host's encoder ends and how to run the rest.

An adapter never owns or changes the host: it holds a reference and calls the host's own submodules.
The bottleneck is described by :class:`Bottleneck`:

* ``feat`` (B, C, h, w): the host encoder's features, what the plug-in predicts codes from;
* ``z``    (B, C, h, w): the tensor that enters the host decoder (same C as ``feat``); the plug-in may
  replace it, everything else stays as the host computed it;
* ``ctx``: whatever else the decoder needs (skip features, attention memories, residuals).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch
from torch import nn

Inject = Callable[["Bottleneck"], torch.Tensor]


@dataclass
class Bottleneck:
    feat: torch.Tensor
    z: torch.Tensor
    ctx: dict = field(default_factory=dict)


class HostAdapter:
    """Base class of adapters. Subclasses set the class attributes and implement encode/decode."""

    #: name used in ``IQPWrapper(adapter=...)``
    name: ClassVar[str] = ""
    #: host class names this adapter is chosen for when ``adapter`` is not given
    host_types: ClassVar[tuple[str, ...]] = ()
    #: value range of the host's input and output images
    image_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    #: side of the one square input size the host takes (aligned faces), or None for any size
    input_size: int | None = None

    def __init__(self, host: nn.Module):
        self.host = host

    @property
    def channels(self) -> int:
        """Channel count C of ``feat`` and ``z``."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor, **host_kwargs) -> Bottleneck:
        raise NotImplementedError

    def decode(self, b: Bottleneck, **host_kwargs) -> torch.Tensor:
        raise NotImplementedError

    def run(self, x: torch.Tensor, inject: Inject | None = None, **host_kwargs) -> torch.Tensor:
        """Host forward: encoder -> (optional ``inject(bottleneck)`` replacing ``z``) -> decoder."""
        b = self.encode(x, **host_kwargs)
        if inject is not None:
            b.z = inject(b)
        return self.decode(b, **host_kwargs)

    def features(self, x: torch.Tensor, **host_kwargs) -> torch.Tensor:
        """Only the encoder's bottleneck features (codebook targets are taken from clean images)."""
        return self.encode(x, **host_kwargs).feat

    def codebook(self) -> torch.Tensor | None:
        """The host's own (K, C) codebook in ``feat`` space, or None when the host has none."""
        return None

    def decoder_blocks(self) -> list[nn.Module]:
        """Host blocks between ``z`` and the output whose activations training may recompute in the
        backward pass instead of storing them (none by default). The blocks must not nest."""
        return []


ADAPTERS: dict[str, type[HostAdapter]] = {}


def register_adapter(cls: type[HostAdapter]) -> type[HostAdapter]:
    """Class decorator adding an adapter to :data:`ADAPTERS` under ``cls.name``."""
    if not cls.name or cls.name in ADAPTERS:
        raise ValueError(f"adapter name {cls.name!r} is empty or taken")
    ADAPTERS[cls.name] = cls
    return cls


def adapter_for(host: nn.Module, name: str | None = None, opt: dict | None = None) -> HostAdapter:
    """Build the adapter ``name`` for ``host``, or pick it from the host's class when ``name`` is None."""
    opt = dict(opt or {})
    if name is None:
        host_type = type(host).__name__
        matches = [cls for cls in ADAPTERS.values() if host_type in cls.host_types]
        if not matches:
            raise ValueError(
                f"No adapter knows host type '{host_type}'. Use adapter: hook with "
                f"adapter_opt: {{at: <submodule name>}} (e.g. 'conv_after_body'), or one of: {', '.join(sorted(ADAPTERS))}.")
        cls = matches[0]
    elif name in ADAPTERS:
        cls = ADAPTERS[name]
    else:
        raise ValueError(f"Unknown adapter '{name}'. Known adapters: {', '.join(sorted(ADAPTERS))}.")
    try:
        return cls(host, **opt)
    except TypeError as err:
        raise TypeError(f"adapter_opt {sorted(opt)} does not fit adapter '{cls.name}': {err}") from err
