"""Run basicsr 1.4.2's training pipeline on CPU, single- or multi-process, and resume it safely, without forking it.

basicsr assumes CUDA in three places: reading a resume state (``torch.cuda.current_device()``),
``init_dist`` for ``--launcher pytorch`` (``torch.cuda.set_device``) and ``model_to_device``
(``DistributedDataParallel(device_ids=[cuda device])``). :func:`patch` replaces those three with
versions that fall back to the CPU (and the gloo backend) when no GPU is present, and leaves the
GPU behaviour unchanged.

It also makes training states safe to resume from: BasicSR's ``<iter>.state`` and model files are written
atomically (a killed run leaves no half-written file, only a ``.<iter>.state.<pid>.tmp`` that the next auto-resume
removes), and ``--auto_resume`` takes the newest *readable* state, saying on stderr which newer ones it
skipped (a state cut short by an older writer, a full disk). Every file it loads (training states, SRModel's
``path:pretrain_network_g``) goes through the safe unpickler (:func:`iqp_plugin.io.host_checkpoint.safe_load`): one
that is not a safe checkpoint is refused in one line.
"""
from __future__ import annotations

import collections
import os
import os.path as osp
import re
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from basicsr import train as basicsr_train
from basicsr.models import base_model
from basicsr.utils import dist_util
from basicsr.utils.misc import check_resume
from torch.nn.parallel import DataParallel, DistributedDataParallel

from iqp_plugin.errors import CheckpointError, InvalidInputError, UnreadableState
from iqp_plugin.io.files import atomic_path
from iqp_plugin.io.host_checkpoint import safe_load

# Objects that basicsr's schedulers put into their state dicts, allowed by the safe unpickler.
SAFE_RESUME_GLOBALS = [collections.Counter]




def load_training_state(path: str) -> dict:
    """Load a basicsr ``.state`` file safely onto the CPU (optimizers move it to their device);
    :class:`UnreadableState` when it is cut short, corrupt or not a training state."""
    if not osp.isfile(path):
        raise FileNotFoundError(f"Resume state not found: {path}. Check path:resume_state in the option file.")
    try:
        state = safe_load(path, SAFE_RESUME_GLOBALS)
    except CheckpointError as err:
        raise UnreadableState(path, err.reason) from err
    if not isinstance(state, dict) or "iter" not in state:
        raise UnreadableState(path, "no 'iter': not a basicsr training state")
    return state


def _newest_readable_state(state_dir: str, rank: int) -> tuple[str, dict] | None:
    """(path, state) of the newest readable ``<iter>.state`` in ``state_dir``, or None when it holds none.

    Rank 0 removes temporary files left by a killed writer and reports every newer state it skips on stderr;
    ValueError when there are states but none can be read.
    """
    folder = Path(state_dir)
    if not folder.is_dir():
        return None
    if rank == 0:
        for tmp in folder.glob(".*.state.*.tmp"):
            tmp.unlink(missing_ok=True)
    iters = sorted((int(m[1]) for p in folder.iterdir() if (m := re.fullmatch(r"(\d+)\.state", p.name))),
                   reverse=True)
    skipped = []
    for it in iters:
        path = osp.join(state_dir, f"{it}.state")
        try:
            state = load_training_state(path)
        except UnreadableState as err:
            skipped.append(f"{err.path} ({err.reason})")
            continue
        if skipped and rank == 0:
            print(f"iqp train: skipped unreadable training state {'; '.join(skipped)}; "
                  f"resuming from the newest readable one, {path}.", file=sys.stderr)
        return path, state
    if skipped:
        raise InvalidInputError(f"No readable training state in {state_dir}: {'; '.join(skipped)}. "
                         "Delete the unreadable files to start over, or pass path:resume_state.")
    return None


def load_resume_state(opt: dict):
    """Drop-in for ``basicsr.train.load_resume_state`` that works without CUDA; ``--auto_resume`` takes the
    newest readable state (see :func:`_newest_readable_state`)."""
    if opt["auto_resume"]:
        state_dir = osp.join(opt["root_path"], "experiments", opt["name"], "training_states")
        found = _newest_readable_state(state_dir, opt.get("rank", 0))
        if found is None:
            return None
        opt["path"]["resume_state"], state = found
    elif opt["path"].get("resume_state"):
        state = load_training_state(opt["path"]["resume_state"])
    else:
        return None
    check_resume(opt, state["iter"])
    return state


class _SafeTorch:
    """``torch`` as ``basicsr.models.base_model`` sees it: the same module, except that ``save`` writes to a
    temporary file and swaps it in, so BasicSR's ``<iter>.state`` and ``net_g_<iter>.pth`` (SRModel hosts)
    are never left half-written (its retries and messages are kept), and ``load`` (``path:pretrain_network_g``
    of SRModel hosts) refuses a file that is not a safe checkpoint in one line (:func:`safe_load`)."""

    def __getattr__(self, name: str):
        return getattr(torch, name)

    @staticmethod
    def save(obj, f, *args, **kwargs) -> None:
        with atomic_path(f) as tmp:
            torch.save(obj, tmp, *args, **kwargs)

    @staticmethod
    def load(f, *args, **kwargs):
        return safe_load(f)  # onto the CPU, as basicsr's map_location asks


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
    base_model.torch = _SafeTorch()
