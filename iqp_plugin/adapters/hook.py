"""Generic adapter: inject at a named submodule of ANY BasicSR arch through a forward hook.

    adapter: hook
    adapter_opt: {at: conv_after_body}     # RRDBNet: conv_body; EDSR: conv_after_body

The submodule's output is both ``feat`` and ``z``; the plug-in's result replaces it and the host's
own forward carries on unchanged. The submodule must output a (B, C, H, W) tensor; C is read from
its ``out_channels`` or given as ``channels``.

With ``host: auto`` the host is spandrel's model of the checkpoint (spandrel's submodule names, e.g.
``model.1.sub.<num_blocks>`` for the last body conv of an ESRGAN/RRDBNet), called on ``image_range``
[0, 1] as spandrel's models are, and tiles are cut to the input multiple spandrel gives.
"""
from __future__ import annotations

import difflib

import torch
from torch import nn

from iqp_plugin.adapters.base import Bottleneck, HostAdapter, Inject, register_adapter
from iqp_plugin.errors import InvalidInputError


class _Stop(Exception):
    def __init__(self, feat: torch.Tensor):
        super().__init__()
        self.feat = feat


@register_adapter
class HookAdapter(HostAdapter):
    name = "hook"

    def __init__(self, host: nn.Module, at: str, channels: int | None = None,
                 image_range: tuple[float, float] = (0.0, 1.0)):
        super().__init__(host)
        names = [n for n, _ in host.named_modules() if n]
        if at not in names:
            close = difflib.get_close_matches(at, names, n=5, cutoff=0.4)
            hint = (f"close matches: {', '.join(close)}" if close
                    else f"top-level submodules: {', '.join(n for n in names if '.' not in n)}")
            raise InvalidInputError(f"adapter_opt.at: '{type(host).__name__}' has no submodule '{at}' ({hint}).")
        self.at = at
        self.module = host.get_submodule(at)
        self._channels = channels if channels is not None else getattr(self.module, "out_channels", None)
        if self._channels is None:
            raise InvalidInputError(f"adapter_opt: cannot tell the channel count of '{at}'; add channels: <C>.")
        self.image_range = tuple(image_range)

    @classmethod
    def from_descriptor(cls, descriptor, **opt) -> HookAdapter:
        """Spandrel's model, hooked; ``size_multiple`` from spandrel's size requirements."""
        adapter = cls(descriptor.model, **opt)
        adapter.size_multiple = descriptor.size_requirements.multiple_of
        return adapter

    @property
    def channels(self) -> int:
        return self._channels

    def run(self, x: torch.Tensor, inject: Inject | None = None, **host_kwargs) -> torch.Tensor:
        if inject is None:
            return self.host(x, **host_kwargs)
        handle = self.module.register_forward_hook(lambda _m, _i, out: inject(Bottleneck(feat=out, z=out)))
        try:
            return self.host(x, **host_kwargs)
        finally:
            handle.remove()

    def features(self, x: torch.Tensor, **host_kwargs) -> torch.Tensor:
        def stop(_m, _i, out):
            raise _Stop(out)

        handle = self.module.register_forward_hook(stop)
        try:
            self.host(x, **host_kwargs)
        except _Stop as s:
            return s.feat
        finally:
            handle.remove()
        raise RuntimeError(f"submodule '{self.at}' was never called during the host's forward.")
