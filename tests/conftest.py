"""Shared fixtures: tiny host configs and the location of ../shared/data."""
from pathlib import Path

import pytest
import torch

import iqp_plugin

iqp_plugin.register()  # the project's types in BasicSR's registries, as the commands that build models do

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

TINY_SWINIR = dict(type="SwinIR", upscale=2, img_size=16, window_size=8, embed_dim=24, depths=[2], num_heads=[2],
                   mlp_ratio=2, upsampler="pixelshuffle", in_chans=3)
TINY_PLUGIN = dict(dim=32, depth=2, heads=2, patch=4, common_size=32, hq_size=32)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data beside the repository; tests that need it skip when a clone has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real images not available: {SHARED_DATA} is missing (it sits beside the repo on dev machines)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def read_only_folder(tmp_path):
    """An existing folder this process cannot write to: mode 555 for a user; for root, whom modes do not stop,
    the immutable flag (skips where the file system has none)."""
    import os
    import subprocess

    folder = tmp_path / "read_only"
    folder.mkdir()
    if os.geteuid():
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot make a folder read-only for root here (no chattr +i)")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


def save_model_files(folder: Path, wrapper, host_opt: dict, plugin_opt: dict, config_name: str = "wrapper.yml"):
    """``wrapper``'s host checkpoint, its plug-in checkpoint in the training format (``params`` and
    ``params_ema``, stage quality, the host named by path and SHA-256) and a wrapper YAML naming both, in
    ``folder``. Returns (config, host file, plug-in file)."""
    import yaml

    from iqp_plugin.io import plugin_checkpoint

    host_file, plugin_file, config = folder / "host.pth", folder / "plugin.pth", folder / config_name
    torch.save({"params": wrapper.host.state_dict()}, host_file)
    state = wrapper.plugin_state_dict()
    plugin_checkpoint.write(str(plugin_file), plugin_checkpoint.PluginCheckpoint(
        params=state, params_ema=state, stage="quality", plugin_opt=plugin_opt,
        host=plugin_checkpoint.host_record(host_opt, str(host_file))))
    config.write_text(yaml.safe_dump({"network_g": {"type": "IQPWrapper", "host": host_opt,
                                                    "host_checkpoint": str(host_file)},
                                      "plugin_checkpoint": str(plugin_file)}))
    return config, host_file, plugin_file


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """pyiqa's weight folder in tmp_path (this process and subprocesses): never the real cache."""
    from pyiqa.utils import download_util

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", str(tmp_path / "torch" / "hub" / "pyiqa"))
    return tmp_path / "torch" / "hub" / "pyiqa"
