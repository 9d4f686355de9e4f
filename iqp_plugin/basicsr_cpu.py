"""Run basicsr 1.4.2's training pipeline on CPU, single- or multi-process, without forking it.

basicsr assumes CUDA in three places: reading a resume state (``torch.cuda.current_device()``),
``init_dist`` for ``--launcher pytorch`` (``torch.cuda.set_device``) and ``model_to_device``
(``DistributedDataParallel(device_ids=[cuda device])``). :func:`patch` replaces those three with
versions that fall back to the CPU (and the gloo backend) when no GPU is present, and leaves the
GPU behaviour unchanged.
"""
from __future__ import annotations

import collections
import os
import os.path as osp

import torch
import torch.distributed as dist
from torch.nn.parallel import DataParallel, DistributedDataParallel

from basicsr import train as basicsr_train
from basicsr.models import base_model
from basicsr.utils import dist_util, scandir
from basicsr.utils.misc import check_resume

# Objects that basicsr's schedulers put into their state dicts, allowed by the safe unpickler.
SAFE_RESUME_GLOBALS = [collections.Counter]


def load_training_state(path: str) -> dict:
    """Load a basicsr ``.state`` file safely onto the CPU (optimizers move it to their device)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f"Resume state not found: {path}. Check path:resume_state in the option file.")
    with torch.serialization.safe_globals(SAFE_RESUME_GLOBALS):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_resume_state(opt: dict):
    """Drop-in for ``basicsr.train.load_resume_state`` that works without CUDA."""
    path = None
    if opt["auto_resume"]:
        state_dir = osp.join(opt["root_path"], "experiments", opt["name"], "training_states")
        if osp.isdir(state_dir):
            states = [int(v.split(".state")[0]) for v in scandir(state_dir, suffix="state", recursive=False)]
            if states:
                path = osp.join(state_dir, f"{max(states)}.state")
                opt["path"]["resume_state"] = path
    elif opt["path"].get("resume_state"):
        path = opt["path"]["resume_state"]
    if path is None:
        return None
    state = load_training_state(path)
    check_resume(opt, state["iter"])
    return state


def _init_dist_pytorch(backend: str, **kwargs) -> None:
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["RANK"]) % torch.cuda.device_count())
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, **kwargs)


def _model_to_device(self, net):
    net = net.to(self.device)
    if self.opt["dist"]:
        device_ids = [torch.cuda.current_device()] if self.device.type == "cuda" else None
        net = DistributedDataParallel(
            net, device_ids=device_ids, find_unused_parameters=self.opt.get("find_unused_parameters", False))
    elif self.opt["num_gpu"] > 1:
        net = DataParallel(net)
    return net


def patch() -> None:
    """Install the CPU-capable replacements into basicsr (idempotent)."""
    basicsr_train.load_resume_state = load_resume_state
    dist_util._init_dist_pytorch = _init_dist_pytorch
    base_model.BaseModel.model_to_device = _model_to_device
