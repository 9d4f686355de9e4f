"""What every host adapter provides: where the host's encoder ends and how to run the rest.

An adapter never owns or changes the host: it holds a reference and calls the host's own submodules.
The bottleneck is described by :class:`Bottleneck`:

* ``feat`` (B, C, h, w): the host encoder's features, what the plug-in predicts codes from;
* ``z``    (B, C, h, w): the tensor that enters the host decoder (same C as ``feat``); the plug-in may
  replace it, everything else stays as the host computed it;
* ``ctx``: whatever else the decoder needs (skip features, attention memories, residuals).

``host: auto`` (:func:`adapter_for` given spandrel's ``ModelDescriptor`` of a checkpoint): the adapter whose
``spandrel_ids`` hold the detected architecture builds the host it expects from the descriptor
(:meth:`HostAdapter.from_descriptor`); its calling contract (``image_range``, ``input_size``,
``size_multiple``) then follows from that host, as for a host configured by hand. An architecture no
adapter covers is an error that names the ``hook`` lines to use and the submodules worth hooking
(:func:`hook_points`).
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from iqp_plugin.errors import InvalidInputError

if TYPE_CHECKING:
    from spandrel import ModelDescriptor

Inject = Callable[["Bottleneck"], torch.Tensor]


@dataclass
class Bottleneck:
    feat: torch.Tensor
    z: torch.Tensor
    ctx: dict = field(default_factory=dict)


class HostAdapter:
    """Base class of adapters. Subclasses set the class attributes and implement encode/decode."""

    #: name used in ``IQPWrapper(adapter=...)``
    name: ClassVar[str] = ""
    #: host class names this adapter is chosen for when ``adapter`` is not given
    host_types: ClassVar[tuple[str, ...]] = ()
    #: spandrel architecture ids (``ModelDescriptor.architecture.id``) it is chosen for with ``host: auto``
    spandrel_ids: ClassVar[tuple[str, ...]] = ()
    #: value range of the host's input and output images
    image_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    #: keyword arguments of the host that users may set (``iqp restore``/``export`` options), with what each is
    host_args: ClassVar[dict[str, str]] = {}
    #: side of the one square input size the host takes (aligned faces), or None for any size
    input_size: int | None = None
    #: input sides that are multiples of this need no padding inside the host (e.g. an attention window);
    #: tiles are cut to multiples of it
    size_multiple: int = 1
    #: the recipe (:data:`iqp_plugin.archs.recipes.RECIPES`) whose plug-in ``plugin: {}`` builds on this host
    default_recipe: ClassVar[str] = "pixel"

    def __init__(self, host: nn.Module):
        self.host = host

    @classmethod
    def from_descriptor(cls, descriptor: ModelDescriptor, **opt) -> HostAdapter:
        """The adapter on the host spandrel detected in a checkpoint (``host: auto``): here spandrel's model
        as it is; adapters whose host is a class of their own rebuild it (:func:`rebuilt`)."""
        return cls(descriptor.model, **opt)

    @classmethod
    def check_host_opt(cls, opt: dict) -> None:
        """Refuse, before the host is built, options of a hand-written host (``host: {type: ..., ...}``) that
        this adapter's host class cannot take (nothing by default)."""

    @property
    def channels(self) -> int:
        """Channel count C of ``feat`` and ``z``."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor, **host_kwargs) -> Bottleneck:
        raise NotImplementedError

    def decode(self, b: Bottleneck, **host_kwargs) -> torch.Tensor:
        raise NotImplementedError

    def run(self, x: torch.Tensor, inject: Inject | None = None, **host_kwargs) -> torch.Tensor:
        """Host forward: encoder -> (optional ``inject(bottleneck)`` replacing ``z``) -> decoder."""
        b = self.encode(x, **host_kwargs)
        if inject is not None:
            b.z = inject(b)
        return self.decode(b, **host_kwargs)

    def features(self, x: torch.Tensor, **host_kwargs) -> torch.Tensor:
        """Only the encoder's bottleneck features (codebook targets are taken from clean images)."""
        return self.encode(x, **host_kwargs).feat

    def codebook(self) -> torch.Tensor | None:
        """The host's own (K, C) codebook in ``feat`` space, or None when the host has none."""
        return None

    def decoder_blocks(self) -> list[nn.Module]:
        """Host blocks between ``z`` and the output whose activations training may recompute in the
        backward pass instead of storing them (none by default). The blocks must not nest."""
        return []


ADAPTERS: dict[str, type[HostAdapter]] = {}


def register_adapter(cls: type[HostAdapter]) -> type[HostAdapter]:
    """Class decorator adding an adapter to :data:`ADAPTERS` under ``cls.name``."""
    if not cls.name or cls.name in ADAPTERS:
        raise InvalidInputError(f"adapter name {cls.name!r} is empty or taken")
    ADAPTERS[cls.name] = cls
    return cls


def adapter_class(name: str) -> type[HostAdapter]:
    """The adapter registered as ``name``."""
    if name not in ADAPTERS:
        raise InvalidInputError(f"Unknown adapter '{name}'. Known adapters: {', '.join(sorted(ADAPTERS))}.")
    return ADAPTERS[name]


def check_host_opt(opt: dict) -> None:
    """The up-front checks (:meth:`HostAdapter.check_host_opt`) of the adapters that run hosts of ``opt['type']``."""
    kind = opt.get("type") if isinstance(opt, dict) else None
    for cls in ADAPTERS.values():
        if kind in cls.host_types:
            cls.check_host_opt(opt)


def adapter_for(host: nn.Module | ModelDescriptor, name: str | None = None, opt: dict | None = None) -> HostAdapter:
    """Build the adapter ``name`` for ``host``, or pick it from the host's class when ``name`` is None.

    ``host`` may be spandrel's descriptor of a checkpoint (``host: auto``): the adapter is then picked from the
    detected architecture and builds its host from the descriptor (``adapter.host``).
    """
    opt = dict(opt or {})
    auto = not isinstance(host, nn.Module)
    if name is not None:
        cls = adapter_class(name)
        if auto and cls.spandrel_ids and host.architecture.id not in cls.spandrel_ids:
            raise InvalidInputError(f"adapter '{name}' runs {', '.join(cls.spandrel_ids)} hosts, but spandrel detects "
                             f"a {host.architecture.name} checkpoint: leave adapter out, or use adapter: hook")
    elif auto:
        cls = next((c for c in ADAPTERS.values() if host.architecture.id in c.spandrel_ids), None)
        if cls is None:
            raise InvalidInputError(_no_adapter(host))
    else:
        host_type = type(host).__name__
        matches = [cls for cls in ADAPTERS.values() if host_type in cls.host_types]
        if not matches:
            raise InvalidInputError(
                f"No adapter knows host type '{host_type}'. Use adapter: hook with "
                f"adapter_opt: {{at: <submodule name>}} (e.g. 'conv_after_body'), "
                f"or one of: {', '.join(sorted(ADAPTERS))}.")
        cls = matches[0]
    try:
        return cls.from_descriptor(host, **opt) if auto else cls(host, **opt)
    except TypeError as err:
        raise TypeError(f"adapter_opt {sorted(opt)} does not fit adapter '{cls.name}': {err}") from err


def rebuilt(cls: type[nn.Module], descriptor: ModelDescriptor, **hyperparameters) -> nn.Module:
    """``cls(**hyperparameters)`` carrying the weights spandrel loaded into ``descriptor.model`` (strictly)."""
    host = cls(**hyperparameters)
    host.load_state_dict(descriptor.model.state_dict(), strict=True)
    return host


def hook_points(model: nn.Module, size: int = 32, channels: int = 3, count: int = 3) -> list[tuple[str, int]]:
    """Submodules of ``model`` worth hooking, best first, with their output channels: the last ones to finish
    with a feature map at the lowest resolution the forward reaches before it first outputs more pixels than it
    took in (the modules before an upsampler, or a U-Net's middle). Found by one forward of a random
    ``channels`` x ``size`` x ``size`` image; a submodule that returns its child's output is named by the child."""
    seen: list[tuple[str, torch.Tensor]] = []

    def record(name: str):
        def hook(_module, _inputs, out):
            if isinstance(out, torch.Tensor) and out.dim() == 4 and min(out.shape[-2:]) > 1 and not (
                    seen and seen[-1][1] is out):  # feature maps, not pooled (channel attention) vectors
                seen.append((name, out))
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(torch.rand(1, channels, size, size, device=next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    pixels = [(name, out.shape[1], out.shape[-2] * out.shape[-1]) for name, out in seen]
    before = itertools.takewhile(lambda item: item[2] <= size * size, pixels)
    features = [(name, c, px) for name, c, px in before if c != channels]
    if not features:
        return []
    low = min(px for *_, px in features)
    return [(name, c) for name, c, px in features if px == low][::-1][:count]


def _no_adapter(descriptor: ModelDescriptor) -> str:
    """The one-line error for a detected architecture that no adapter covers: the hook lines to use."""
    arch = descriptor.architecture
    covered = sorted({i for cls in ADAPTERS.values() for i in cls.spandrel_ids})
    req = descriptor.size_requirements
    side = -(-max(32, req.minimum) // req.multiple_of) * req.multiple_of
    try:
        points = hook_points(descriptor.model, side, descriptor.input_channels)
    except Exception:  # an arch whose forward wants more than an image: name its top-level submodules instead
        points = []
    if points:
        (at, c), others = points[0], points[1:]
        where = f"adapter_opt: {{at: {at}, channels: {c}}} (the last feature map before upsampling"
        where += f"; other candidates: {', '.join(f'{n} ({k} ch)' for n, k in others)})" if others else ")"
    else:
        top = [n for n, _ in descriptor.model.named_children()]
        where = f"adapter_opt: {{at: <submodule>, channels: <C>}} (top-level submodules: {', '.join(top)})"
    return (f"spandrel detects the architecture {arch.name}, which no adapter covers "
            f"(they cover {', '.join(covered)}): "
            f"inject through a forward hook, with a config of host: auto, host_checkpoint: <this file>, adapter: hook, "
            f"{where}")
