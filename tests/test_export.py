"""``iqp export``: onnxruntime against torch on tiny random SwinIR and RestoreFormer hosts with random plug-ins
(CPU; needs the ``[export]`` extra, which ``make test`` installs). Each export of these tiny hosts takes 10-50 s,
mostly torch.export's symbolic shapes."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
import yaml
from basicsr.archs import swinir_arch

from iqp_plugin import IQPWrapper
from iqp_plugin.cli import run
from iqp_plugin.cli.export import main as export_main
from iqp_plugin.inference.onnx import _adaptive_avg_pool, _window_reverse, export
from iqp_plugin.io.host_checkpoint import file_sha256
from tests.conftest import TINY_PLUGIN, TINY_SWINIR

#: RestoreFormer with a 16x16 code grid at 64 x 64 (its fixed face size), as configs/tiny
TINY_RF = {"type": "RestoreFormer", "ch": 32, "ch_mult": [1, 2, 2], "resolution": 64, "n_embed": 64, "embed_dim": 64,
           "z_channels": 64}
TINY_RF_PLUGIN = {"dim": 32, "depth": 2, "heads": 2, "share_host_codebook": True, "hq_size": 32}
TOL = 1e-4  # max |onnxruntime - torch| in the host's image range


def trained_like(host: dict, plugin: dict) -> IQPWrapper:
    """A random wrapper whose zero-initialised output conv is opened and whose score path (embedding,
    modulations) is strengthened, so that the plug-in changes the output and the score changes it."""
    torch.manual_seed(0)
    wrapper = IQPWrapper(host=host, plugin=plugin).eval()
    p = wrapper.plugin
    torch.nn.init.normal_(p.out_conv.weight, std=0.1)
    layers = [p.out_modulation, p.shared_modulation] + [b.modulation for b in p.blocks]
    for layer in [p.score_embed.mlp.fc1, p.score_embed.mlp.fc2] + [m[-1] for m in layers if m is not None]:
        torch.nn.init.normal_(layer.weight, std=0.5)
    return wrapper


def image(shape, lo=0.0, hi=1.0, seed=1):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * (hi - lo) + lo


def metadata(path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def onnx_run(path, lq, score=None):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"lq": lq.numpy()}
    if score is not None:
        feeds["score"] = np.full((lq.shape[0], 1), score, np.float32)
    return torch.from_numpy(session.run(None, feeds)[0])


def diff(a, b):
    assert a.shape == b.shape
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def swinir():
    return trained_like(TINY_SWINIR, TINY_PLUGIN)


@pytest.fixture(scope="module")
def restoreformer():
    return trained_like(TINY_RF, TINY_RF_PLUGIN)


# ---------------------------------------------------------------- export-only pieces equal the eager ones
@pytest.mark.parametrize("size,grid", [((24, 32), (6, 8)), ((17, 5), (5, 2)), ((10, 14), (3, 4)), ((4, 6), (16, 16))])
def test_adaptive_pool_matches_torch(size, grid):
    x = torch.randn(2, 3, *size)
    assert diff(_adaptive_avg_pool(x, grid), F.adaptive_avg_pool2d(x, grid)) < 1e-6


@pytest.mark.parametrize("batch,h,w", [(1, 8, 8), (3, 16, 24)])
def test_window_reverse_matches_basicsr(batch, h, w):
    windows = torch.randn(batch * (h // 4) * (w // 4), 4, 4, 5)
    assert torch.equal(_window_reverse(windows, 4, h, w), swinir_arch.window_reverse(windows, 4, h, w))


# ---------------------------------------------------------------- onnxruntime == torch
def test_swinir_score_input(swinir, tmp_path):
    """Dynamic batch, height and width; the score as an input: two batches, two sizes (one not a multiple of the
    window), two scores, each equal to torch at that score; the wrapper is as before afterwards."""
    x = image((2, 3, 20, 28))
    with torch.no_grad():
        before = swinir(x, 0.5)
    info = export(swinir, tmp_path / "swinir.onnx", score_input=True)
    assert info["inputs"] == ["lq", "score"] and info["dynamic"] == "batch, height, width" and info["scale"] == 2
    assert metadata(tmp_path / "swinir.onnx") == {"iqp.host": "SwinIR", "iqp.image_range": "0,1", "iqp.scale": "2",
                                                  "iqp.score": "input", "iqp.size": "dynamic"}
    for shape in [(1, 3, 16, 24), (3, 3, 20, 27)]:
        x = image(shape)
        outs = {}
        for score in (0.2, 0.9):
            with torch.no_grad():
                outs[score] = swinir(x, score)
            assert diff(onnx_run(tmp_path / "swinir.onnx", x, score), outs[score]) <= TOL
        assert diff(outs[0.2], outs[0.9]) > 10 * TOL  # the score matters
    with torch.no_grad():
        assert torch.equal(swinir(image((2, 3, 20, 28)), 0.5), before)
    assert "condition_for" not in vars(swinir.plugin) and "pool" not in vars(swinir.plugin)
    assert swinir_arch.window_reverse is not _window_reverse


def test_swinir_host_only(swinir, tmp_path):
    info = export(swinir, tmp_path / "host.onnx", host_only=True)
    assert info["score"] == "none" and info["inputs"] == ["lq"]
    for shape in [(1, 3, 16, 16), (3, 3, 19, 26)]:
        x = image(shape)
        with torch.no_grad():
            host, full = swinir.adapter.run(x), swinir(x)
        assert diff(onnx_run(tmp_path / "host.onnx", x), host) <= TOL
        assert diff(host, full) > 10 * TOL  # the plug-in is not in this graph


@pytest.mark.parametrize("mode", ["folded", "input"])
def test_face_host(restoreformer, tmp_path, mode):
    """RestoreFormer at its fixed face size (64 here, 512 for the official weights): dynamic batch only."""
    path = tmp_path / "rf.onnx"
    info = export(restoreformer, path, score=0.3 if mode == "folded" else None, score_input=mode == "input")
    assert info["dynamic"] == "batch" and info["size"] == 64 and info["scale"] == 1
    assert metadata(path)["iqp.score"] == ("0.3" if mode == "folded" else "input")
    assert metadata(path)["iqp.image_range"] == "-1,1" and metadata(path)["iqp.size"] == "64"
    scores = (0.3,) if mode == "folded" else (0.2, 0.9)
    for batch in (1, 3):
        x = image((batch, 3, 64, 64), -1, 1)
        outs = {}
        for score in scores:
            with torch.no_grad():
                outs[score] = restoreformer(x, score)
            assert diff(onnx_run(path, x, score if mode == "input" else None), outs[score]) <= TOL
        if mode == "input":
            assert diff(outs[0.2], outs[0.9]) > 10 * TOL


def test_cli_exports_config_and_plugin_file(tmp_path, capsys):
    """``iqp export --config --plugin --score`` end to end: a wrapper YAML with a host checkpoint and a plug-in
    checkpoint in the training format; the folded score; a token-code plug-in with per-block adaLN."""
    plugin = {**TINY_PLUGIN, "codes": "token", "cond": "adaln"}
    swinir = trained_like(TINY_SWINIR, plugin)
    host_file, plugin_file, config = tmp_path / "host.pth", tmp_path / "plugin.pth", tmp_path / "wrapper.yml"
    torch.save({"params": swinir.host.state_dict()}, host_file)
    torch.save({"params_ema": swinir.plugin_state_dict(), "plugin_opt": plugin,
                "host": {"opt": TINY_SWINIR, "checkpoint": str(host_file), "sha256": file_sha256(host_file)}},
               plugin_file)
    config.write_text(yaml.safe_dump({"network_g": {"type": "IQPWrapper", "host": TINY_SWINIR,
                                                    "host_checkpoint": str(host_file)}}))
    out = tmp_path / "out" / "model.onnx"
    export_main(["--config", str(config), "--plugin", str(plugin_file), "--onnx", str(out), "--score", "0.4"])
    assert "host + plug-in" in capsys.readouterr().out
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx"]  # no temporary file left
    for shape in [(1, 3, 24, 24), (2, 3, 13, 30)]:
        x = image(shape)
        with torch.no_grad():
            expected = swinir(x, 0.4)
        assert diff(onnx_run(out, x), expected) <= TOL


# ---------------------------------------------------------------- user errors: one line, exit 2, no model loaded
@pytest.mark.parametrize("args,message", [
    (["--score", "1.5"], "--score must lie in [0, 1]"),
    (["--size", "0"], "--size must be a positive"),
    (["--host-only", "--score", "0.5"], "--host-only exports no plug-in"),
    (["--onnx", "model.txt"], "name the file *.onnx"),
    (["--config", "missing.yml"], "--config missing.yml: no such file"),
    (["--score-input"], "need a plug-in"),
])
def test_user_errors(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bare.yml").write_text(yaml.safe_dump({"host": TINY_SWINIR}))
    defaults = {"--config": "bare.yml", "--onnx": "out.onnx"}
    for flag, value in defaults.items():
        if flag not in args:
            args = [*args, flag, value]
    monkeypatch.setattr(IQPWrapper, "__init__", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(SystemExit) as exc:
        run(export_main, args)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and err.count("\n") == 1


def test_face_size_is_fixed(restoreformer, tmp_path):
    with pytest.raises(ValueError, match="takes 64x64 faces: drop --size or give --size 64"):
        export(restoreformer, tmp_path / "rf.onnx", size=32)
    assert not (tmp_path / "rf.onnx").exists()
