"""The plug-in checkpoint format (iqp_plugin.io.plugin_checkpoint): files written before the format had a version
still load and restore exactly as they did, the current version round-trips, and anything else is refused."""
import pytest
import torch

from iqp_plugin.errors import CheckpointError
from iqp_plugin.inference.loading import load_wrapper
from iqp_plugin.io import plugin_checkpoint
from tests.conftest import REPO

V0 = REPO / "tests" / "fixtures" / "plugin_v0"  # written by the training code of commit bc6d4a1 (before the layout)


def test_a_version_0_file_loads_and_restores_as_the_code_that_wrote_it():
    ckpt = plugin_checkpoint.read(str(V0 / "plugin.pth"))
    assert ckpt.version == 0 and ckpt.stage == "predictor" and ckpt.plugin_opt["preset"] == "pixel"
    wrapper = load_wrapper({"host": dict(ckpt.host["opt"]), "host_checkpoint": str(V0 / "host.pth")},
                           str(V0 / "plugin.pth"))
    expected = torch.load(V0 / "expected.pt", weights_only=True)  # the output the writing code gave
    with torch.no_grad():
        out = wrapper(expected["input"], score=expected["score"])
    assert torch.equal(out, expected["output"])


def test_the_current_version_round_trips(tmp_path):
    ckpt = plugin_checkpoint.read(str(V0 / "plugin.pth"))
    path = str(tmp_path / "p.pth")
    plugin_checkpoint.write(path, ckpt)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "iqp-plugin" and raw["version"] == plugin_checkpoint.VERSION
    back = plugin_checkpoint.read(path)
    assert back.version == plugin_checkpoint.VERSION and back.plugin_opt == ckpt.plugin_opt
    assert back.host == ckpt.host and back.stage == ckpt.stage
    assert all(torch.equal(back.weights[k], ckpt.weights[k]) for k in ckpt.weights)


@pytest.mark.parametrize("payload, message", [
    ({"format": "iqp-plugin", "version": 99, "params": {}}, "newer than this iqp-plugin reads .* update iqp-plugin"),
    ({"format": "something-else", "params": {}}, "is not a plug-in checkpoint"),
    ({"state_dict": {"w": torch.zeros(1)}}, "has no 'params_ema' or 'params'"),
])
def test_other_files_are_refused_naming_the_file(tmp_path, payload, message):
    path = tmp_path / "bad.pth"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=rf"{path}.*{message}|{message}.*"):
        plugin_checkpoint.read(str(path))
