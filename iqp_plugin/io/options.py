"""Reading option YAMLs (any mapping, or a BasicSR training YAML) with errors that name the file and the fix."""
from __future__ import annotations

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
