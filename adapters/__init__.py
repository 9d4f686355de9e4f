"""Host adapters, one module per host family. Importing this package registers them all."""
from adapters.base import ADAPTERS, Bottleneck, HostAdapter, adapter_for, register_adapter
from adapters import hook, swinir  # noqa: F401  (register)
from adapters import codeformer, restoreformer  # noqa: F401  (register)

__all__ = ["ADAPTERS", "Bottleneck", "HostAdapter", "adapter_for", "register_adapter"]
