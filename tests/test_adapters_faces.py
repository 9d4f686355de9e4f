"""Face hosts: CodeFormer, RestoreFormer and RestoreFormer++ archs and their adapters (random weights, CPU)."""
import pytest
import spandrel
import spandrel_extra_arches
import torch
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY

import iqp_plugin  # noqa: F401  (basicsr import fix; registers archs and adapters)
from iqp_plugin.adapters import adapter_for
from iqp_plugin.adapters.codeformer import CodeFormerAdapter
from iqp_plugin.adapters.restoreformer import RestoreFormerAdapter
from iqp_plugin.io.host_checkpoint import extract_state_dict

#: a RestoreFormer small enough for CPU tests that keeps the 16x16 code grid (64 px input, 2 down-samplings)
TINY_RF = {"ch": 32, "ch_mult": (1, 2, 2), "resolution": 64, "n_embed": 64, "embed_dim": 64, "z_channels": 64}

#: RestoreFormer++ (key, shape) pairs read from the official VQVAEGANMultiHeadTransformer
#: (wzhouxiff/RestoreFormerPlusPlus, RestoreFormer/modules/vqvae/vqvae_arch.py) with the release config
#: (ch 64, ch_mult [1,2,2,4,4,8], attn_resolutions [16], ex_multi_scale_num 1, head_size 4)
OFFICIAL_RFPP_KEYS = {
    "encoder.conv_in.weight": (64, 3, 3, 3),
    "encoder.down.0.block.0.norm1.weight": (64,),
    "encoder.down.5.attn.1.q.weight": (512, 512, 1, 1),
    "encoder.mid.attn_1.norm2.weight": (512,),
    "encoder.conv_out.weight": (256, 512, 3, 3),
    "quant_conv.weight": (256, 256, 1, 1),
    "quantize.embedding.weight": (1024, 256),
    "post_quant_conv.weight": (256, 256, 1, 1),
    "decoder.conv_in.weight": (512, 256, 3, 3),
    "decoder.mid.attn_1.proj_out.weight": (512, 512, 1, 1),
    "decoder.up.5.attn.2.k.weight": (512, 512, 1, 1),
    "decoder.up.4.block.0.nin_shortcut.weight": (256, 512, 1, 1),
    "decoder.up.4.attn.0.q.weight": (256, 256, 1, 1),
    "decoder.up.4.attn.2.norm2.bias": (256,),
    "decoder.up.1.upsample.conv.weight": (128, 128, 3, 3),
    "decoder.conv_out.weight": (3, 64, 3, 3),
}


def build(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    """A registered arch with seeded random weights, in eval mode."""
    torch.manual_seed(seed)
    return ARCH_REGISTRY.get(name)(**kwargs).eval()


def image(size: int, seed: int = 1) -> torch.Tensor:
    """A random 1x3xsize x size image in [-1, 1]."""
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def reloaded(model: torch.nn.Module, name: str, **kwargs) -> torch.nn.Module:
    """A fresh instance (other random weights) that loads ``model``'s state dict strictly."""
    fresh = build(name, seed=1, **kwargs)
    assert not all(torch.equal(a, b) for a, b in zip(fresh.parameters(), model.parameters(), strict=True))
    fresh.load_state_dict(model.state_dict(), strict=True)
    assert_same_weights(fresh.state_dict(), model.state_dict())
    return fresh


@pytest.fixture(scope="module")
def codeformer_host():
    """A full-size random CodeFormer."""
    return build("CodeFormer")


@pytest.fixture(scope="module")
def codeformer(codeformer_host):
    """The host, an input, and the outputs at w=0 and w=0.5 of a fresh instance that loaded its state dict
    (state-dict round trip: the adapter on the original must give the same images)."""
    model, x = codeformer_host, image(512)
    copy = reloaded(model, "CodeFormer")
    with torch.inference_mode():
        refs = {0.0: copy(x, weight=0.0)[0], 0.5: copy(x, w=0.5)[0]}  # ``w``: the official keyword
    return model, x, refs


@torch.inference_mode()
def test_codeformer_adapter_equals_reloaded_host(codeformer):
    model, x, refs = codeformer
    adapter = adapter_for(model)
    assert isinstance(adapter, CodeFormerAdapter) and adapter.image_range == (-1.0, 1.0)
    assert adapter.channels == 256 and adapter.codebook().shape == (1024, 256)
    assert not torch.equal(refs[0.0], refs[0.5])  # the skip fusion is exercised
    assert torch.equal(adapter.run(x, w=0.0), refs[0.0])
    seen = []
    assert torch.equal(adapter.run(x, inject=lambda b: seen.append(b) or b.z, weight=0.5), refs[0.5])
    assert seen[0].feat.shape == seen[0].z.shape == (1, 256, 16, 16)
    assert sorted(seen[0].ctx["skips"]) == ["128", "256", "32", "64"]
    with pytest.raises(ValueError, match="512x512"):
        adapter.encode(image(256))


def test_codeformer_spandrel_detection(codeformer_host):
    state = codeformer_host.state_dict()
    spandrel_extra_arches.install(ignore_duplicates=True)
    descriptor = spandrel.ModelLoader().load_from_state_dict(dict(state))
    assert descriptor.architecture.id == "CodeFormer"
    assert descriptor.model.connect_list == ["32", "64", "128", "256"]
    assert_same_weights(descriptor.model.state_dict(), state)


def test_codeformer_official_yaml_kwargs(codeformer_host, tmp_path):
    """network_g of the official options/CodeFormer_inpainting.yml, with a stage-1 VQGAN file."""
    vqgan = {k: v for k, v in codeformer_host.state_dict().items()
             if k.split(".")[0] in ("encoder", "quantize", "generator")}
    torch.save({"params_ema": vqgan}, tmp_path / "vqgan.pth")
    opt = {"type": "CodeFormer", "dim_embd": 512, "n_head": 8, "n_layers": 9, "codebook_size": 1024,
           "connect_list": ["32", "64", "128"], "fix_modules": ["quantize", "generator"],
           "vqgan_path": str(tmp_path / "vqgan.pth")}
    model = build_network(opt)
    assert type(model).__name__ == "CodeFormer" and sorted(model.fuse_convs_dict) == ["128", "32", "64"]
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in vqgan.items())
    assert not any(p.requires_grad for p in model.generator.parameters())
    assert all(p.requires_grad for p in model.encoder.parameters())

    del vqgan["generator.blocks.0.weight"]
    torch.save({"params_ema": vqgan}, tmp_path / "vqgan.pth")
    with pytest.raises(RuntimeError, match="generator.blocks.0.weight"):
        build_network(opt)


@pytest.mark.parametrize("name", ["RestoreFormer", "RestoreFormerPP"])
@torch.inference_mode()
def test_restoreformer_tiny_adapter_equals_reloaded_host(name):
    model, x = build(name, **TINY_RF), image(64)
    ref = reloaded(model, name, **TINY_RF)(x)[0]
    adapter = adapter_for(model)
    assert isinstance(adapter, RestoreFormerAdapter) and adapter.image_range == (-1.0, 1.0)
    assert torch.equal(adapter.run(x), ref)
    b = adapter.encode(x)
    assert b.feat.shape == b.z.shape == (1, 64, 16, 16) and adapter.channels == 64
    assert adapter.codebook().shape == (64, 64)


@torch.inference_mode()
def test_restoreformer_full_size_adapter_equals_reloaded_host_and_spandrel_detection():
    """The release config; on a 256 px input (any multiple of 32 works, 512 px costs 4x on CPU)."""
    restoreformer, x = build("RestoreFormer"), image(256)
    assert torch.equal(adapter_for(restoreformer).run(x), reloaded(restoreformer, "RestoreFormer")(x)[0])
    state = restoreformer.state_dict()
    descriptor = spandrel.ModelLoader().load_from_state_dict(dict(state))
    assert descriptor.architecture.id == "RestoreFormer"
    assert_same_weights(descriptor.model.state_dict(), state)


def test_restoreformer_pp_has_the_official_key_layout():
    with torch.device("meta"):
        plus = ARCH_REGISTRY.get("RestoreFormerPP")().state_dict()
        base = ARCH_REGISTRY.get("RestoreFormer")().state_dict()
    for key, shape in OFFICIAL_RFPP_KEYS.items():
        assert tuple(plus[key].shape) == shape, key
    extra = set(plus) - set(base)  # 32 px cross-attention: 3 blocks x (norm1, norm2, q, k, v, proj_out) x 2
    assert set(base) <= set(plus) and len(extra) == 36
    assert {".".join(k.split(".")[:5]) for k in extra} == {f"decoder.up.4.attn.{i}" for i in range(3)}
    assert not any(k.startswith("encoder.down.4.attn") for k in plus)


def test_restoreformer_pp_lightning_checkpoint_loads_strictly():
    """The official .ckpt layout: Lightning ``state_dict`` with ``vqvae.`` keys next to the loss modules."""
    state = build("RestoreFormerPP", **TINY_RF).state_dict()
    ckpt = {"state_dict": {**{f"vqvae.{k}": v for k, v in state.items()},
                           "loss.discriminator.main.0.weight": torch.zeros(1)}}
    fresh = build("RestoreFormerPP", seed=1, **TINY_RF)
    fresh.load_state_dict(extract_state_dict(ckpt), strict=True)
    assert_same_weights(fresh.state_dict(), state)


# ---------------------------------------------------------------- through IQPWrapper
def wrapper_around(host: torch.nn.Module, host_type: str, plugin: dict | None, **host_kwargs):
    """An IQPWrapper whose host carries ``host``'s weights."""
    from iqp_plugin import IQPWrapper

    wrapper = IQPWrapper(host={"type": host_type, **host_kwargs}, plugin=plugin)
    wrapper.host.load_state_dict(host.state_dict(), strict=True)
    return wrapper


def one_plugin_step(wrapper, x, **host_kwargs):
    """One Adam step on an L1 loss; returns the host state before it."""
    before = {k: v.clone() for k, v in wrapper.host.state_dict().items()}
    wrapper.train()
    opt = torch.optim.Adam([p for p in wrapper.parameters() if p.requires_grad], lr=1e-3)
    torch.nn.functional.l1_loss(wrapper(x, score=0.9, **host_kwargs), torch.zeros_like(x)).backward()
    opt.step()
    return before


def assert_plugin_only_trained(wrapper, before):
    assert all(p.grad is None and not p.requires_grad for p in wrapper.host.parameters())
    assert wrapper.plugin.out_conv.weight.grad.abs().sum() > 0
    assert all(torch.equal(v, before[k]) for k, v in wrapper.host.state_dict().items())
    assert not wrapper.host.training


def test_codeformer_through_wrapper_matches_spandrel_and_trains_plugin_only(codeformer):
    model, x, refs = codeformer
    with torch.no_grad():
        bare = wrapper_around(model, "CodeFormer", None)
        assert torch.equal(bare(x, w=0.0), refs[0.0]) and torch.equal(bare(x, w=0.5), refs[0.5])
        del bare
        wrapped = wrapper_around(model, "CodeFormer", {"share_host_codebook": True})
        assert (wrapped(x, w=0.5) - refs[0.5]).abs().max() <= 1e-5
    # the common branch is the host's codebook itself, so only the HQ branch is new
    assert "codebook.common.embed" not in wrapped.plugin_state_dict()
    assert wrapped.plugin.codebook.common.weight.data_ptr() == wrapped.host.quantize.embedding.weight.data_ptr()
    before = one_plugin_step(wrapped, x, w=0.5)
    assert_plugin_only_trained(wrapped, before)


@pytest.mark.parametrize("name", ["RestoreFormer", "RestoreFormerPP"])
def test_restoreformer_tiny_through_wrapper(name):
    model, x = build(name, **TINY_RF), image(64)
    with torch.no_grad():
        ref = model(x)[0]
        assert torch.equal(wrapper_around(model, name, None, **TINY_RF)(x), ref)
        wrapped = wrapper_around(model, name, {"dim": 64, "depth": 2, "heads": 4, "share_host_codebook": True},
                                 **TINY_RF)
        assert (wrapped(x) - ref).abs().max() <= 1e-5
    assert_plugin_only_trained(wrapped, one_plugin_step(wrapped, x))


def test_restoreformer_full_size_through_wrapper():
    """The release config on a 256 px input (8x8 codes, pooled up to the plug-in's 16x16 grid)."""
    model, x = build("RestoreFormer"), image(256)
    with torch.no_grad():
        ref = model(x)[0]
        assert torch.equal(wrapper_around(model, "RestoreFormer", None)(x), ref)
        wrapped = wrapper_around(model, "RestoreFormer", {})
        assert (wrapped(x) - ref).abs().max() <= 1e-5
    assert_plugin_only_trained(wrapped, one_plugin_step(wrapped, x))


def saved_bytes_and_grads(wrapper, x, **host_kwargs):
    """Bytes the autograd graph keeps for backward, and the plug-in's gradients, for one L1 step."""
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    wrapper.train().zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = torch.nn.functional.l1_loss(wrapper(x, score=0.9, **host_kwargs), torch.zeros_like(x))
    loss.backward()
    return sum(saved), {k: p.grad.clone() for k, p in wrapper.plugin.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["CodeFormer", "RestoreFormer", "RestoreFormerPP"])
def test_recomputed_decoder_gives_same_gradients_with_less_stored(name, codeformer_host):
    """Activation checkpointing of the frozen decoder: same plug-in gradients, fewer tensors saved for
    backward at the end of the forward (what the outer hook sees; the checkpointed blocks recompute theirs
    in the backward pass: the real peak memory is measured by benchmarks/overhead.py), and the host's
    modules are left as they were."""
    host, x, kwargs = ((codeformer_host, image(512), {"w": 0.5}) if name == "CodeFormer"
                       else (build(name, **TINY_RF), image(64), {}))
    wrapper = wrapper_around(host, name, {"dim": 32, "depth": 1, "heads": 2, "common_size": 16, "hq_size": 16},
                             **({} if name == "CodeFormer" else TINY_RF))
    torch.nn.init.normal_(wrapper.plugin.out_conv.weight, std=0.02)  # let the loss reach the Transformer
    blocks = wrapper.adapter.decoder_blocks()
    host_modules = {id(m) for m in wrapper.host.modules()}
    assert len(blocks) > 5 and all(id(b) in host_modules for b in blocks)
    stored, grads = saved_bytes_and_grads(wrapper, x, **kwargs)
    wrapper.recompute_decoder = False
    stored_all, grads_all = saved_bytes_and_grads(wrapper, x, **kwargs)
    print(f"{name}: stored for backward {stored / 2**20:.1f} MiB recomputed vs {stored_all / 2**20:.1f} MiB")
    assert stored < 0.5 * stored_all
    assert grads.keys() == grads_all.keys() and len(grads) > 10
    for k in grads:
        torch.testing.assert_close(grads[k], grads_all[k], rtol=1e-5, atol=1e-7, msg=k)
    assert not any("forward" in vars(b) for b in blocks)
    assert sorted(wrapper.host.state_dict()) == sorted(host.state_dict())
