"""The calling contract every registered host adapter keeps, run over the adapter registry (adapters.ADAPTERS),
as pyiqa's tests run over its model list: a new adapter fails here until it has a tiny host below."""
import pytest
import torch
import torch.nn.functional as F

from iqp_plugin import IQPWrapper
from iqp_plugin.adapters import ADAPTERS
from iqp_plugin.archs.codebook import HostCodebook
from tests.conftest import TINY_SWINIR

#: adapter name -> (IQPWrapper host options, adapter, adapter_opt, input side)
TINY_HOSTS = {
    "swinir": (TINY_SWINIR, None, None, 24),
    "hook": (dict(type="RRDBNet", num_in_ch=3, num_out_ch=3, num_feat=16, num_block=1, num_grow_ch=8, scale=2),
             "hook", {"at": "conv_body"}, 16),
    "restoreformer": ({"type": "RestoreFormer", "ch": 32, "ch_mult": [1, 2, 2], "resolution": 64, "n_embed": 64,
                       "embed_dim": 64, "z_channels": 64}, None, None, 64),
    "codeformer": ({"type": "CodeFormer", "dim_embd": 64, "n_head": 2, "n_layers": 1, "codebook_size": 64},
                   None, None, 512),
}


def wrapper(name: str, plugin: dict | None) -> tuple[IQPWrapper, torch.Tensor]:
    if name not in TINY_HOSTS:
        pytest.fail(f"adapter '{name}' has no tiny host in TINY_HOSTS of {__file__}: add one")
    host, adapter, adapter_opt, side = TINY_HOSTS[name]
    torch.manual_seed(0)
    w = IQPWrapper(host=host, plugin=plugin, adapter=adapter, adapter_opt=adapter_opt).eval()
    lo, hi = w.adapter.image_range
    x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(1)) * (hi - lo) + lo
    return w, x


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_adapter_contract(name):
    bare, x = wrapper(name, None)
    assert type(bare.adapter).name == name
    with torch.no_grad():
        expected = bare(x)
        seen = []
        out = bare.adapter.run(x, inject=lambda b: seen.append(b) or b.z)  # identity injection = the host
        assert torch.equal(out, expected) and len(seen) == 1
        assert seen[0].feat.shape[1] == seen[0].z.shape[1] == bare.adapter.channels  # the bottleneck has C channels
        assert torch.equal(bare.adapter.features(x), seen[0].feat)
    codes = bare.adapter.codebook()
    assert codes is None or (codes.dim() == 2 and codes.shape[1] == bare.adapter.channels)

    w, _ = wrapper(name, {})  # the default plug-in: a fresh one reproduces the host
    w.host.load_state_dict(bare.host.state_dict())
    with torch.no_grad():
        assert (w(x) - expected).abs().max() <= 1e-5
    assert isinstance(w.plugin.codebook.common, HostCodebook) == (codes is not None)

    w.train()  # one plug-in step: the host gets no gradient and stays in eval mode
    before = {k: v.clone() for k, v in w.host.state_dict().items()}
    opt = torch.optim.Adam([p for p in w.parameters() if p.requires_grad], lr=1e-3)
    F.l1_loss(w(x), torch.zeros_like(expected)).backward()
    opt.step()
    assert all(p.grad is None for p in w.host.parameters()) and not w.host.training
    assert all(torch.equal(before[k], v) for k, v in w.host.state_dict().items())
    assert w.plugin.out_conv.weight.grad.abs().sum() > 0
    assert set(w.adapter.host_args) <= {"w"} and all(isinstance(v, str) for v in w.adapter.host_args.values())
