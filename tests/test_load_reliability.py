"""Loading hosts and weights never gives a silently degenerate model (issue 42, cases 6, 7, 8 and 18): a host
without weights, a misspelt host option, NaN weights and BasicSR's x4-only real-world SwinIR are refused in one
line naming the fix; a real-world SwinIR x2 or x8 runs with host: auto; a ``g_ema`` container loads."""
import json

import cv2
import pytest
import torch
import yaml
from spandrel.architectures.SwinIR.__arch.SwinIR import SwinIR as OfficialSwinIR

from iqp_plugin import IQPWrapper
from iqp_plugin.errors import CheckpointError, InvalidInputError
from iqp_plugin.inference.loading import load_wrapper, wrapper_options
from iqp_plugin.io import plugin_checkpoint
from iqp_plugin.io.host_checkpoint import load_weights
from iqp_plugin.io.registry import build_arch, check_option_types, constructor_options
from tests.conftest import TINY_PLUGIN, TINY_SWINIR
from tests.test_host_auto import restore
from tests.test_restore import rand_img

HOST_OPT = json.dumps({k: v for k, v in TINY_SWINIR.items() if k != "type"})
#: a real-world (nearest+conv) SwinIR as the official code builds it, at a scale BasicSR's SwinIR cannot build
REALWORLD = dict(img_size=16, embed_dim=24, depths=[2], num_heads=[2], window_size=4, mlp_ratio=2,
                 upsampler="nearest+conv", resi_connection="1conv")


@pytest.fixture
def image(tmp_path) -> str:
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), rand_img(16, 16))
    return str(path)


def host_file(path, opt: dict = TINY_SWINIR, poison: float | None = None) -> str:
    """A random host of ``opt`` saved as ``params``; ``poison``: written into its first conv."""
    state = build_arch(opt).state_dict()
    if poison is not None:
        state["conv_first.weight"][0, 0, 0, 0] = poison
    torch.save({"params": state}, path)
    return str(path)


# ---------------------------------------------------------------- case 6: a host without weights
@pytest.mark.parametrize("source", ["config", "host_opt", "plugin_record"])
def test_a_host_without_weights_is_refused_unless_asked_for(tmp_path, image, capsys, source):
    config = tmp_path / "w.yml"
    config.write_text(yaml.safe_dump({"network_g": {"type": "IQPWrapper", "host": TINY_SWINIR}}))
    if source == "config":
        choice = ["--config", str(config)]
    elif source == "host_opt":
        choice = ["--host", "SwinIR", "--host-opt", HOST_OPT]
    else:  # a plug-in trained on a random host records no host file
        wrapper = IQPWrapper(host=TINY_SWINIR, plugin=TINY_PLUGIN)
        state = wrapper.plugin_state_dict()
        plugin_checkpoint.write(str(tmp_path / "p.pth"), plugin_checkpoint.PluginCheckpoint(
            params=state, params_ema=state, plugin_opt=TINY_PLUGIN,
            host=plugin_checkpoint.host_record(TINY_SWINIR, None)))
        choice = ["--plugin", str(tmp_path / "p.pth")]
    code, err = restore(["-i", image, "-o", str(tmp_path / "out"), *choice], capsys)
    assert code == 2 and err.count("\n") == 1 and not (tmp_path / "out").exists()
    assert err.startswith("iqp: error: the host has no weights (no host_checkpoint), so it would restore with random")
    assert "give host_checkpoint: FILE in the config or --host-checkpoint FILE" in err
    code, err = restore(["-i", image, "-o", str(tmp_path / "out"), *choice, "--host-checkpoint", "random"], capsys)
    assert code == 0, err
    assert cv2.imread(str(tmp_path / "out" / "a.png")).shape == (32, 32, 3)


def test_random_hosts_stay_available_to_python_and_by_name():
    assert IQPWrapper(host=TINY_SWINIR, plugin=TINY_PLUGIN).plugin is not None  # training from scratch, tests
    with pytest.raises(InvalidInputError, match="the host has no weights"):
        load_wrapper({"host": TINY_SWINIR})
    assert load_wrapper({"host": TINY_SWINIR, "host_checkpoint": "random"}).host_checkpoint is None


# ---------------------------------------------------------------- case 7: misspelt host options
def test_misspelt_host_options_get_a_did_you_mean(tmp_path, image, capsys):
    opt = json.dumps({**json.loads(HOST_OPT), "img_rnage": 255.0})
    code, err = restore(["-i", image, "-o", str(tmp_path / "out"), "--host", "SwinIR", "--host-opt", opt,
                         "--host-checkpoint", host_file(tmp_path / "h.pth")], capsys)
    assert code == 2 and err.count("\n") == 1 and not (tmp_path / "out").exists()
    assert "iqp: error: --host-opt: SwinIR has no option 'img_rnage' (did you mean: img_range?)" in err
    with pytest.raises(InvalidInputError, match=r"^host: SwinIR has no option 'embed_dimm' \(did you mean: embed_dim"):
        IQPWrapper(host={**TINY_SWINIR, "embed_dimm": 48})
    training = {"network_g": {"type": "IQPWrapper", "host": {**TINY_SWINIR, "embed_dimm": 48}}}
    with pytest.raises(InvalidInputError, match=r"^network_g:host: SwinIR has no option 'embed_dimm'"):
        check_option_types(training)
    config = tmp_path / "w.yml"
    config.write_text(yaml.safe_dump(training))
    with pytest.raises(InvalidInputError, match=rf"^{config}: host: SwinIR has no option 'embed_dimm'"):
        wrapper_options(str(config))


class Reads(torch.nn.Module):
    def __init__(self, width=1, **kwargs):
        super().__init__()
        self.depth = kwargs.get("depth", 1)


class PassesOn(Reads):
    def __init__(self, height=2, **kwargs):
        super().__init__(**kwargs)


class Ignores(torch.nn.Module):
    def __init__(self, width=1, **kwargs):
        super().__init__()


def test_options_behind_kwargs_are_known_where_the_code_shows_them():
    """``**kwargs`` ignored: the explicit options; passed on to the parent: the parent's too; read: unknowable."""
    assert constructor_options(Ignores) == ["width"]
    assert constructor_options(Reads) is None
    swinir = constructor_options(build_arch(TINY_SWINIR).__class__)
    assert {"img_range", "embed_dim", "upsampler", "resi_connection"} <= set(swinir) and "kwargs" not in swinir
    from iqp_plugin.adapters.restoreformer import RestoreFormerPP
    assert {"ex_multi_scale_num", "head_size", "ch_mult", "n_embed"} <= set(constructor_options(RestoreFormerPP))

    class Closed(torch.nn.Module):
        def __init__(self, width=1):
            super().__init__()

    class Child(Closed):
        def __init__(self, height=2, **kwargs):
            super().__init__(**kwargs)

    assert constructor_options(Child) == ["height", "width"]
    assert constructor_options(PassesOn) is None  # its parent reads its kwargs


# ---------------------------------------------------------------- case 8: NaN weights
@pytest.mark.parametrize("where", ["host", "auto_host", "plugin"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_infinite_weights_are_refused_naming_the_file(tmp_path, image, capsys, where, value):
    host = host_file(tmp_path / "host.pth", poison=value if where != "plugin" else None)
    if where == "auto_host":
        choice = ["--host", host]
        bad = host
    else:
        choice = ["--host", "SwinIR", "--host-opt", HOST_OPT, "--host-checkpoint", host]
        bad = host
    if where == "plugin":
        wrapper = IQPWrapper(host=TINY_SWINIR, host_checkpoint=host, plugin=TINY_PLUGIN)
        state = wrapper.plugin_state_dict()
        state["out_conv.weight"].fill_(value)
        bad = str(tmp_path / "plugin.pth")
        plugin_checkpoint.write(bad, plugin_checkpoint.PluginCheckpoint(
            params=state, params_ema=state, plugin_opt=TINY_PLUGIN,
            host=plugin_checkpoint.host_record(TINY_SWINIR, host)))
        choice += ["--plugin", bad]
    code, err = restore(["-i", image, "-o", str(tmp_path / "out"), *choice], capsys)
    assert code == 2 and err.count("\n") == 1 and not (tmp_path / "out").exists()
    what = "plug-in" if where == "plugin" else "host"
    assert err.startswith(f"iqp: error: {bad}: the {what} weights hold NaN or infinite values (1 of ")
    assert "use an earlier checkpoint of that run" in err


def test_finite_weights_still_load(tmp_path):
    module = build_arch(TINY_SWINIR)
    load_weights(module, host_file(tmp_path / "h.pth"))
    assert all(torch.isfinite(v).all() for v in module.state_dict().values() if v.is_floating_point())


# ---------------------------------------------------------------- case 18: the official SwinIR's real-world x2
@pytest.mark.parametrize("scale", [2, 8])
@torch.no_grad()
def test_realworld_swinir_off_x4_runs_with_host_auto_as_the_official_code(tmp_path, scale):
    torch.manual_seed(0)
    official = OfficialSwinIR(**REALWORLD, upscale=scale).eval()
    path = tmp_path / "real.pth"
    torch.save({"params_ema": official.state_dict()}, path)
    wrapper = IQPWrapper(host="auto", host_checkpoint=str(path), plugin=TINY_PLUGIN).eval()
    x = torch.rand(1, 3, 14, 18, generator=torch.Generator().manual_seed(1))  # sides off the window: padded
    assert torch.equal(wrapper.adapter.run(x), official(x))
    assert wrapper.adapter.run(x).shape == (1, 3, 14 * scale, 18 * scale)
    torch.nn.init.normal_(wrapper.plugin.out_conv.weight, std=0.05)
    assert wrapper(x).shape == (1, 3, 14 * scale, 18 * scale) and not torch.equal(wrapper(x), official(x))


def test_realworld_swinir_off_x4_by_hand_is_one_line_naming_host_auto():
    with pytest.raises(InvalidInputError) as err:
        IQPWrapper(host={"type": "SwinIR", **REALWORLD, "upscale": 2})
    assert str(err.value) == ("host: BasicSR's SwinIR supports upsampler nearest+conv only at upscale 4, not 2: for "
                              "an official real-world SwinIR x2 checkpoint use host: auto with host_checkpoint: FILE "
                              "(iqp restore --host FILE), which runs the official SwinIR")
    assert IQPWrapper(host={"type": "SwinIR", **REALWORLD, "upscale": 4}).host.upscale == 4


def test_g_ema_container_loads_and_a_file_without_weights_is_named(tmp_path):
    state = build_arch(TINY_SWINIR).state_dict()
    torch.save({"g_ema": state, "iter": 5}, tmp_path / "gan.pth")
    wrapper = IQPWrapper(host=TINY_SWINIR, host_checkpoint=str(tmp_path / "gan.pth"))
    assert all(torch.equal(v, state[k]) for k, v in wrapper.host.state_dict().items())
    torch.save({"generator": {"w": [1, 2]}, "iter": 5}, tmp_path / "empty.pth")
    for host in (TINY_SWINIR, "auto"):
        with pytest.raises(CheckpointError) as err:
            IQPWrapper(host=host, host_checkpoint=str(tmp_path / "empty.pth"))
        assert str(err.value).startswith(f"{tmp_path / 'empty.pth'} holds no weights") and "\n" not in str(err.value)


def test_an_arch_that_asserts_on_its_options_fails_in_one_line(monkeypatch):
    class Picky(torch.nn.Module):
        def __init__(self, scale=2):
            super().__init__()
            assert scale in (2, 4), "only x2 and x4"

    monkeypatch.setattr("iqp_plugin.io.registry.lookup", lambda kind, name, where="": Picky)
    with pytest.raises(InvalidInputError) as err:
        build_arch({"type": "Picky", "scale": 3}, where="host")
    assert str(err.value) == "host: Picky refuses these options (only x2 and x4): {'scale': 3}"
