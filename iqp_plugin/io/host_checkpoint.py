"""Safe loading of third-party host checkpoints, whatever their container.

Accepted: BasicSR ``params_ema`` / ``params``, ``state_dict`` (Lightning, with the ``vqvae.`` prefix of
RestoreFormer's official files), ``model``, ``net_g``, ``g_ema`` (StyleGAN-style EMA generators), a bare state
dict, and ``.safetensors``. Pickles are read with ``torch.load(weights_only=True)`` and a short allow-list, so
no pickled code ever runs (:func:`safe_load`, also used for plug-in files and training states); a file that holds
other objects is refused in one line as not a safe checkpoint. Weights that hold NaN or infinite values (a
diverged run) are refused naming the file (:func:`check_finite`).

:func:`describe_host` hands the weights to spandrel, which detects the architecture and its hyper-parameters
(``host: auto``); :func:`identify` names the architecture in load errors.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import re
from collections.abc import Mapping

import torch
from torch import nn

from iqp_plugin.errors import CheckpointError

#: Container keys tried in this order (BasicSR saves the EMA weights as ``params_ema``: prefer them).
CONTAINER_KEYS = ("params_ema", "params", "state_dict", "model", "net_g", "g_ema")
#: Prefixes stripped from every key when all weight keys carry them.
PREFIXES = ("vqvae.", "module.")
#: Harmless classes found in common checkpoints (``args`` of Namespace type), allowed when unpickling.
SAFE_GLOBALS = [argparse.Namespace]
#: What ``torch.load`` raises on a file it cannot read (cut short, foreign, or holding more than weights).
LOAD_ERRORS = (RuntimeError, EOFError, OSError, KeyError, ValueError, pickle.UnpicklingError)


def file_sha256(path: str) -> str:
    """SHA-256 of a file (a plug-in checkpoint names its host checkpoint by it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def safe_load(path: str, allowed: list | tuple = ()) -> object:
    """``torch.load`` onto the CPU that never runs pickled code: only tensors, containers and
    :data:`SAFE_GLOBALS` plus ``allowed`` are unpickled. CheckpointError, one line, when the file holds other
    objects (not a safe checkpoint) or cannot be read."""
    try:
        with torch.serialization.safe_globals([*SAFE_GLOBALS, *allowed]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except LOAD_ERRORS as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err)) if isinstance(err, pickle.UnpicklingError) else None
        if found:
            reason = f"not a safe checkpoint: it holds {found[1]}, which unpickling could run as code"
            raise CheckpointError(f"{path} is {reason}, so it was not loaded. If you trust the file, load it yourself "
                                  "and re-save only its weights (a dict of tensors) with torch.save.", reason) from err
        lines = [line for line in str(err).strip().splitlines() if line.strip()] or [type(err).__name__]
        # torch's weights-only errors open with advice to load unsafely; their cause follows "... error:"
        cause = next((line for i, line in enumerate(lines) if i and lines[i - 1].rstrip().endswith("error:")), None)
        reason = cause or lines[0]
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {reason}",
                              reason) from err


def read_checkpoint(path: str) -> dict:
    """Read a checkpoint file into a dict without executing pickled code."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
    obj = safe_load(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict.")
    return dict(obj)


def extract_state_dict(ckpt: Mapping, key: str | None = None, path: str | None = None) -> dict[str, torch.Tensor]:
    """Unwrap the weights from a checkpoint container and strip training-framework prefixes; errors name
    ``path``, the file the checkpoint came from."""
    name = path or "The checkpoint"
    if key is not None:
        if key not in ckpt:
            raise CheckpointError(f"{name} has no '{key}' entry; it has: {sorted(ckpt)[:20]}.")
        ckpt = ckpt[key]
    else:
        for candidate in CONTAINER_KEYS:
            if isinstance(ckpt.get(candidate), Mapping):
                ckpt = ckpt[candidate]
                break
    state = {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"{name} holds no weights: no tensors at its top level (keys: {sorted(ckpt)[:20]}) nor "
                              f"under {', '.join(CONTAINER_KEYS)}; re-save the host's state dict (a dict of "
                              "tensors) with torch.save")
    for prefix in PREFIXES:
        if any(k.startswith(prefix) for k in state):
            # Lightning files keep other modules (discriminators, losses) next to the prefixed model.
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def check_finite(state: Mapping[str, torch.Tensor], path: str, what: str = "host") -> None:
    """CheckpointError, one line naming ``path``, when a tensor of ``state`` holds NaN or infinite values."""
    bad = [k for k, v in state.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{path}: the {what} weights hold NaN or infinite values ({len(bad)} of {len(state)} "
                              f"tensors, e.g. {bad[0]}), as a diverged training run leaves them, and would give "
                              "a blank or NaN output: use an earlier checkpoint of that run",
                              "weights hold NaN or infinite values")


def spandrel_architecture(state: Mapping[str, torch.Tensor]):
    """The spandrel ``Architecture`` (spandrel-extra-arches' included) that detects ``state``, or None."""
    import spandrel
    import spandrel_extra_arches

    spandrel_extra_arches.install(ignore_duplicates=True)
    for support in spandrel.MAIN_REGISTRY.architectures("detection"):
        if support.detect(state):
            return support.architecture
    return None


def identify(state: Mapping[str, torch.Tensor]) -> str | None:
    """What spandrel takes the state dict for (architecture name), or None."""
    arch = spandrel_architecture(state)
    return arch.name if arch else None


def describe_host(path: str):
    """spandrel's ``ModelDescriptor`` of the host in ``path`` (``host: auto``): the file is read safely (as
    :func:`read_checkpoint`, any container :func:`extract_state_dict` knows), spandrel detects the architecture
    and rebuilds it with the hyper-parameters it reads from the tensor shapes, loading the weights strictly.
    CheckpointError, one line, when spandrel knows no such architecture or cannot rebuild the one it detects."""
    state = extract_state_dict(read_checkpoint(path), path=path)
    check_finite(state, path)
    arch = spandrel_architecture(state)
    instead = "give the host's type and options instead of host: auto (host: {type: ..., ...})"
    if arch is None:
        raise CheckpointError(f"{path}: spandrel recognises no architecture in it (keys such as "
                              f"{', '.join(list(state)[:3])}); {instead}")
    try:
        return arch.load(dict(state))
    except Exception as err:  # spandrel's loaders raise many types (KeyError, a strict load's RuntimeError, ...)
        reason = " ".join(line.strip() for line in str(err).strip().splitlines()[:2]) or type(err).__name__
        reason = reason if len(reason) <= 240 else reason[:240] + " ..."
        raise CheckpointError(f"{path} looks like a {arch.name} checkpoint to spandrel, which cannot rebuild it "
                              f"({reason}); {instead}") from err


def load_weights(module: nn.Module, path: str, key: str | None = None) -> None:
    """Load ``path`` into ``module`` strictly; a mismatch names the keys and shapes at fault, NaN or infinite
    weights the file."""
    state = extract_state_dict(read_checkpoint(path), key, path)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        lines = [f"{path} does not fit {type(module).__name__}:"]
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if items:
                more = f" (+{len(items) - 8} more)" if len(items) > 8 else ""
                lines.append(f"  {label} ({len(items)}): {', '.join(items[:8])}{more}")
        arch = identify(state)
        if arch:
            lines.append(f"  spandrel identifies this file as a '{arch}' checkpoint.")
        lines.append("  Check the host 'type' and its options (e.g. img_size, embed_dim, upscale) against the file.")
        raise CheckpointError("\n".join(lines))
    check_finite(state, path)
    module.load_state_dict(state, strict=True)
