"""``IQPWrapper``: a BasicSR arch that runs a frozen host with the IQP plug-in at its bottleneck.

    network_g:
      type: IQPWrapper
      host: {type: SwinIR, upscale: 4, img_size: 64, ...}   # any registered BasicSR arch, or 'auto'
      host_checkpoint: weights/host.pth                      # params_ema / params / state_dict / safetensors
      adapter: null                                          # chosen from the host type, or 'hook'
      adapter_opt: {}                                        # e.g. {at: conv_after_body} for 'hook'
      plugin: {}                                             # null: bare host; {}: the host's default recipe
      recompute_decoder: true                                # training: recompute host decoder activations

``host: auto`` reads the host from ``host_checkpoint`` alone: spandrel detects the architecture and its
hyper-parameters (:func:`iqp_plugin.io.host_checkpoint.describe_host`), the adapter is picked from the detected
architecture and rebuilds the host class it expects, so the result is the host a hand-written ``host: {...}``
with the same options gives (see ``iqp_plugin.adapters.base``). Architectures no adapter covers take ``adapter: hook``.

Data path: ``host encoder -> plug-in(feat, z, score) -> host decoder``. The host is frozen (no
gradients, always in eval mode) and never modified; only ``plugin`` is trainable.

Training memory: a loss on the output image back-propagates through the frozen host decoder, whose
stored activations dominate a plug-in-only step. With ``recompute_decoder`` (the default) the adapter's
``decoder_blocks`` run under activation checkpointing while training: each block keeps only its input
and recomputes its activations in the backward pass (less memory, one more decoder forward per step).
Outputs and gradients are the same either way.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.utils.checkpoint import checkpoint

from iqp_plugin.adapters import Bottleneck, adapter_for, check_host_opt
from iqp_plugin.archs.plugin import IQPPlugin, PluginOutput
from iqp_plugin.errors import InvalidInputError
from iqp_plugin.io.host_checkpoint import describe_host, load_weights
from iqp_plugin.io.registry import build_arch, check_host_options


@ARCH_REGISTRY.register()
class IQPWrapper(nn.Module):
    """Host restorer + IQP plug-in. ``plugin=None`` gives the bare host through its adapter; ``host="auto"``
    builds the host that ``host_checkpoint`` holds, as spandrel detects it."""

    def __init__(self, host: dict | str, plugin: dict | None = None, host_checkpoint: str | None = None,
                 adapter: str | None = None, adapter_opt: dict | None = None, recompute_decoder: bool = True):
        super().__init__()
        self.recompute_decoder = recompute_decoder
        if host == "auto":
            if not host_checkpoint:
                raise InvalidInputError("host: auto reads the host from its checkpoint: give host_checkpoint: FILE")
            descriptor = describe_host(host_checkpoint)
            try:
                self.adapter = adapter_for(descriptor, adapter, adapter_opt)
            except ValueError as err:
                raise InvalidInputError(f"{host_checkpoint}: {err}") from err
            self.host = self.adapter.host
        elif isinstance(host, str):
            raise InvalidInputError(f"host must be 'auto' or an option dict {{type: <arch>, ...}}, got {host!r}")
        else:
            check_host_options(host, "host")  # names first: a misspelt key would mislead the checks below
            check_host_opt(host)
            self.host = build_arch(host, where="host")
            if host_checkpoint:
                load_weights(self.host, host_checkpoint)
            self.adapter = adapter_for(self.host, adapter, adapter_opt)
        self.host.requires_grad_(False).eval()
        self.host_checkpoint = host_checkpoint
        self.plugin = None
        if plugin is not None:
            has_codebook = self.adapter.codebook() is not None
            self.plugin = IQPPlugin(self.adapter.channels,
                                    host_codebook=self.adapter.codebook if has_codebook else None,
                                    **{"preset": self.adapter.default_recipe, **plugin})

    def train(self, mode: bool = True) -> IQPWrapper:
        super().train(mode)
        self.host.eval()
        return self

    def forward(self, lq: torch.Tensor, score=None, **host_kwargs) -> torch.Tensor:
        """Restore ``lq`` (in the host's image range) asking the plug-in for quality ``score``."""
        return self.restore(lq, score, **host_kwargs)[0]

    def restore(self, lq: torch.Tensor, score=None, **host_kwargs) -> tuple[torch.Tensor, PluginOutput | None]:
        """Like ``forward`` but also returns the plug-in's logits and codes (for training losses)."""
        aux: list[PluginOutput] = []

        def inject(b: Bottleneck) -> torch.Tensor:
            aux.append(self.plugin(b.feat, b.z, score))
            return aux[-1].z

        return self._run(lq, inject if self.plugin is not None else None, **host_kwargs), (aux[-1] if aux else None)

    def _run(self, lq: torch.Tensor, inject, **host_kwargs) -> torch.Tensor:
        recompute = self.recompute_decoder and self.training and torch.is_grad_enabled()
        with _recomputed(self.adapter.decoder_blocks() if recompute else []):
            return self.adapter.run(lq, inject, **host_kwargs)

    def plugin_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the plug-in's weights and codebooks (host weights are referred to, never copied)."""
        if self.plugin is None:
            raise InvalidInputError("This wrapper was built with plugin=None: there is no plug-in state.")
        return {k: v.detach().clone() for k, v in self.plugin.state_dict().items()}

    def load_plugin_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load plug-in weights saved by :meth:`plugin_state_dict` (strict)."""
        if self.plugin is None:
            raise InvalidInputError("This wrapper was built with plugin=None: build it with plugin={...} first.")
        self.plugin.load_state_dict(state, strict=True)


@contextlib.contextmanager
def _recomputed(blocks: list[nn.Module]) -> Iterator[None]:
    """Run ``blocks`` under (non-reentrant) activation checkpointing for the duration of the context.

    Only each block's instance ``forward`` is shadowed, and put back as it was on exit: the host's modules,
    parameters and state dict are untouched. The frozen host runs in eval mode, so no RNG state is saved.
    """
    blocks = list({id(b): b for b in blocks}.values())
    before = [vars(b).get("forward") for b in blocks]
    for block in blocks:
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False, preserve_rng_state=False)
    try:
        yield
    finally:
        for block, forward in zip(blocks, before, strict=False):
            if forward is None:
                del block.forward
            else:
                block.forward = forward
