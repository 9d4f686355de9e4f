"""Make basicsr 1.4.2 importable on current torchvision, without importing either.

basicsr imports ``torchvision.transforms.functional_tensor``, which torchvision >= 0.17 renamed to
``_functional_tensor``. :func:`install` (run by ``import iqp_plugin``) adds an import hook that answers the old
name with a module holding the new one's functions, only when the old name is imported and torchvision lacks it,
so ``import iqp_plugin`` stays free of torch and any module of the project may import basicsr in any order.
"""
import importlib
import importlib.abc
import importlib.util
import sys

OLD, NEW = "torchvision.transforms.functional_tensor", "torchvision.transforms._functional_tensor"


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name != OLD:
            return None
        sys.meta_path.remove(self)  # the real module wins where torchvision still has it
        try:
            real = importlib.util.find_spec(OLD)
        finally:
            sys.meta_path.insert(0, self)
        return real or importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        new = importlib.import_module(NEW)
        module.__dict__.update({k: v for k, v in vars(new).items() if not k.startswith("__")})


def install() -> None:
    """Add the import hook once."""
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Alias())
