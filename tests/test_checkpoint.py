"""Host checkpoints: every container format loads; wrong files fail with a clear error."""
import pytest
import torch
from safetensors.torch import save_file

from iqp_plugin import IQPWrapper
from iqp_plugin.errors import CheckpointError
from iqp_plugin.io.host_checkpoint import identify, load_weights
from iqp_plugin.io.registry import build_arch
from tests.conftest import TINY_SWINIR


class NotAWeight:  # a pickled object of an arbitrary class must never be unpickled
    pass


@pytest.fixture
def host_state():
    return build_arch(TINY_SWINIR).state_dict()


def write(path, obj):
    torch.save(obj, path)
    return str(path)


@pytest.mark.parametrize("container", ["params_ema", "params", "state_dict", "lightning", "bare", "safetensors"])
def test_every_container_loads(tmp_path, host_state, container):
    if container == "safetensors":
        path = tmp_path / "host.safetensors"
        save_file({k: v.contiguous() for k, v in host_state.items()}, path)
        path = str(path)
    elif container == "lightning":  # RestoreFormer's official files: vqvae. prefix beside other modules
        ckpt = {f"vqvae.{k}": v for k, v in host_state.items()}
        ckpt["loss.discriminator.weight"] = torch.zeros(1)
        path = write(tmp_path / "host.ckpt", {"state_dict": ckpt, "epoch": 3, "global_step": 10})
    elif container == "bare":
        path = write(tmp_path / "host.pth", host_state)
    else:
        path = write(tmp_path / "host.pth", {container: host_state})
    w = IQPWrapper(host=TINY_SWINIR, host_checkpoint=path, plugin={"patch": 4, "dim": 32, "depth": 1, "heads": 2})
    assert all(torch.equal(v, host_state[k]) for k, v in w.host.state_dict().items())
    assert w.host_checkpoint == path


def test_params_ema_is_preferred_over_params(tmp_path, host_state):
    other = {k: torch.zeros_like(v) for k, v in host_state.items()}
    path = write(tmp_path / "both.pth", {"params": other, "params_ema": host_state})
    module = build_arch(TINY_SWINIR)
    load_weights(module, path)
    assert all(torch.equal(v, host_state[k]) for k, v in module.state_dict().items())
    load_weights(module, path, key="params")
    assert all(v.abs().sum() == 0 for v in module.state_dict().values() if v.is_floating_point())


def test_wrong_architecture_names_keys_and_what_the_file_is(tmp_path):
    rrdb = build_arch(dict(type="RRDBNet", num_in_ch=3, num_out_ch=3, num_feat=64, num_block=1, num_grow_ch=32))
    path = write(tmp_path / "esrgan.pth", {"params_ema": rrdb.state_dict()})
    with pytest.raises(CheckpointError) as err:
        IQPWrapper(host=TINY_SWINIR, host_checkpoint=path)
    msg = str(err.value)
    assert "missing keys" in msg and "layers.0." in msg  # SwinIR's blocks, absent from the file
    assert "unexpected keys" in msg and "body.0.rdb1" in msg  # RRDBNet's blocks, unknown to SwinIR
    assert "spandrel identifies this file as a 'ESRGAN' checkpoint" in msg


def test_wrong_shape_names_the_tensor(tmp_path):
    wider = build_arch({**TINY_SWINIR, "embed_dim": 36})
    path = write(tmp_path / "wide.pth", {"params": wider.state_dict()})
    with pytest.raises(CheckpointError,
                       match=r"shape mismatches .*conv_first.weight: file \(36, 3, 3, 3\) vs model \(24, 3, 3, 3\)"):
        IQPWrapper(host=TINY_SWINIR, host_checkpoint=path)
    assert identify(wider.state_dict()) == "SwinIR"


def test_unsafe_pickle_is_refused(tmp_path, host_state):
    path = write(tmp_path / "evil.pth", {"params": host_state, "extra": NotAWeight()})
    with pytest.raises(CheckpointError) as err:
        IQPWrapper(host=TINY_SWINIR, host_checkpoint=path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path} is not a safe checkpoint: it holds ")
    assert "NotAWeight" in message and "re-save only its weights" in message


def test_missing_and_truncated_files(tmp_path, host_state):
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        IQPWrapper(host=TINY_SWINIR, host_checkpoint=str(tmp_path / "nothere.pth"))
    path = write(tmp_path / "host.pth", {"params": host_state})
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        IQPWrapper(host=TINY_SWINIR, host_checkpoint=path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="safetensors"):
        IQPWrapper(host=TINY_SWINIR, host_checkpoint=str(bad))
