"""Host adapters, one module per host family. Importing this package registers them all."""
from iqp_plugin.adapters import (  # noqa: F401  (register)  # noqa: F401  (register)
    codeformer,
    hook,
    restoreformer,
    swinir,
)
from iqp_plugin.adapters.base import (
    ADAPTERS,
    Bottleneck,
    HostAdapter,
    adapter_for,
    check_host_opt,
    register_adapter,
)

__all__ = ["ADAPTERS", "Bottleneck", "HostAdapter", "adapter_for", "check_host_opt", "register_adapter"]
