"""Safe loading of third-party host checkpoints, whatever their container.

Accepted: BasicSR ``params_ema`` / ``params``, ``state_dict`` (Lightning, with the ``vqvae.`` prefix of
RestoreFormer's official files), ``model``, a bare state dict, and ``.safetensors``. Pickles are read
with ``torch.load(weights_only=True)`` and a short allow-list, so no pickled code ever runs.
"""
from __future__ import annotations

import argparse
import os
import pickle
from collections.abc import Mapping

import torch
from torch import nn

#: Container keys tried in this order (BasicSR saves the EMA weights as ``params_ema``: prefer them).
CONTAINER_KEYS = ("params_ema", "params", "state_dict", "model", "net_g")
#: Prefixes stripped from every key when all weight keys carry them.
PREFIXES = ("vqvae.", "module.")
#: Harmless classes found in common checkpoints (``args`` of Namespace type), allowed when unpickling.
SAFE_GLOBALS = [argparse.Namespace]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the host."""


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
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} holds Python objects that are not safe to unpickle, so it was not loaded ({err}). "
            "If you trust the file, re-save only its weights: torch.save(ckpt['state_dict'], 'weights.pth').") from err
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {err}") from err
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict.")
    return dict(obj)


def extract_state_dict(ckpt: Mapping, key: str | None = None) -> dict[str, torch.Tensor]:
    """Unwrap the weights from a checkpoint container and strip training-framework prefixes."""
    if key is not None:
        if key not in ckpt:
            raise CheckpointError(f"The checkpoint has no '{key}' entry; it has: {sorted(ckpt)[:20]}.")
        ckpt = ckpt[key]
    else:
        for candidate in CONTAINER_KEYS:
            if isinstance(ckpt.get(candidate), Mapping):
                ckpt = ckpt[candidate]
                break
    state = {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"No weights found in the checkpoint (keys: {sorted(ckpt)[:20]}).")
    for prefix in PREFIXES:
        if any(k.startswith(prefix) for k in state):
            # Lightning files keep other modules (discriminators, losses) next to the prefixed model.
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def identify(state: Mapping[str, torch.Tensor]) -> str | None:
    """What spandrel takes the state dict for (architecture name), or None."""
    try:
        import spandrel
        import spandrel_extra_arches

        spandrel_extra_arches.install(ignore_duplicates=True)
        return spandrel.ModelLoader().load_from_state_dict(dict(state)).architecture.name
    except Exception:  # spandrel raises many types for unknown dicts; detection is best effort
        return None


def load_weights(module: nn.Module, path: str, key: str | None = None) -> None:
    """Load ``path`` into ``module`` strictly; a mismatch names the keys and shapes at fault."""
    state = extract_state_dict(read_checkpoint(path), key)
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
    module.load_state_dict(state, strict=True)
