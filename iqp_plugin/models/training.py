"""Run basicsr 1.4.2's training pipeline on CPU, single- or multi-process, and resume it safely, without forking it.

basicsr assumes CUDA in three places: reading a resume state (``torch.cuda.current_device()``),
``init_dist`` for ``--launcher pytorch`` (``torch.cuda.set_device``) and ``model_to_device``
(``DistributedDataParallel(device_ids=[cuda device])``). :func:`patch` replaces those three with
versions that fall back to the CPU (and the gloo backend) when no GPU is present, and leaves the
GPU behaviour unchanged.

It also makes training states safe to resume from: BasicSR's ``<iter>.state`` and model files are written
atomically (a killed run leaves no half-written file, only a ``.<name>.<pid>.tmp`` that the next auto-resume
removes); a checkpoint that cannot be written (a full disk) stops the run in one line, where BasicSR logged
"Just ignore it" and went on (:func:`write_checkpoint`); and ``--auto_resume`` takes the newest readable state whose
network files are all there, saying on stderr which newer ones it skipped. Every file it loads (training states,
SRModel's ``path:pretrain_network_g``) goes through the safe unpickler
(:func:`iqp_plugin.io.host_checkpoint.safe_load`): one that is not a safe checkpoint is refused in one line, and
weights or optimiser states that do not fit the network (its options changed since) are refused naming the file.
"""
from __future__ import annotations

import collections
import errno
import os
import os.path as osp
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from basicsr import train as basicsr_train
from basicsr.models import base_model
from basicsr.utils import dist_util, get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.misc import check_resume
from torch.nn.parallel import DataParallel, DistributedDataParallel

from iqp_plugin.errors import CheckpointError, InvalidInputError, UnreadableState
from iqp_plugin.io.files import atomic_path
from iqp_plugin.io.host_checkpoint import safe_load

# Objects that basicsr's schedulers put into their state dicts, allowed by the safe unpickler.
SAFE_RESUME_GLOBALS = [collections.Counter]
#: Write errors that a retry cannot mend.
_FULL = {errno.ENOSPC, errno.EDQUOT}
_basicsr_load_network = base_model.BaseModel.load_network
_basicsr_resume_training = base_model.BaseModel.resume_training


def write_checkpoint(write: Callable[[], None], path: str, retries: int = 3) -> None:
    """Run ``write``, which writes ``path`` atomically, retrying as BasicSR does (not on a full disk);
    :class:`CheckpointError` naming the file and the fix when it still fails, which stops the run."""
    for attempt in range(1, retries + 1):
        try:
            write()
            return
        except (OSError, RuntimeError) as err:  # torch.save reports a failed write as a RuntimeError
            if attempt == retries or getattr(err, "errno", None) in _FULL:
                raise CheckpointError(
                    f"Cannot save {path} ({err}): training stopped. Free space on that disk (or mend the cause), "
                    "then rerun with --auto_resume: it resumes from the newest state whose network files are "
                    "complete.", reason=str(err)) from err
            get_root_logger().warning(f"Save error {err} for {path}, retrying ({retries - attempt} left)")
            time.sleep(1)


@master_only
def _save_network(self, net, net_label, current_iter, param_key="params"):
    """``BaseModel.save_network``, stopping the run when the file cannot be written."""
    label = "latest" if current_iter == -1 else current_iter
    save_path = os.path.join(self.opt["path"]["models"], f"{net_label}_{label}.pth")
    nets = net if isinstance(net, list) else [net]
    keys = param_key if isinstance(param_key, list) else [param_key]
    save_dict = {}
    for net_, key in zip(nets, keys, strict=True):
        state_dict = self.get_bare_model(net_).state_dict()
        for name in list(state_dict):  # as basicsr: on the CPU, without DDP's 'module.', in the same order
            state_dict[name.removeprefix("module.")] = state_dict.pop(name).cpu()
        save_dict[key] = state_dict
    write_checkpoint(lambda: _SafeTorch.save(save_dict, save_path), save_path)


@master_only
def _save_training_state(self, epoch, current_iter):
    """``BaseModel.save_training_state``, stopping the run when the file cannot be written."""
    if current_iter == -1:
        return
    state = {"epoch": epoch, "iter": current_iter, "optimizers": [o.state_dict() for o in self.optimizers],
             "schedulers": [s.state_dict() for s in self.schedulers]}
    save_path = os.path.join(self.opt["path"]["training_states"], f"{current_iter}.state")
    write_checkpoint(lambda: _SafeTorch.save(state, save_path), save_path)


def network_files(opt: dict, it: int) -> list[str]:
    """The network files that resuming from state ``it`` loads (as basicsr's ``check_resume`` names them)."""
    models = opt["path"].get("models") or osp.join(opt["root_path"], "experiments", opt["name"], "models")
    ignore = opt["path"].get("ignore_resume_networks") or ()
    return [osp.join(models, f"net_{key.replace('network_', '')}_{it}.pth") for key in opt
            if str(key).startswith("network_") and key not in ignore]


def state_mismatch(expected: dict, found: dict) -> str:
    """How the weights ``found`` in a file differ from the network's state dict ``expected``."""
    shapes = [k for k in expected if k in found and hasattr(found[k], "shape")
              and tuple(found[k].shape) != tuple(expected[k].shape)]
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    parts = []
    if shapes:
        k = shapes[0]
        more = f" (and {len(shapes) - 1} more)" if len(shapes) > 1 else ""
        parts.append(f"{k} is {list(found[k].shape)} in the file, {list(expected[k].shape)} in the network{more}")
    if missing:
        parts.append(f"{len(missing)} weights missing, e.g. {missing[0]}")
    if extra:
        parts.append(f"{len(extra)} weights the network lacks, e.g. {extra[0]}")
    return "; ".join(parts) or "the weights differ"


def mismatch_fix(opt: dict) -> str:
    """What to do when a loaded file does not fit the run's network."""
    state = opt["path"].get("resume_state")
    if state:
        return (f"It was saved with the resume state {state}, and the network options changed since: resume with "
                f"the options of that run, or train afresh under another name (or move experiments/{opt['name']} "
                "away)")
    return "Set the network options as they were when it was saved, or load another file"


def _load_network(self, net, load_path, strict=True, param_key="params"):
    """``BaseModel.load_network``; weights that do not fit the network raise :class:`CheckpointError`."""
    try:
        _basicsr_load_network(self, net, load_path, strict, param_key)
    except RuntimeError as err:
        if "Error(s) in loading state_dict" not in str(err):
            raise
        found = safe_load(load_path)
        found = found.get(param_key, found.get("params", found)) if param_key else found
        found = {k.removeprefix("module."): v for k, v in found.items()}
        diff = state_mismatch(self.get_bare_model(net).state_dict(), found)
        raise CheckpointError(f"{load_path} does not fit network_g: {diff}. {mismatch_fix(self.opt)}.",
                              reason=diff) from err


def _resume_training(self, resume_state):
    """``BaseModel.resume_training``; optimiser or scheduler states that do not fit raise :class:`CheckpointError`."""
    path = self.opt["path"].get("resume_state")
    fix = ("the training options changed since it was saved: resume with the options of that run, or train afresh "
           f"under another name (or move experiments/{self.opt['name']} away)")
    try:
        _basicsr_resume_training(self, resume_state)
    except (AssertionError, ValueError, KeyError) as err:
        raise CheckpointError(f"Training state {path} does not fit this run's optimisers ({err}): {fix}.",
                              reason=str(err)) from err
    for optimizer in self.optimizers:
        for group in optimizer.param_groups:
            for param in group["params"]:
                for name, value in optimizer.state.get(param, {}).items():
                    if torch.is_tensor(value) and value.dim() and value.shape != param.shape:
                        raise CheckpointError(f"Training state {path} does not fit this run's optimisers (its {name} "
                                              f"is {list(value.shape)}, the weight {list(param.shape)}): {fix}.",
                                              reason=f"{name} shape")


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


def _newest_readable_state(state_dir: str, rank: int, files: Callable[[int], list[str]] = lambda it: []
                           ) -> tuple[str, dict] | None:
    """(path, state) of the newest readable ``<iter>.state`` in ``state_dir`` whose network files ``files(iter)``
    all exist, or None when it holds no state.

    Rank 0 removes temporary files left by a killed writer (beside the states and the network files) and reports
    every newer state it skips on stderr; ValueError when there are states but none can be used.
    """
    folder = Path(state_dir)
    if not folder.is_dir():
        return None
    if rank == 0:
        for tmp in [*folder.glob(".*.state.*.tmp"), *folder.with_name("models").glob(".*.pth.*.tmp")]:
            tmp.unlink(missing_ok=True)
    iters = sorted((int(m[1]) for p in folder.iterdir() if (m := re.fullmatch(r"(\d+)\.state", p.name))),
                   reverse=True)
    skipped = []
    for it in iters:
        path = osp.join(state_dir, f"{it}.state")
        missing = [f for f in files(it) if not osp.isfile(f)]
        if missing:
            skipped.append(f"training state {path} (its network file {', '.join(missing)} was not saved)")
            continue
        try:
            state = load_training_state(path)
        except UnreadableState as err:
            skipped.append(f"unreadable training state {err.path} ({err.reason})")
            continue
        if skipped and rank == 0:
            print(f"iqp train: skipped {'; '.join(skipped)}; resuming from the newest complete one, {path}.",
                  file=sys.stderr)
        return path, state
    if skipped:
        raise InvalidInputError(f"No complete, readable training state in {state_dir}: {'; '.join(skipped)}. "
                                "Delete these states to start over, or pass path:resume_state.")
    return None


def load_resume_state(opt: dict):
    """Drop-in for ``basicsr.train.load_resume_state`` that works without CUDA; ``--auto_resume`` takes the
    newest readable state whose network files are complete (see :func:`_newest_readable_state`)."""
    if opt["auto_resume"]:
        state_dir = osp.join(opt["root_path"], "experiments", opt["name"], "training_states")
        found = _newest_readable_state(state_dir, opt.get("rank", 0), lambda it: network_files(opt, it))
        if found is None:
            return None
        opt["path"]["resume_state"], state = found
    elif opt["path"].get("resume_state"):
        path = opt["path"]["resume_state"]
        state = load_training_state(path)
        missing = [f for f in network_files(opt, state["iter"]) if not osp.isfile(f)]
        if missing:
            raise InvalidInputError(f"Resume state {path} has no network file {', '.join(missing)} (it was not "
                                    "saved): pass an older state as path:resume_state, or use --auto_resume, which "
                                    "takes the newest complete one.")
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
    """Install the replacements into basicsr (idempotent)."""
    basicsr_train.load_resume_state = load_resume_state
    dist_util._init_dist_pytorch = _init_dist_pytorch
    base_model.BaseModel.model_to_device = _model_to_device
    base_model.BaseModel.save_network = _save_network
    base_model.BaseModel.save_training_state = _save_training_state
    base_model.BaseModel.load_network = _load_network
    base_model.BaseModel.resume_training = _resume_training
    base_model.torch = _SafeTorch()
