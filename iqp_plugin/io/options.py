"""Reading option YAMLs (any mapping, or a BasicSR training YAML) with errors that name the file and the fix."""
from __future__ import annotations

import difflib
import os

import yaml

from iqp_plugin.errors import InvalidInputError


def read_yaml(path: str, label: str = "Option file") -> dict:
    """A YAML mapping from ``path``; a missing, malformed or non-mapping file raises a clear error."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{label} not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            opt = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise InvalidInputError(f"{label} {path} is not valid YAML: {err}") from err
    if not isinstance(opt, dict):
        raise InvalidInputError(f"{label} {path} must hold a mapping of options, got {type(opt).__name__}.")
    return opt


def read_options(path: str) -> dict:
    """Read a BasicSR option YAML, with clear errors for a missing or malformed file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Option file not found: {path}. Pass an existing YAML with -opt (see configs/).")
    opt = read_yaml(path)
    for key in ("name", "model_type", "datasets", "path", "train"):
        if key not in opt:
            raise InvalidInputError(f"Option file {path} lacks the required key '{key}'.")
    return opt


def apply_overrides(opt: dict, entries: list[str] | None, path: str) -> dict[str, str]:
    """Apply ``--force_yml`` entries (``a:b=value``, the value read as BasicSR reads it) to ``opt`` as BasicSR will;
    returns {key path: entry} of the keys they set. An entry BasicSR cannot apply raises InvalidInputError."""
    from basicsr.utils.options import _postprocess_yml_value

    origins = {}
    for entry in entries or ():
        example = "e.g. --force_yml train:total_iter=1000"
        if entry.count("=") != 1:
            raise InvalidInputError(f"--force_yml {entry!r}: expected KEY=VALUE with exactly one '=' (nested keys "
                                    f"joined by ':'), {example}")
        keys, value = (part.strip() for part in entry.split("="))
        names = keys.split(":")
        if not all(names) or any('"' in k or "\\" in k for k in names):
            raise InvalidInputError(f"--force_yml {entry!r}: {keys!r} is not a key path (names joined by ':', "
                                    f"without quotes), {example}")
        try:
            parsed = _postprocess_yml_value(value)
        except Exception as err:  # BasicSR evaluates list values with eval()
            raise InvalidInputError(f"--force_yml {entry!r}: cannot read the value {value!r} ({err})") from err
        node = opt
        for depth, name in enumerate(names[:-1]):
            if not isinstance(node, dict) or name not in node or not isinstance(node[name], dict):
                where = ":".join(names[:depth + 1])
                known = sorted(map(str, node)) if isinstance(node, dict) else []
                close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
                hint = f" (did you mean: {', '.join(close)}?)" if close else ""
                raise InvalidInputError(f"--force_yml {entry!r}: the option file {path} has no section {where}{hint}; "
                                        "--force_yml sets keys inside existing sections only")
            node = node[name]
        node[names[-1]] = parsed
        origins[keys] = f"--force_yml {entry}"
    return origins
