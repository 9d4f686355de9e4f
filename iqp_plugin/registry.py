"""Look-ups in BasicSR's registries with errors that name close matches."""
from __future__ import annotations

import difflib
from copy import deepcopy

from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY

REGISTRIES = {"arch": ARCH_REGISTRY, "model": MODEL_REGISTRY, "dataset": DATASET_REGISTRY, "loss": LOSS_REGISTRY}


class UnknownTypeError(KeyError):
    """A ``type`` in an option dict or YAML that no registry knows."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def lookup(kind: str, name: str, where: str = ""):
    """Return the class registered as ``name`` in the ``kind`` registry, or raise UnknownTypeError."""
    registry = REGISTRIES[kind]
    if name in registry:
        return registry.get(name)
    names = sorted(registry.keys())
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else f" Known {kind} types: {', '.join(names)}."
    location = f" (at {where})" if where else ""
    raise UnknownTypeError(f"Unknown {kind} type '{name}'{location}.{hint}")


def build_arch(opt: dict, where: str = "network"):
    """Build an arch from a BasicSR option dict ``{'type': ..., **kwargs}``."""
    opt = deepcopy(dict(opt))
    if "type" not in opt:
        raise ValueError(f"{where}: the option dict needs a 'type' key naming a registered arch, got {sorted(opt)}")
    cls = lookup("arch", opt.pop("type"), where)
    try:
        return cls(**opt)
    except TypeError as err:
        raise TypeError(f"{where}: cannot build {cls.__name__} with {sorted(opt)}: {err}") from err


def check_option_types(opt: dict) -> None:
    """Check every ``type`` a BasicSR training option dict names before training starts."""
    lookup("model", opt.get("model_type", "SRModel"), "model_type")
    for key, value in opt.items():
        if key.startswith("network_") and isinstance(value, dict) and "type" in value:
            lookup("arch", value["type"], key)
    for phase, dataset in (opt.get("datasets") or {}).items():
        if isinstance(dataset, dict) and "type" in dataset:
            lookup("dataset", dataset["type"], f"datasets:{phase}")
    for key, value in (opt.get("train") or {}).items():
        if key.endswith("_opt") and isinstance(value, dict) and "type" in value:
            lookup("loss", value["type"], f"train:{key}")
