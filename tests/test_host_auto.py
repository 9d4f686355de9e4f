"""``host: auto``: the host rebuilt from its checkpoint alone by spandrel's detection, for every adapter's host
family with non-default hyper-parameters, equals the hand-configured host, with and without a plug-in; the CLI
needs no YAML; mismatched or unusable files fail in one line. Tiny random hosts, CPU."""
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.models import build_model

from iqp_plugin import IQPWrapper
from iqp_plugin.cli import run
from iqp_plugin.cli.parsers import compare as compare_parser
from iqp_plugin.cli.restore import main as restore_main
from iqp_plugin.errors import CheckpointError
from iqp_plugin.inference.loading import load_wrapper, wrapper_options
from iqp_plugin.io.host_checkpoint import file_sha256
from iqp_plugin.io.registry import build_arch
from tests.conftest import REPO, TINY_PLUGIN

#: plug-in for the 16x16 code grids of the face hosts
FACE_PLUGIN = dict(dim=32, depth=1, heads=2, grid=4, common_size=16, hq_size=16)
#: CodeFormer's encoder and generator are fixed (512 px, 64 channels): only the Transformer and codebook vary
CODEFORMER = dict(type="CodeFormer", dim_embd=256, n_layers=2, codebook_size=512, connect_list=["32", "128"])
#: RestoreFormer as spandrel rebuilds it (attention at 16 px of a 512 px input: six levels), narrower and shallower
RESTOREFORMER = dict(type="RestoreFormer", ch=32, ch_mult=[1, 1, 2, 2, 2, 4], num_res_blocks=1, n_embed=128,
                     embed_dim=32, z_channels=64)
SWINIR = dict(type="SwinIR", img_size=16, embed_dim=24, depths=[2, 2], num_heads=[2, 4], mlp_ratio=2)
SWINIR_X2 = {**SWINIR, "upscale": 2, "window_size": 4, "upsampler": "pixelshuffle"}
RRDB = dict(type="RRDBNet", num_in_ch=3, num_out_ch=3, num_feat=16, num_block=2, num_grow_ch=32)

#: name: (host options, adapter, adapter_opt of the hand-configured wrapper, adapter_opt with host: auto,
#: plug-in options, input shape, host kwargs)
FAMILIES = {
    "codeformer": (CODEFORMER, None, None, None, FACE_PLUGIN, (1, 3, 512, 512), {"w": 0.5}),
    "restoreformer": (RESTOREFORMER, None, None, None, FACE_PLUGIN, (1, 3, 64, 64), {}),
    "swinir-classical-x2": (SWINIR_X2, None, None, None, TINY_PLUGIN, (1, 3, 20, 24), {}),
    "swinir-classical-x4": ({**SWINIR, "upscale": 4, "img_size": 18, "window_size": 6, "num_heads": [3, 2],
                             "upsampler": "pixelshuffle"}, None, None, None, TINY_PLUGIN, (1, 3, 24, 20), {}),
    "swinir-lightweight-x3": ({**SWINIR, "upscale": 3, "embed_dim": 12, "depths": [2, 1], "num_heads": [3, 2],
                               "window_size": 4, "upsampler": "pixelshuffledirect"},
                              None, None, None, TINY_PLUGIN, (1, 3, 16, 20), {}),
    "swinir-realworld-x4": ({**SWINIR, "upscale": 4, "depths": [2], "num_heads": [3], "window_size": 4,
                             "upsampler": "nearest+conv", "resi_connection": "3conv"},
                            None, None, None, TINY_PLUGIN, (1, 3, 16, 16), {}),
    "swinir-jpeg-gray": ({**SWINIR, "upscale": 1, "in_chans": 1, "img_size": 14, "window_size": 7,
                          "img_range": 255.0, "upsampler": ""}, None, None, None, TINY_PLUGIN, (1, 1, 28, 28), {}),
    "rrdbnet-x2-hook": ({**RRDB, "scale": 2}, "hook", {"at": "conv_body"}, {"at": "model.1.sub.2"},
                        TINY_PLUGIN, (1, 3, 16, 20), {}),
    "rrdbnet-x4-hook": ({**RRDB, "scale": 4, "num_block": 3}, "hook", {"at": "conv_body"}, {"at": "model.1.sub.3"},
                        TINY_PLUGIN, (1, 3, 12, 16), {}),
}

#: Hyper-parameters spandrel cannot read (no tensor shape shows them) or families it cannot rebuild: host: auto
#: cannot reproduce these, so they need a hand-written host: {type: ..., ...}.
UNDETECTABLE = [
    pytest.param("restoreformer-pp", ({**RESTOREFORMER, "type": "RestoreFormerPP"}, None, None, None, FACE_PLUGIN,
                                      (1, 3, 64, 64), {}),
                 marks=pytest.mark.xfail(raises=CheckpointError, strict=True, reason=(
                     "spandrel 0.4.2 takes a RestoreFormer++ file for RestoreFormer and cannot rebuild it "
                     "(unexpected decoder.up.<level>.attn keys): RestoreFormer++ is not detected"))),
    pytest.param("restoreformer-head-size", ({**RESTOREFORMER, "head_size": 4}, None, None, None, FACE_PLUGIN,
                                             (1, 3, 64, 64), {}),
                 marks=pytest.mark.xfail(raises=AssertionError, strict=True, reason=(
                     "RestoreFormer's head_size is no tensor shape: spandrel always builds 8 (the official value)"))),
    pytest.param("swinir-img-range", ({**SWINIR_X2, "img_range": 255.0}, None, None, None, TINY_PLUGIN,
                                      (1, 3, 16, 16), {}),
                 marks=pytest.mark.xfail(raises=AssertionError, strict=True, reason=(
                     "SwinIR's img_range is no tensor shape: spandrel takes 255 for window size 7 (the official "
                     "JPEG models) and 1 otherwise"))),
    pytest.param("rrdbnet-grow-channels", ({**RRDB, "scale": 2, "num_grow_ch": 16}, "hook", {"at": "conv_body"},
                                           {"at": "model.1.sub.2"}, TINY_PLUGIN, (1, 3, 16, 16), {}),
                 marks=pytest.mark.xfail(raises=CheckpointError, strict=True, reason=(
                     "spandrel's ESRGAN is built with 32 growth channels (num_grow_ch) whatever the file holds"))),
    pytest.param("codeformer-n-head", ({**CODEFORMER, "n_head": 4}, None, None, None, FACE_PLUGIN,
                                       (1, 3, 512, 512), {"w": 0.5}),
                 marks=pytest.mark.skip(reason=(
                     "CodeFormer's n_head is no tensor shape: spandrel always builds 8 (the official value); not run, "
                     "as CodeFormer forwards take about 12 s each on one CPU thread"))),
]


def save_host(host_opt: dict, path, seed: int = 0) -> str:
    """A random host of ``host_opt`` saved as a BasicSR ``params`` checkpoint."""
    torch.manual_seed(seed)
    torch.save({"params": build_arch(host_opt).state_dict()}, path)
    return str(path)


def open_plugin(wrapper: IQPWrapper) -> None:
    """Perturb the zero-initialised output layer, so that the plug-in changes the host's output."""
    torch.nn.init.normal_(wrapper.plugin.out_conv.weight, std=0.05)


@pytest.mark.parametrize("family, case", [*FAMILIES.items(), *UNDETECTABLE],
                         ids=[*FAMILIES, *(p.values[0] for p in UNDETECTABLE)])
@torch.no_grad()
def test_auto_host_reproduces_the_configured_wrapper(tmp_path, family, case):
    """Same class, weights, contract and outputs, bit for bit, with a random plug-in and without (CodeFormer:
    about 50 s on one CPU thread, its encoder and generator run at 512 px whatever the hyper-parameters)."""
    host_opt, adapter, opt, auto_opt, plugin, shape, kwargs = case
    path = save_host(host_opt, tmp_path / "host.pth")
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    if family.startswith(("codeformer", "restoreformer")):
        x = x * 2 - 1
    hand = IQPWrapper(host=host_opt, host_checkpoint=path, adapter=adapter, adapter_opt=opt, plugin=plugin).eval()
    auto = IQPWrapper(host="auto", host_checkpoint=path, adapter=adapter, adapter_opt=auto_opt, plugin=plugin).eval()
    open_plugin(hand)
    auto.load_plugin_state_dict(hand.plugin_state_dict())
    if adapter is None:
        assert type(auto.host) is type(hand.host) and type(auto.adapter) is type(hand.adapter)
        assert auto.host.state_dict().keys() == hand.host.state_dict().keys()
        assert all(torch.equal(v, hand.host.state_dict()[k]) for k, v in auto.host.state_dict().items())
        for attr in ("image_range", "input_size", "size_multiple", "channels"):
            assert getattr(auto.adapter, attr) == getattr(hand.adapter, attr), attr
    out = hand(x, **kwargs)
    assert torch.equal(auto(x, **kwargs), out)
    bare = hand.adapter.run(x, **kwargs)
    assert not torch.equal(bare, out)  # the plug-in is at work
    assert torch.equal(IQPWrapper(host="auto", host_checkpoint=path, adapter=adapter,
                                  adapter_opt=auto_opt).eval()(x, **kwargs), bare)


def test_auto_hook_host_takes_spandrels_size_multiple_and_is_frozen(tmp_path):
    path = save_host({**RRDB, "scale": 2}, tmp_path / "rrdb.pth")
    auto = IQPWrapper(host="auto", host_checkpoint=path, adapter="hook", adapter_opt={"at": "model.1", "channels": 16},
                      plugin=TINY_PLUGIN)
    assert auto.adapter.size_multiple == 4 and auto.adapter.channels == 16  # spandrel: x2 ESRGANs pixel-unshuffle
    assert not any(p.requires_grad for p in auto.host.parameters()) and not auto.host.training


def test_uncovered_architecture_names_the_hook_lines(tmp_path):
    path = save_host({**RRDB, "scale": 4}, tmp_path / "esrgan.pth")
    with pytest.raises(ValueError) as err:
        IQPWrapper(host="auto", host_checkpoint=path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: spandrel detects the architecture ESRGAN")
    assert "no adapter covers (they cover CodeFormer, RestoreFormer, SwinIR)" in msg
    assert "adapter: hook, adapter_opt: {at: model.1, channels: 16} (the last feature map before upsampling; " \
           "other candidates: model.1.sub.2 (16 ch)" in msg
    IQPWrapper(host="auto", host_checkpoint=path, adapter="hook", adapter_opt={"at": "model.1", "channels": 16})


def test_wrong_adapter_and_unusable_files_fail_in_one_line(tmp_path):
    swinir = save_host(SWINIR_X2, tmp_path / "s.pth")
    cases = {"adapter 'codeformer' runs CodeFormer hosts, but spandrel detects a SwinIR checkpoint":
             dict(host_checkpoint=swinir, adapter="codeformer")}
    torch.save({"params": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "unknown.pth")
    cases["spandrel recognises no architecture in it (keys such as fc.weight)"] = dict(
        host_checkpoint=str(tmp_path / "unknown.pth"))
    (tmp_path / "cut.pth").write_bytes(Path(swinir).read_bytes()[:1000])
    cases["is not a readable PyTorch checkpoint (truncated or corrupt?)"] = dict(
        host_checkpoint=str(tmp_path / "cut.pth"))
    cases["host: auto reads the host from its checkpoint: give host_checkpoint: FILE"] = dict(host_checkpoint=None)
    for message, kwargs in cases.items():
        with pytest.raises(ValueError) as err:
            IQPWrapper(host="auto", **kwargs)
        assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="host must be 'auto' or an option dict"):
        IQPWrapper(host="SwinIR")


class Payload:
    """Unpickling this would run ``os.system``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_loading_runs_no_pickled_code(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"params": Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="not a safe checkpoint: it holds (posix|os).system"):
        IQPWrapper(host="auto", host_checkpoint=str(tmp_path / "evil.pth"))
    assert not marker.exists()


# ---------------------------------------------------------------- plug-in files and the CLI
def write_plugin(folder, host_file: str) -> str:
    """A plug-in checkpoint in the training format (``IQPModel.save``) trained with host: auto on ``host_file``,
    opened."""
    torch.manual_seed(2)
    wrapper = IQPWrapper(host="auto", host_checkpoint=host_file, plugin=TINY_PLUGIN)
    open_plugin(wrapper)
    path = folder / "plugin.pth"
    torch.save({"params": wrapper.plugin_state_dict(), "params_ema": wrapper.plugin_state_dict(), "stage": "quality",
                "plugin_opt": TINY_PLUGIN,
                "host": {"opt": "auto", "checkpoint": host_file, "sha256": file_sha256(host_file)}}, path)
    return str(path)



@pytest.fixture
def trained(tmp_path):
    """A SwinIR host file, a plug-in trained on it with host: auto, and a folder of two images."""
    host = save_host(SWINIR_X2, tmp_path / "host.pth")
    plugin = write_plugin(tmp_path, host)
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(src / "a.png"), (rng.random((20, 24, 3)) * 255).astype(np.uint8))
    cv2.imwrite(str(src / "sub" / "b.jpg"), (rng.random((16, 16, 3)) * 255).astype(np.uint8))
    return host, plugin, src


def restore(args, capsys) -> tuple[int, str]:
    """Run ``iqp restore`` through the CLI handler: (exit code, stderr)."""
    try:
        run(restore_main, [*args, "--device", "cpu"])
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def test_restore_with_host_file_and_plugin_needs_no_yaml(trained, tmp_path, capsys):
    host, plugin, src = trained
    code, err = restore(["-i", str(src), "-o", str(tmp_path / "auto"), "--host", host, "--plugin", plugin], capsys)
    assert code == 0, err
    hand = ["--host", "SwinIR", "--host-opt", json.dumps({k: v for k, v in SWINIR_X2.items() if k != "type"}),
            "--host-checkpoint", host, "--plugin", plugin]
    assert restore(["-i", str(src), "-o", str(tmp_path / "hand"), *hand], capsys)[0] == 0
    assert restore(["-i", str(src), "-o", str(tmp_path / "recorded"), "--plugin", plugin], capsys)[0] == 0
    for name in ("a.png", "sub/b.jpg"):
        restored = (tmp_path / "auto" / name).read_bytes()
        assert restored == (tmp_path / "hand" / name).read_bytes() == (tmp_path / "recorded" / name).read_bytes()
    assert cv2.imread(str(tmp_path / "auto" / "a.png")).shape == (40, 48, 3)
    assert not list(tmp_path.rglob("*.yml"))

    bare = tmp_path / "bare"
    assert restore(["-i", str(src), "-o", str(bare), "--host", host], capsys)[0] == 0
    assert (bare / "a.png").read_bytes() != (tmp_path / "auto" / "a.png").read_bytes()


def test_yaml_host_auto_and_python_api(trained, tmp_path):
    host, plugin, _ = trained
    config = tmp_path / "wrapper.yml"
    config.write_text(yaml.safe_dump({"network_g": {"type": "IQPWrapper", "host": "auto", "host_checkpoint": host},
                                      "plugin_checkpoint": plugin}))
    net, plugin_file = wrapper_options(str(config))
    wrapper = load_wrapper(net, plugin_file)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(wrapper(x), load_wrapper({"host": SWINIR_X2, "host_checkpoint": host}, plugin)(x))


def test_plugin_on_another_host_file_fails_unless_allowed(trained, tmp_path, capsys):
    host, plugin, src = trained
    other = save_host(SWINIR_X2, tmp_path / "other.pth", seed=5)
    args = ["-i", str(src), "-o", str(tmp_path / "out"), "--host", other, "--plugin", plugin]
    code, err = restore(args, capsys)
    assert code == 2 and err.count("\n") == 1 and not (tmp_path / "out").exists()
    assert f"iqp: error: {plugin} was trained on host weights {host} (sha256 {file_sha256(host)[:12]}), but the " \
           f"host loads {other} (sha256 {file_sha256(other)[:12]}), and a plug-in fits only the host it was " \
           "trained on: load that host file, or pass --allow-host-mismatch" in err
    with pytest.warns(UserWarning, match="results may be poor"):
        assert restore([*args, "--allow-host-mismatch"], capsys)[0] == 0
    with pytest.raises(ValueError, match="trained on host weights"):
        load_wrapper({"host": "auto", "host_checkpoint": other}, plugin)
    with pytest.warns(UserWarning, match="trained on host weights"):
        load_wrapper({"host": "auto", "host_checkpoint": other}, plugin, allow_host_mismatch=True)
    assert compare_parser().parse_args(["-i", "a", "-o", "b", "--host", other,
                                        "--allow-host-mismatch"]).allow_host_mismatch


@pytest.mark.parametrize("other", ["architecture", "width"])
def test_plugin_of_another_host_shape_is_refused_even_when_allowed(trained, tmp_path, capsys, other):
    """A plug-in on another architecture (RestoreFormer) or a narrower SwinIR: the host file check fails first;
    allowed, the plug-in's weights do not fit."""
    _, plugin, src = trained
    opt = RESTOREFORMER if other == "architecture" else {**SWINIR_X2, "embed_dim": 12}
    host = save_host(opt, tmp_path / "other.pth")
    args = ["-i", str(src), "-o", str(tmp_path / "out"), "--host", host, "--plugin", plugin]
    assert "was trained on host weights" in restore(args, capsys)[1]
    code, err = restore([*args, "--allow-host-mismatch"], capsys)
    assert code == 2 and err.count("\n") == 1 and not (tmp_path / "out").exists()
    assert f"{plugin} does not fit the plug-in built from" in err and "size mismatch for in_norm.weight" in err


@pytest.mark.parametrize("extra, message", [
    (["--host-opt", "{}"], "--host-opt goes with --host TYPE: the options of a --host checkpoint are detected"),
    (["--host-checkpoint", "x.pth"], "give the host checkpoint once: --host FILE, or --host TYPE --host-checkpoint"),
])
def test_host_file_flag_conflicts(trained, tmp_path, capsys, extra, message):
    host, _, src = trained
    code, err = restore(["-i", str(src), "-o", str(tmp_path / "out"), "--host", host, *extra], capsys)
    assert code == 2 and message in err


def test_missing_host_file_is_named(trained, tmp_path, capsys):
    _, _, src = trained
    code, err = restore(["-i", str(src), "-o", str(tmp_path / "out"), "--host", str(tmp_path / "nope.pth")], capsys)
    assert code == 2 and f"host checkpoint not found: {tmp_path / 'nope.pth'}" in err


def test_training_on_an_auto_host_records_the_host_file(trained, tmp_path, capsys):
    """IQPModel on host: auto (the tiny predictor config, without its datasets) writes a plug-in checkpoint that
    names the host file and its SHA-256, and that ``iqp restore --plugin`` alone runs on that host."""
    host, _, src = trained
    opt = yaml.safe_load((REPO / "configs" / "tiny" / "swinir_predictor.yml").read_text())
    opt.update(is_train=True, dist=False, rank=0, world_size=1, root_path=str(tmp_path))
    opt["network_g"].update(host="auto", host_checkpoint=host)
    opt["path"].update(pretrain_network_g=None, models=str(tmp_path / "models"),
                       training_states=str(tmp_path / "states"))
    opt["datasets"]["train"]["score_csv"] = "scores.csv"  # not read by this stage's set-up
    model = build_model(opt)
    assert type(model.net_g.host).__name__ == "SwinIR" and model.net_g.host.upscale == 2
    model.save(0, 1)
    ckpt = torch.load(tmp_path / "models" / "net_g_1.pth", weights_only=True)
    assert ckpt["host"] == {"opt": "auto", "checkpoint": host, "sha256": file_sha256(host)}
    code, err = restore(["-i", str(src), "-o", str(tmp_path / "out"),
                         "--plugin", str(tmp_path / "models" / "net_g_1.pth")], capsys)
    assert code == 0, err
