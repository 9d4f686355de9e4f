"""iqp-plugin: a plug-and-play Image Quality Prior (IQPIR) module for BasicSR restoration models.

Importing the package is light (no torch, no BasicSR) and makes basicsr importable on current torchvision
(:mod:`iqp_plugin._compat`). :func:`register` registers every arch, model, dataset and loss of the project in
BasicSR's registries; it runs when ``IQPWrapper`` is first accessed, in ``python -m iqp_plugin.train`` and in the
``iqp`` commands that build models. Call it yourself before BasicSR builds a ``type: IQPWrapper`` (or any project
type) from a YAML.
"""
from iqp_plugin import _compat

_compat.install()  # basicsr on current torchvision; imports nothing heavy

__all__ = ["IQPWrapper", "register"]
__version__ = "0.1.0"


def register() -> None:
    """Register the project's host archs and adapters, datasets, models and losses in BasicSR's registries.

    Third-party modules that call ``torch.jit.script`` at import (spandrel's, BasicSR's) warn that it is
    deprecated; that warning is silenced here, so that a command's one-line error stays one line."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.script.*")
        from iqp_plugin import adapters  # noqa: F401  (host archs and adapters)
        from iqp_plugin.archs import wrapper  # noqa: F401  (IQPWrapper)
        from iqp_plugin.data import datasets  # noqa: F401
        from iqp_plugin.models import iqp_model, vq_host_model  # noqa: F401
        from iqp_plugin.prior import loss  # noqa: F401  (QualityLoss)


def __getattr__(name: str):
    if name == "IQPWrapper":
        register()
        from iqp_plugin.archs.wrapper import IQPWrapper

        return IQPWrapper
    raise AttributeError(f"module 'iqp_plugin' has no attribute {name!r}")
