"""The plug-in checkpoint format, written and read here only.

A plug-in file (``net_g_<iter>.pth``, written by training) is a dict, read back by the safe unpickler::

    {"format": "iqp-plugin", "version": 1,
     "params": {...}, "params_ema": {...},           # the plug-in's state dicts (the EMA one is used for inference)
     "stage": "codebook" | "predictor" | "quality",  # the training stage that wrote it
     "plugin_opt": {"preset": ..., ...},             # the options that build the plug-in again
     "host": {"opt": {...}, "checkpoint": PATH, "sha256": HEX}}  # the host it was trained around

Version 0 is every file written before the version was recorded: the same keys without ``format``/``version``.
A version newer than :data:`VERSION` is refused with the fix (update iqp-plugin).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import torch

from iqp_plugin.errors import CheckpointError, InvalidInputError
from iqp_plugin.io.files import atomic_path
from iqp_plugin.io.host_checkpoint import file_sha256, read_checkpoint

FORMAT = "iqp-plugin"
VERSION = 1


@dataclass
class PluginCheckpoint:
    """A plug-in checkpoint's contents."""

    params: dict
    params_ema: dict | None = None
    stage: str | None = None
    plugin_opt: dict = field(default_factory=dict)
    host: dict = field(default_factory=dict)  # {"opt", "checkpoint", "sha256"}
    version: int = VERSION

    @property
    def weights(self) -> dict:
        """The weights to run: the EMA copy when there is one."""
        return self.params_ema or self.params


def write(path: str, ckpt: PluginCheckpoint) -> None:
    """Write ``ckpt`` to ``path`` atomically, in the current version."""
    payload = {"format": FORMAT, "version": VERSION, "params": ckpt.params, "params_ema": ckpt.params_ema,
               "stage": ckpt.stage, "plugin_opt": dict(ckpt.plugin_opt), "host": dict(ckpt.host)}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def host_record(host_opt: dict, host_checkpoint: str | None) -> dict:
    """The ``host`` entry of a checkpoint: the host's options, and its weight file by path and SHA-256."""
    return {"opt": host_opt, "checkpoint": host_checkpoint,
            "sha256": file_sha256(host_checkpoint) if host_checkpoint else None}


def read(path: str) -> PluginCheckpoint:
    """Read a plug-in checkpoint of any version; :class:`CheckpointError` naming the file when it is not one."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"plug-in checkpoint not found: {path}")
    raw = read_checkpoint(path)
    version = raw.get("version", 0)
    if raw.get("format", FORMAT) != FORMAT or not isinstance(version, int):
        raise CheckpointError(f"{path} is not a plug-in checkpoint (format {raw.get('format')!r})")
    if version > VERSION:
        raise CheckpointError(f"{path} is a plug-in checkpoint of format version {version}, newer than this "
                              f"iqp-plugin reads ({VERSION}): update iqp-plugin")
    params, ema = raw.get("params"), raw.get("params_ema")
    if not isinstance(params, dict) and not isinstance(ema, dict):
        raise CheckpointError(f"{path} is not a plug-in checkpoint: it has no 'params_ema' or 'params' "
                              f"(keys: {sorted(raw)[:10]})")
    return PluginCheckpoint(params=params if isinstance(params, dict) else ema,
                            params_ema=ema if isinstance(ema, dict) else None, stage=raw.get("stage"),
                            plugin_opt=dict(raw.get("plugin_opt") or {}), host=dict(raw.get("host") or {}),
                            version=version)


def check_host_file(ckpt: PluginCheckpoint, host_file: str | None, plugin_file: str, allow: bool) -> None:
    """ValueError (a warning when ``allow``) when the host file is not the one the plug-in was trained with."""
    trained = ckpt.host
    sha = trained.get("sha256")
    found = file_sha256(host_file) if host_file else None
    if sha and found != sha:
        loads = f"{host_file} (sha256 {found[:12]})" if found else "no weights"
        message = (f"{plugin_file} was trained on host weights {trained.get('checkpoint')} (sha256 {sha[:12]}), but "
                   f"the host loads {loads}, and a plug-in fits only the host it was trained on")
        if not allow:
            raise InvalidInputError(f"{message}: load that host file, or pass --allow-host-mismatch "
                                "(allow_host_mismatch=True) to run it anyway")
        warnings.warn(f"{message}: results may be poor (--allow-host-mismatch)", stacklevel=2)
