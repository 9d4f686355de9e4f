"""Make basicsr 1.4.2 importable on current torchvision.

basicsr imports ``torchvision.transforms.functional_tensor``, which torchvision >= 0.17 renamed
to ``_functional_tensor``. This module installs the alias; it must run before basicsr is first
imported, which ``iqp_plugin/__init__.py`` guarantees by importing it first.
"""
import importlib
import sys

_OLD = "torchvision.transforms.functional_tensor"
if _OLD not in sys.modules:
    try:
        importlib.import_module(_OLD)
    except ImportError:
        sys.modules[_OLD] = importlib.import_module("torchvision.transforms._functional_tensor")
