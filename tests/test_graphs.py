"""CUDA graphs of the plug-in (iqp_plugin.inference.cuda_graphs): eager fallback wherever a graph cannot be used; on a
GPU (skipped here), replays equal the eager plug-in."""
import pytest
import torch

from iqp_plugin import IQPWrapper
from iqp_plugin.inference.cuda_graphs import GraphedPlugin, graph_plugin
from tests.conftest import TINY_PLUGIN, TINY_SWINIR


def opened(device="cpu") -> IQPWrapper:
    """A tiny wrapper whose plug-in acts on the output (its zero-initialised output conv opened)."""
    torch.manual_seed(0)
    w = IQPWrapper(host=TINY_SWINIR, plugin=TINY_PLUGIN).eval().to(device)
    torch.nn.init.normal_(w.plugin.out_conv.weight, std=0.1)
    return w


def test_cpu_and_training_calls_run_the_plugin_itself():
    w = opened()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        eager = w(x, score=0.7)
    graph_plugin(w)
    graph_plugin(w)  # idempotent
    assert isinstance(w.plugin, GraphedPlugin) and not isinstance(w.plugin.plugin, GraphedPlugin)
    assert w.plugin.cfg["patch"] == TINY_PLUGIN["patch"]  # the plug-in's attributes show through
    with torch.no_grad():
        assert torch.equal(w(x, score=0.7), eager)
    assert not w.plugin._graphs  # nothing captured on the CPU
    w.train()
    w(x, score=0.7).sum().backward()  # gradients still reach the plug-in's weights
    assert w.plugin.plugin.out_conv.weight.grad is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device (none here)")
def test_replay_equals_eager_on_cuda():
    w = opened("cuda")
    x = torch.rand(1, 3, 32, 32, device="cuda")
    with torch.no_grad():
        eager = [w(x, score=s) for s in (0.3, 0.9)]
        graph_plugin(w)
        for _ in range(2):  # capture, then replay
            replayed = [w(x, score=s) for s in (0.3, 0.9)]
            for a, b in zip(eager, replayed, strict=False):
                assert (a - b).abs().max() <= 1e-5
        assert len(w.plugin._graphs) == 2  # one graph per score
