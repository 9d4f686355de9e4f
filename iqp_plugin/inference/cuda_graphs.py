"""CUDA graphs for the plug-in at inference: one capture per input shape and score, then a replay per call.

At batch 1 the plug-in is about a hundred small kernels, and on a fast GPU their launches, not their
arithmetic, make its cost (benchmarks/RESULTS.md, overhead). A CUDA graph launches them all at once.
:func:`graph_plugin` swaps a wrapper's plug-in for a :class:`GraphedPlugin`, which replays a captured graph
whenever the call matches one it has seen (same shapes, dtype, device and score, no gradient, eval mode)
and runs the plug-in as usual otherwise, so outputs never depend on whether a graph was used. Weights must
not change after the first capture (a graph reads the weights it was captured with, by address).
"""
from __future__ import annotations

import torch
from torch import nn

from iqp_plugin.archs.plugin import IQPPlugin, PluginOutput


class GraphedPlugin(nn.Module):
    """An :class:`IQPPlugin` whose CUDA inference calls replay captured graphs (see the module docstring)."""

    def __init__(self, plugin: IQPPlugin, warmup: int = 3):
        super().__init__()
        self.plugin = plugin
        self.warmup = warmup
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, PluginOutput]] = {}

    def __getattr__(self, name: str):  # cfg, codebook, mode, ... of the plug-in
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["plugin"], name)

    def graphable(self, feat: torch.Tensor, score) -> bool:
        """Whether this call can replay a graph: CUDA, eval mode, no gradient, a number (or None) as score."""
        return (feat.is_cuda and not self.plugin.training and not torch.is_grad_enabled()
                and (score is None or isinstance(score, (int, float))))

    def forward(self, feat: torch.Tensor, z: torch.Tensor, score=None) -> PluginOutput:
        if not self.graphable(feat, score):
            return self.plugin(feat, z, score)
        key = (tuple(feat.shape), tuple(z.shape), feat.dtype, z.dtype, feat.device, score)
        if key not in self._graphs:
            self._graphs[key] = self._capture(feat, z, score)
        graph, static_feat, static_z, out = self._graphs[key]
        static_feat.copy_(feat)
        static_z.copy_(z)
        graph.replay()
        return PluginOutput(out.z.clone(), out.logits_common, out.logits_hq, out.codes, out.grid)

    def _capture(self, feat: torch.Tensor, z: torch.Tensor, score):
        static_feat, static_z = feat.clone(), z.clone()
        self.plugin.cache_condition = True  # the condition is computed once, before capture, and reused
        side = torch.cuda.Stream(feat.device)
        side.wait_stream(torch.cuda.current_stream(feat.device))
        with torch.cuda.stream(side):  # warm-up (cuBLAS workspaces, the condition cache) off the capture
            for _ in range(self.warmup):
                self.plugin(static_feat, static_z, score)
        torch.cuda.current_stream(feat.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.plugin(static_feat, static_z, score)
        return graph, static_feat, static_z, out


def graph_plugin(wrapper) -> None:
    """Replace ``wrapper.plugin`` by a :class:`GraphedPlugin` around it (no-op without a plug-in)."""
    if wrapper.plugin is not None and not isinstance(wrapper.plugin, GraphedPlugin):
        wrapper.plugin = GraphedPlugin(wrapper.plugin)
