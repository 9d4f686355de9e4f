"""Shared fixtures: tiny host configs and the location of ../shared/data."""
from pathlib import Path

import pytest
import torch

import iqp_plugin  # noqa: F401  (alias for basicsr + registrations, before anything imports basicsr)

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
