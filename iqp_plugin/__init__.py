"""iqp-plugin: a plug-and-play Image Quality Prior (IQPIR) module for BasicSR restoration models.

Importing the package makes basicsr importable on current torchvision and registers every arch,
model, dataset and loss of the project in BasicSR's registries (:func:`register`). The ``iqp`` command
(:mod:`iqp_cli`) defers this to the commands that build models, so that it starts in a fraction of a second.
"""
import sys

__all__ = ["IQPWrapper", "register"]
__version__ = "0.1.0"


def register() -> None:
    """Register the project's host archs and adapters, datasets, models and losses in BasicSR's registries."""
    from iqp_plugin import _compat  # noqa: F401  (must run before basicsr is imported)
    import adapters  # noqa: F401  (host archs and adapters)
    from iqp_plugin import datasets, host_model, losses, model, wrapper  # noqa: F401  (IQPWrapper, datasets, models, QualityLoss)


def __getattr__(name: str):
    if name == "IQPWrapper":
        from iqp_plugin.wrapper import IQPWrapper

        return IQPWrapper
    raise AttributeError(f"module 'iqp_plugin' has no attribute {name!r}")


if not getattr(sys.modules.get("iqp_cli"), "DEFER_REGISTRATION", False):
    register()
