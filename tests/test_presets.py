"""Plug-in presets: the lean default's size on the full hosts, its parts, and the standard preset kept for the ablation."""

import pytest
import torch

from benchmarks.overhead import HOST_CONFIGS
from iqp_plugin import IQPWrapper
from iqp_plugin.codebook import Codebook, HostCodebook
from iqp_plugin.plugin import IQPPlugin, SimilarityHead, plugin_options
from tests.conftest import TINY_SWINIR

#: the issue's limits: added parameters (trainable + codebook entries) / host parameters
LIMITS = {"codeformer": 0.015, "restoreformer": 0.015, "swinir": 0.10}


def added(plugin: IQPPlugin) -> int:
    codebooks = sum(m.embed.numel() for m in plugin.modules() if isinstance(m, Codebook))
    return sum(p.numel() for p in plugin.parameters()) + codebooks


@pytest.mark.parametrize("host", LIMITS)
def test_lean_default_within_the_parameter_budget(host):
    torch.manual_seed(0)
    wrapper = IQPWrapper(host=HOST_CONFIGS["full"][host]["opt"], plugin={})
    host_params = sum(p.numel() for p in wrapper.host.parameters())
    assert wrapper.plugin.cfg["preset"] == "lean"
    assert added(wrapper.plugin) <= LIMITS[host] * host_params
    codes = wrapper.adapter.codebook()
    assert isinstance(wrapper.plugin.codebook.common, HostCodebook) == (codes is not None)  # borrowed where there is one
    standard = IQPPlugin(wrapper.adapter.channels, preset="standard")
    assert added(standard) > 3 * added(wrapper.plugin)


def test_standard_preset_is_the_first_default():
    """Checkpoints trained before the lean default load into the standard preset: same names and shapes."""
    shapes = {k: tuple(v.shape) for k, v in IQPPlugin(256, preset="standard").state_dict().items()}
    assert shapes["blocks.0.modulation.1.weight"] == (6 * 256, 256)
    assert shapes["out_modulation.1.weight"] == (2 * 256, 256)
    assert shapes["head_common.weight"] == (1024, 256) and shapes["head_hq.weight"] == (1024, 256)
    assert shapes["codebook.common.embed"] == (1024, 256) and len([k for k in shapes if k.startswith("blocks.")]) > 0
    assert {k.split(".")[0] for k in shapes} == {"pos", "in_norm", "in_proj", "score_embed", "blocks", "out_modulation",
                                                 "codebook", "head_common", "head_hq", "out_conv"}
    assert not any(k.endswith("table") for k in shapes)


@pytest.mark.parametrize("channels, dim, heads", [(256, 128, 4), (180, 96, 3), (64, 64, 2), (32, 64, 2)])
def test_lean_width_follows_the_host(channels, dim, heads):
    cfg = plugin_options(channels, False, {})
    assert (cfg["dim"], cfg["heads"]) == (dim, heads)
    assert cfg["cond"] == "adaln_single" and cfg["index_head"] == "similarity" and cfg["share_host_codebook"] is False


def test_preset_options_are_checked():
    with pytest.raises(ValueError, match="Unknown plugin preset 'tiny'; presets: lean, standard"):
        plugin_options(64, False, {"preset": "tiny"})
    with pytest.raises(ValueError, match="multiple of heads"):
        plugin_options(64, False, {"dim": 48, "heads": 5})
    with pytest.raises(ValueError, match="index_head must be one of"):
        plugin_options(64, False, {"index_head": "cosine"})


def test_similarity_head_picks_the_nearest_code_at_any_feature_scale():
    torch.manual_seed(0)
    head = SimilarityHead(8, 16)
    codes = torch.randn(32, 16)
    h = torch.randn(2, 5, 8)
    with torch.no_grad():
        p = head.proj(h)
        nearest = torch.cdist(p.flatten(0, 1), codes).argmin(-1)
        logits = head(h, codes)
        assert torch.equal(logits.flatten(0, 1).argmax(-1), nearest)
        head.proj.weight.mul_(10), head.proj.bias.mul_(10)  # features and codes 10x larger: same logits
        assert torch.allclose(head(h, codes * 10), logits, atol=1e-4)
    assert logits.shape == (2, 5, 32) and float(head.log_tau.exp()) == 1.0


def test_lean_plugin_trains_through_the_similarity_heads():
    """Cross-entropy on the similarity logits reaches the projection and the temperature (no per-code weights)."""
    torch.manual_seed(0)
    w = IQPWrapper(host=TINY_SWINIR, plugin={"patch": 4}).train()
    out, aux = w.restore(torch.rand(2, 3, 16, 16), score=0.8)
    targets = torch.zeros(aux.logits_common.shape[:2], dtype=torch.long)
    torch.nn.functional.cross_entropy(aux.logits_common.flatten(0, 1), targets.flatten()).backward()
    head = w.plugin.head_common
    assert head.proj.weight.grad.abs().sum() > 0 and head.log_tau.grad is not None
    assert aux.logits_common.shape[-1] == w.plugin.codebook.common.size == 512
