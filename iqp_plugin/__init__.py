"""iqp-plugin: a plug-and-play Image Quality Prior (IQPIR) module for BasicSR restoration models.

Importing the package makes basicsr importable on current torchvision and registers every arch,
model, dataset and loss of the project in BasicSR's registries.
"""
from iqp_plugin import _compat  # noqa: F401  (must run before basicsr is imported)

import adapters  # noqa: E402,F401  (registers host archs and adapters)
from iqp_plugin import quality  # noqa: E402,F401  (registers QualityLoss)
from iqp_plugin.wrapper import IQPWrapper  # noqa: E402
from iqp_plugin import datasets, host_model, model  # noqa: E402,F401  (register datasets, VQHostModel, IQPModel)

__all__ = ["IQPWrapper"]
__version__ = "0.1.0"
