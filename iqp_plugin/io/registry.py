"""Look-ups in BasicSR's registries with errors that name close matches."""
from __future__ import annotations

import difflib
import inspect
from copy import deepcopy

from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY

from iqp_plugin.errors import InvalidInputError, UnknownTypeError

REGISTRIES = {"arch": ARCH_REGISTRY, "model": MODEL_REGISTRY, "dataset": DATASET_REGISTRY, "loss": LOSS_REGISTRY}




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
        raise InvalidInputError(f"{where}: the option dict needs a 'type' key naming a registered arch, "
                                f"got {sorted(opt)}")
    cls = lookup("arch", opt.pop("type"), where)
    check_options(cls, opt, where)
    try:
        return cls(**opt)
    except TypeError as err:
        raise TypeError(f"{where}: cannot build {cls.__name__} with {sorted(opt)}: {err}") from err


def check_options(cls, options: dict, where: str) -> None:
    """Raise ValueError naming every key of ``options`` that ``cls``'s constructor does not take, with
    close matches and the valid names (nothing to check when it takes ``**kwargs``)."""
    params = inspect.signature(cls).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    valid = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        named = []
        for key in unknown:
            close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
            named.append(f"'{key}'" + (f" (did you mean: {', '.join(close)}?)" if close else ""))
        raise InvalidInputError(f"{where}: {cls.__name__} has no option {', '.join(named)}. "
                                f"Its options: {', '.join(valid)}.")


def check_option_types(opt: dict) -> None:
    """Check every ``type`` a BasicSR training option dict names, and the option names of its networks
    and losses, before training starts."""
    lookup("model", opt.get("model_type", "SRModel"), "model_type")
    for key, value in opt.items():
        if key.startswith("network_") and isinstance(value, dict) and "type" in value:
            check_options(lookup("arch", value["type"], key), {k: v for k, v in value.items() if k != "type"}, key)
    for phase, dataset in (opt.get("datasets") or {}).items():
        if isinstance(dataset, dict) and "type" in dataset:
            lookup("dataset", dataset["type"], f"datasets:{phase}")
    for key, value in (opt.get("train") or {}).items():
        if key.endswith("_opt") and isinstance(value, dict) and "type" in value:
            loss = lookup("loss", value["type"], f"train:{key}")
            check_options(loss, {k: v for k, v in value.items() if k != "type"}, f"train:{key}")
