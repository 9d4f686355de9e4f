"""Look-ups in BasicSR's registries with errors that name close matches."""
from __future__ import annotations

import ast
import difflib
import inspect
import textwrap
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
    except AssertionError as err:  # an arch's own check of its options, e.g. BasicSR's SwinIR
        reason = next(iter(str(err).strip().splitlines()), "") or "an assertion failed"
        raise InvalidInputError(f"{where}: {cls.__name__} refuses these options ({reason}): {opt}") from err


def constructor_options(cls) -> list[str] | None:
    """The keyword options ``cls(...)`` takes, or None when they cannot be known. A ``**kwargs`` that the
    constructor ignores adds nothing (BasicSR's SwinIR); one that it only passes on to ``super().__init__``
    adds the parent's options (RestoreFormerPP); one that it reads makes any key possible (None)."""
    if not isinstance(cls, type):
        params = inspect.signature(cls).parameters.values()
        return None if any(p.kind is p.VAR_KEYWORD for p in params) else _keyword_names(params)
    names: list[str] = []
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        if klass is object or klass.__module__.split(".")[0] == "torch":
            return names
        try:
            params = list(inspect.signature(init).parameters.values())[1:]  # without self
        except (TypeError, ValueError):
            return None
        names += [name for name in _keyword_names(params) if name not in names]
        varkw = next((p.name for p in params if p.kind is p.VAR_KEYWORD), None)
        if varkw is None:
            return names
        use = _kwargs_use(init, varkw)
        if use != "super":
            return names if use == "unused" else None
    return names


def _keyword_names(params) -> list[str]:
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _kwargs_use(init, varkw: str) -> str:
    """What ``init`` does with its ``**varkw``: 'unused', 'super' (only passed on to a parent's ``__init__``),
    or 'read' (anything else, or no source to tell)."""
    try:
        func = ast.parse(textwrap.dedent(inspect.getsource(init))).body[0]
    except (OSError, TypeError, SyntaxError, IndexError):
        return "read"
    if not isinstance(func, ast.FunctionDef):  # a lambda, or a fragment of a larger statement
        return "read"
    uses = [node for stmt in func.body for node in ast.walk(stmt) if isinstance(node, ast.Name) and node.id == varkw]
    if not uses:
        return "unused"
    passed = [kw.value for stmt in func.body for call in ast.walk(stmt)
              if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "__init__"
              for kw in call.keywords if kw.arg is None and isinstance(kw.value, ast.Name) and kw.value.id == varkw]
    return "super" if len(passed) == len(uses) else "read"


def check_options(cls, options: dict, where: str) -> None:
    """Raise ValueError naming every key of ``options`` that ``cls``'s constructor does not take
    (:func:`constructor_options`), with close matches and the valid names; nothing to check when they
    cannot be known."""
    valid = constructor_options(cls)
    if valid is None:
        return
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
            check_host_options(value.get("host"), f"{key}:host")
    for phase, dataset in (opt.get("datasets") or {}).items():
        if isinstance(dataset, dict) and "type" in dataset:
            lookup("dataset", dataset["type"], f"datasets:{phase}")
    for key, value in (opt.get("train") or {}).items():
        if key.endswith("_opt") and isinstance(value, dict) and "type" in value:
            loss = lookup("loss", value["type"], f"train:{key}")
            check_options(loss, {k: v for k, v in value.items() if k != "type"}, f"train:{key}")


def check_host_options(host, where: str) -> None:
    """Check the type and option names of an IQPWrapper ``host`` option dict (nothing to check for 'auto')."""
    if isinstance(host, dict) and "type" in host:
        check_options(lookup("arch", host["type"], where), {k: v for k, v in host.items() if k != "type"}, where)
