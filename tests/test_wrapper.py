"""IQPWrapper on SwinIR and on the generic hook adapter; plug-in behaviour; round trips."""
import pytest
import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY

from iqp_plugin import IQPWrapper
from iqp_plugin.archs.plugin import IQPPlugin
from tests.conftest import TINY_PLUGIN, TINY_SWINIR

RRDB = dict(type="RRDBNet", num_in_ch=3, num_out_ch=3, num_feat=16, num_block=1, num_grow_ch=8, scale=2)
EDSR = dict(type="EDSR", num_in_ch=3, num_out_ch=3, num_feat=16, num_block=2, upscale=2)
HOSTS = {
    "swinir": (TINY_SWINIR, None, None),
    "rrdb-hook": (RRDB, "hook", {"at": "conv_body"}),
    "edsr-hook": (EDSR, "hook", {"at": "conv_after_body"}),
}


def build(name, plugin=None, **plugin_overrides):
    host, adapter, adapter_opt = HOSTS[name]
    torch.manual_seed(0)
    plugin = None if plugin is None else {**plugin, **plugin_overrides}
    return IQPWrapper(host=host, plugin=plugin, adapter=adapter, adapter_opt=adapter_opt)


def host_state(wrapper):
    return {k: v.clone() for k, v in wrapper.host.state_dict().items()}


@pytest.mark.parametrize("name", HOSTS)
def test_bare_and_fresh_plugin_reproduce_host(name):
    x = torch.rand(2, 3, 24, 32)
    bare = build(name)
    with torch.no_grad():
        expected = bare.host(x)
        assert torch.equal(bare(x), expected)
        wrapped = build(name, TINY_PLUGIN)
        wrapped.host.load_state_dict(bare.host.state_dict())
        wrapped.train()  # training mode too: straight-through codes, host still in eval
        assert (wrapped(x) - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("name", HOSTS)
def test_one_step_trains_plugin_only(name):
    w = build(name, TINY_PLUGIN).train()
    before = host_state(w)
    opt = torch.optim.Adam([p for p in w.parameters() if p.requires_grad], lr=1e-3)
    x = torch.rand(2, 3, 16, 16)
    for _ in range(2):  # the first step opens the zero-initialised output layer
        opt.zero_grad()
        F.l1_loss(w(x, score=0.9), torch.rand(2, 3, 32, 32)).backward()
        opt.step()
    assert all(p.grad is None for p in w.host.parameters())
    grads = {n: p.grad for n, p in w.plugin.named_parameters()}
    head = "head_common.weight" if w.plugin.cfg["index_head"] == "dense" else "head_common.proj.weight"
    assert grads["out_conv.weight"].abs().sum() > 0 and grads[head].abs().sum() > 0
    assert all(torch.equal(before[k], v) for k, v in w.host.state_dict().items())
    assert not w.host.training and w.plugin.training


@pytest.mark.parametrize("cond, index_head", [("adaln_single", "similarity"), ("adaln", "dense")])
def test_trained_plugin_output_depends_on_score(cond, index_head):
    """The lean recipe's conditioning and heads and the pixel recipe's learn a score that steers."""
    w = build("swinir", TINY_PLUGIN, cond=cond, index_head=index_head).train()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        base = w.host(x)
        feats = w.plugin.pool(w.adapter.features(torch.rand(8, 3, 16, 16))).flatten(0, 1)
        for _ in range(5):  # stage 1 in miniature: codes from host features
            w.plugin.codebook.common.update(feats)
            w.plugin.codebook.hq.update(feats)
    targets = {0.15: base - 0.2, 0.95: base + 0.2}  # ask for darker at low score, brighter at high

    def loss():
        return sum(F.mse_loss(w(x, score=s), t) for s, t in targets.items())

    opt = torch.optim.Adam(w.plugin.parameters(), lr=1e-2)
    first = loss().item()
    for _ in range(160):  # both conditionings sit on a plateau for the first 20-60 steps (zero-initialised output)
        opt.zero_grad()
        loss().backward()
        opt.step()
    w.eval()
    with torch.no_grad():
        assert loss().item() < first
        low, high = w(x, score=0.15), w(x, score=0.95)
    assert (high - low).mean() > 0.05  # the learned conditioning separates the two scores
    assert torch.equal(w(x, score=1.0), w(x, score=torch.tensor([1.0])))  # score 1.0 is in range


def test_score_vector_and_bad_scores():
    w = build("swinir", TINY_PLUGIN, num_scores=3)
    x = torch.rand(2, 3, 16, 16)
    assert w(x, score=torch.rand(2, 3)).shape == (2, 3, 32, 32)
    assert w(x, score=torch.tensor([0.2, 0.8])).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        w(x, score=1.5)
    with pytest.raises(ValueError, match="shape"):
        w(x, score=torch.rand(2, 2))


def test_plugin_state_round_trip(tmp_path):
    a = build("swinir", TINY_PLUGIN).train()
    opt = torch.optim.Adam(a.plugin.parameters(), lr=1e-2)
    x = torch.rand(1, 3, 16, 16)
    for _ in range(3):
        opt.zero_grad()
        F.l1_loss(a(x), torch.zeros(1, 3, 32, 32)).backward()
        opt.step()
    a.plugin.codebook.hq.update(torch.randn(64, 24))
    torch.save(a.plugin_state_dict(), tmp_path / "plugin.pth")
    state = torch.load(tmp_path / "plugin.pth", weights_only=True)
    assert not any(k.startswith("host") for k in state) and len(state) > 0
    b = build("swinir", TINY_PLUGIN)
    b.host.load_state_dict(a.host.state_dict())
    b.load_plugin_state_dict(state)
    a.eval(), b.eval()
    with torch.no_grad():
        assert torch.equal(a(x, score=0.7), b(x, score=0.7))
        assert not torch.equal(a(x), a.host(x))  # the trained plug-in does act


@pytest.mark.parametrize("cond", ["adaln_single", "adaln"])
def test_inference_condition_cache_follows_score_and_weights(cond):
    """At inference the score's conditioning is computed once and reused; a new score, a weight update
    or training mode recomputes it, and results always equal the uncached computation."""
    w = build("swinir", TINY_PLUGIN, cond=cond).eval()
    plugin = w.plugin
    plugin.cache_condition = True
    for m in plugin.modules():  # a plug-in whose conditioning acts (adaLN starts at zero)
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=0.3)
    x, calls = torch.rand(1, 3, 16, 16), []
    compute = plugin.condition
    plugin.condition = lambda s: calls.append(s) or compute(s)

    def logits(score):
        return w.restore(x, score=score)[1].logits_common

    def uncached(score):
        with torch.enable_grad():  # outside inference: never cached
            return logits(score).detach()

    with torch.no_grad():
        first = logits(0.3)
        assert torch.equal(logits(0.3), first) and len(calls) == 1  # reused
        assert torch.equal(first, uncached(0.3)) and len(calls) == 2
        assert not torch.allclose(logits(0.9), first) and len(calls) == 3  # another score
        logits(torch.tensor([0.9])), logits(torch.tensor([0.9]))  # tensors: not cached
        assert len(calls) == 5
        logits(0.9)
        assert len(calls) == 5
        weight = {"adaln": lambda: plugin.blocks[0].modulation[1].weight,
                  "adaln_single": lambda: plugin.blocks[0].table}[cond]()
        weight.add_(0.5)  # an in-place update (optimizer step, load_state_dict)
        updated = logits(0.9)
        assert len(calls) == 6 and torch.equal(updated, uncached(0.9))
    w.train()
    assert plugin._condition_cache is None


def test_condition_is_not_cached_by_default():
    """Training code updates weights through ``.data`` (EMA), which no version counter sees: without
    ``cache_condition`` every inference call recomputes the conditioning."""
    w = build("swinir", TINY_PLUGIN).eval()
    for m in w.plugin.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=0.3)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        before = w.restore(x, score=0.9)[1].logits_common
        w.plugin.blocks[0].modulation[1].weight.data.mul_(0.5).add_(0.1)  # as an EMA update writes
        after = w.restore(x, score=0.9)[1].logits_common
        w.plugin.cache_condition = True
        fresh = w.restore(x, score=0.9)[1].logits_common
    assert not torch.allclose(before, after) and torch.equal(after, fresh)


def test_plugin_options_are_checked():
    with pytest.raises(ValueError, match="Unknown plugin option"):
        build("swinir", TINY_PLUGIN, depht=3)
    with pytest.raises(ValueError, match="no codebook"):
        build("swinir", TINY_PLUGIN, share_host_codebook=True)
    with pytest.raises(KeyError, match="Did you mean: SwinIR"):
        IQPWrapper(host={**TINY_SWINIR, "type": "SwinIr"})
    with pytest.raises(ValueError, match="close matches: conv_body"):
        IQPWrapper(host=RRDB, adapter="hook", adapter_opt={"at": "conv_bdy"})
    with pytest.raises(ValueError, match="No adapter knows host type 'RRDBNet'"):
        IQPWrapper(host=RRDB)


def test_registered_in_basicsr_and_hook_features():
    assert ARCH_REGISTRY.get("IQPWrapper") is IQPWrapper
    w = build("rrdb-hook", TINY_PLUGIN)
    assert w.adapter.features(torch.rand(1, 3, 16, 16)).shape == (1, 16, 8, 8)  # RRDBNet x2 pixel-unshuffles its input


def test_swinir_pads_sizes_off_the_window():
    w = build("swinir", TINY_PLUGIN)
    x = torch.rand(1, 3, 21, 30)
    assert w(x).shape == (1, 3, 42, 60)
    for h, wd in [(3, 3), (1, 9)]:  # smaller than the padding: replicated instead of reflected
        assert w(torch.rand(1, 3, h, wd)).shape == (1, 3, 2 * h, 2 * wd)


def perturbed_swinir_plugin(x, **plugin_overrides):
    """A tiny SwinIR wrapper whose fresh plug-in (``TINY_PLUGIN`` + overrides) is checked to be the bare host on
    ``x``; then ``W_o`` is set non-zero. Returns the wrapper, its bottleneck on ``x`` and the plug-in's output."""
    bare = build("swinir")
    net = build("swinir", TINY_PLUGIN, **plugin_overrides).eval()
    net.host.load_state_dict(bare.host.state_dict())
    with torch.no_grad():
        assert (net(x) - bare(x)).abs().max() <= 1e-5
        torch.nn.init.normal_(net.plugin.out_conv.weight, std=0.05)
        b = net.adapter.encode(x)
        return net, b, net.plugin(b.feat, b.z, 0.9)


def test_pixel_codes_start_at_the_host_and_give_every_pixel_its_own_code():
    """codes: pixel: a fresh plug-in is still the host; the logits, codes and GT features lie on the bottleneck's
    own pixels (odd sizes included); once W_o is non-zero, neighbouring pixels of one token get different
    corrections; and the options it cannot take are refused with the fix."""
    pixel, b, out = perturbed_swinir_plugin(torch.rand(2, 3, 20, 28), codes="pixel")
    height, width = b.z.shape[-2:]
    assert out.grid == (height, width) and out.logits_common.shape[:2] == (2, height * width)
    assert out.codes.shape == (2, height * width, b.z.shape[1])
    assert pixel.plugin.code_features(b.feat).shape == out.codes.shape
    delta = out.z - b.z
    patch = delta[..., :4, :4]  # one token's 4 x 4 pixels
    assert (patch - patch.mean(dim=(-2, -1), keepdim=True)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="codes: pixel needs patch"):
        IQPPlugin(8, **{**TINY_PLUGIN, "patch": None, "codes": "pixel"})


@pytest.mark.parametrize("kernel", [1, 3, 7])
def test_inject_kernel_sets_how_far_one_code_reaches(kernel):
    """inject_kernel k: a fresh plug-in is still the host; once W_o is non-zero, changing one pixel's code changes
    the correction of exactly its neighbourhood of radius k // 2; even or non-integer kernels are refused."""
    net, b, out = perturbed_swinir_plugin(torch.rand(1, 3, 16, 16), codes="pixel", inject_kernel=kernel)
    width = b.z.shape[-1]
    codes = out.codes.clone()
    codes[0, 5 * width + 6] += 1.0  # the code of pixel (5, 6)
    with torch.no_grad():
        changed = (net.plugin.inject(codes, b.z) - out.z).abs().amax(dim=1)[0] > 0
    r = kernel // 2
    reach = torch.zeros_like(changed)
    reach[5 - r:6 + r, 6 - r:7 + r] = True
    assert torch.equal(changed, reach)
    for bad in (2, 0, 1.0, True):  # True is an int in Python: refused, not read as 1
        with pytest.raises(ValueError, match="inject_kernel must be an odd positive integer"):
            IQPPlugin(8, **{**TINY_PLUGIN, "inject_kernel": bad})


def test_code_temperature_decodes_the_softmax_mixture_at_inference_only():
    """code_temperature T > 0: at inference each pixel's code is softmax(logits / T) @ C (the most likely code
    as T -> 0); training still decodes straight-through; negative or non-numeric values are refused."""
    net, b, argmax = perturbed_swinir_plugin(torch.rand(1, 3, 16, 16), codes="pixel", code_temperature=0.0,
                                             index_head="similarity", cond="adaln_single")
    plugin = net.plugin.eval()
    codebook = plugin.codebook
    with torch.no_grad():
        assert torch.equal(plugin(b.feat, b.z, 0.9).codes, argmax.codes)  # T = 0: the argmax codes
        plugin.cfg["code_temperature"] = 0.5
        mixed = plugin(b.feat, b.z, 0.9)
        expected = ((argmax.logits_common / 0.5).softmax(-1) @ codebook.common.weight
                    + codebook.hq_weight * (argmax.logits_hq / 0.5).softmax(-1) @ codebook.hq.weight)
        assert torch.allclose(mixed.codes, expected, atol=1e-5)
        assert not torch.allclose(mixed.codes, argmax.codes, atol=1e-3)
        assert torch.allclose(mixed.z, plugin.inject(expected, b.z), atol=1e-5)
        plugin.cfg["code_temperature"] = 1e-3  # pixels whose two best codes differ clearly in both codebooks: argmax
        clear = torch.ones(argmax.codes.shape[:2], dtype=torch.bool)
        for logits in (argmax.logits_common, argmax.logits_hq):
            top2 = logits.topk(2, dim=-1).values
            clear &= top2[..., 0] - top2[..., 1] > 0.02
        assert clear.float().mean() > 0.5
        assert torch.allclose(plugin(b.feat, b.z, 0.9).codes[clear], argmax.codes[clear], atol=1e-5)
        plugin.train()
        assert torch.allclose(plugin(b.feat, b.z, 0.9).codes, argmax.codes, atol=1e-5)  # straight-through: hard forward
    for bad in (-0.5, "0.5", True):
        with pytest.raises(ValueError, match="code_temperature must be a number >= 0"):
            IQPPlugin(8, **{**TINY_PLUGIN, "code_temperature": bad})


def test_transformer_is_built_from_timm_layers():
    plugin = IQPPlugin(24, **TINY_PLUGIN)
    kinds = {type(m).__module__.split(".")[0] for m in plugin.blocks[0].modules()}
    assert "timm" in kinds


def test_options_that_lost_their_experiments_are_refused():
    """Options deleted with their results (upsample: pixelshuffle, inject_depth, cond: binned, the standard preset)
    are refused in one line naming the valid ones."""
    for key, value in (("upsample", "pixelshuffle"), ("inject_depth", 2), ("num_bins", 10)):
        with pytest.raises(ValueError, match=rf"Unknown plugin option\(s\) \['{key}'\]; valid options:"):
            IQPPlugin(8, **{**TINY_PLUGIN, key: value})
    with pytest.raises(ValueError, match="plugin cond must be one of 'adaln', 'adaln_single', got 'binned'"):
        IQPPlugin(8, **{**TINY_PLUGIN, "cond": "binned"})
    with pytest.raises(ValueError, match="Unknown plugin preset 'standard'; presets: pixel, lean"):
        IQPPlugin(8, preset="standard")
