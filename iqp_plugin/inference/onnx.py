"""Host + plug-in (an :class:`~iqp_plugin.archs.wrapper.IQPWrapper`) as one ONNX graph, or the plug-in-free host
for before/after: :func:`export`, the library of ``iqp export`` (:mod:`iqp_plugin.cli.export`, whose options are
named below).

The graph (needs the ``[export]`` extra: ``pip install -e '.[export]'``):

* input ``lq``: float32 (batch, 3, H, W) in the host's image range: [0, 1] for SwinIR and hook hosts,
  [-1, 1] for the face hosts; output ``out``: (batch, 3, H * scale, W * scale) in the same range, unclamped.
* the score: folded in as a constant (``--score S``, default the plug-in's ``target_score``), or, with
  ``--score-input``, a second input ``score``: float32 (batch, M), M = the plug-in's ``num_scores``, clipped
  to [0, 1] (where torch raises). ``--w``: CodeFormer's fidelity weight, folded in (default 0.5).
* dynamic: the batch always; H and W for hosts that take any size. SwinIR sides must be at least its
  window size: inputs are reflect-padded to multiples of the window and the output cropped, as in torch.
  The face hosts take one size and the graph is fixed to it: CodeFormer 512 x 512, RestoreFormer(++) its
  ``resolution`` (512 x 512 for the official weights). ``--size N`` fixes H = W = N for any host.
* metadata (``metadata_props``): ``iqp.host``, ``iqp.image_range``, ``iqp.scale``, ``iqp.score`` (folded
  value, ``input`` or ``none``) and ``iqp.size`` (fixed side, or ``dynamic``).

Exporter: ``torch.export`` (non-strict), then the dynamo ONNX exporter (``torch.onnx.export(program,
dynamo=True)``, which needs onnxscript). The TorchScript exporter (``dynamo=False``, deprecated) cannot export the
plug-in's adaptive token pooling once H and W are dynamic, and its tracer silently bakes numbers read from shapes
(SwinIR's batch) into the graph. The dimensions are exported as ``Dim.AUTO`` and then checked to have stayed
dynamic (a pinned one is an error). Named ``Dim``s would reject facts that hold for every size but that sympy
cannot prove (SwinIR's pad is shorter than the side; the padded size is not the token grid); ``AUTO`` takes them
as the example shows them, and tests/test_export.py checks sizes on both sides of the window multiple.

While exporting, and only then, some pieces are computed differently with the same values (up to float rounding;
checked against torch by tests/test_export.py):

* the score's conditioning is computed once (folded) or straight from the ``score`` input, skipping the eager
  range check, which a graph cannot hold;
* the plug-in's adaptive average pooling to the token grid is two matrix products (the aten decomposition
  gathers a bin count fixed by the example: wrong or failing at other sizes);
* SwinIR blocks (basicsr's or spandrel's) find the batch in ``window_reverse`` by integer division (its
  ``int(float)`` pins the batch) and compute their shifted-window mask for the actual size (the eager code
  takes its cached mask when the size equals ``img_size``, a branch on the shape);
* dynamic inputs are reflect-padded to the adapter's size multiple before the wrapper and the output cropped
  (the SwinIR adapter pads the same way, but behind a branch on the size).

Argmax + embedding code look-up, pixel shuffle, bilinear resizing and the antialiased bicubic resampling of the
position embedding export as they are.
"""
from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from iqp_plugin.archs.wrapper import IQPWrapper
from iqp_plugin.errors import InvalidInputError
from iqp_plugin.io.files import atomic_path

#: example batch for tracing: torch.export pins dimensions whose example is 0 or 1
EXAMPLE_BATCH = 2


class Exported(nn.Module):
    """What the graph computes: ``wrapper`` (or its host alone, ``plugin=False``) on ``lq``; ``multiple`` > 1
    reflect-pads the input to multiples of it and crops the output (``scale`` output pixels per input pixel)."""

    def __init__(self, wrapper: IQPWrapper, plugin: bool, multiple: int, scale: int, host_kwargs: dict):
        super().__init__()
        self.wrapper, self.with_plugin, self.multiple, self.scale, self.host_kwargs = (
            wrapper, plugin, multiple, scale, host_kwargs)

    def forward(self, lq: torch.Tensor, score: torch.Tensor | None = None) -> torch.Tensor:
        h, w = lq.shape[-2:]
        m = self.multiple
        if m > 1:
            lq = F.pad(lq, (0, -w % m, 0, -h % m), mode="reflect")
        if self.with_plugin:
            out = self.wrapper(lq, score, **self.host_kwargs)
        else:
            out = self.wrapper.adapter.run(lq, **self.host_kwargs)
        return out[..., : h * self.scale, : w * self.scale] if m > 1 else out


def export(wrapper: IQPWrapper, path: str | Path, *, score: float | None = None, score_input: bool = False,
           size: int | None = None, host_only: bool = False, host_kwargs: dict | None = None) -> dict:
    """Write ``wrapper`` (eval mode, CPU) as one ONNX file at ``path``, atomically; returns what was exported
    (``inputs``, ``dynamic``, ``size``, ``score``, ``scale``, ``seconds``, ``bytes``)."""
    if wrapper.training:
        raise InvalidInputError("export a wrapper in eval mode: call .eval() first")
    host_kwargs = dict(host_kwargs or {})
    plugin = wrapper.plugin if not host_only else None
    if plugin is None and (score is not None or score_input):
        raise InvalidInputError("--score and --score-input need a plug-in (--plugin F or a plugin block in the config, "
                         "and no --host-only)")
    adapter, name = wrapper.adapter, type(wrapper.host).__name__
    fixed = adapter.input_size
    if fixed and size not in (None, fixed):
        raise InvalidInputError(f"{name} takes {fixed}x{fixed} faces: drop --size or give --size {fixed}")
    side = size or fixed
    multiple = 1 if side else adapter.size_multiple
    example_side = side or 36  # a multiple of 4 (RRDBNet x1 unshuffles by 4), not of 8 (a SwinIR window: padded)
    lo, hi = adapter.image_range
    lq = torch.rand(EXAMPLE_BATCH, 3, example_side, example_side, generator=torch.Generator().manual_seed(0))
    args: tuple = (lq * (hi - lo) + lo,)
    if score_input:
        args += (torch.full((EXAMPLE_BATCH, plugin.cfg["num_scores"]), 0.5),)
    scale = 1
    if multiple > 1:  # the output is cropped: its scale is needed before the export
        with torch.no_grad():
            scale = adapter.run(args[0][:1], **host_kwargs).shape[-1] // example_side
    auto = torch.export.Dim.AUTO
    dims = {0: auto} if side else {0: auto, 2: auto, 3: auto}
    start = time.perf_counter()
    with torch.no_grad(), _exportable(wrapper, plugin, score):
        try:
            program = torch.export.export(Exported(wrapper, plugin is not None, multiple, scale, host_kwargs), args,
                                          dynamic_shapes={"lq": dims, **({"score": {0: auto}} if score_input else {})},
                                          strict=False)
        except Exception as err:  # torch.export raises many kinds; the first line says what failed
            hint = "" if side else "; --size N exports one fixed size"
            raise InvalidInputError(f"{name} cannot be exported: {_first_line(err)}{hint}") from err
    shape = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == "lq").meta["val"].shape
    axes = {0: "batch", 2: "height", 3: "width"}
    pinned = [f"{axes[i]} {shape[i]}" for i in dims if isinstance(shape[i], int)]
    if pinned:
        raise InvalidInputError(f"{name} pins {', '.join(pinned)} when exported" + ("" if side else ": give --size N"))
    if side:
        scale = program.graph.output_node().args[0][0].meta["val"].shape[-1] // side
    onnx_program = torch.onnx.export(program, dynamo=True, input_names=["lq", "score"][:len(args)],
                                     output_names=["out"], verbose=False)
    if plugin is None or score_input:
        folded = "none" if plugin is None else "input"
    else:
        folded = f"{plugin.cfg['target_score'] if score is None else score:g}"
    meta = {"iqp.host": name, "iqp.image_range": f"{lo:g},{hi:g}", "iqp.scale": str(scale), "iqp.score": folded,
            "iqp.size": str(side) if side else "dynamic"}
    onnx_program.model.metadata_props.update(meta)
    with atomic_path(path) as tmp:
        onnx_program.save(tmp, external_data=False)
    return {"inputs": ["lq", "score"][:len(args)], "dynamic": "batch" if side else "batch, height, width",
            "size": side, "score": folded, "scale": scale,
            "seconds": time.perf_counter() - start, "bytes": Path(path).stat().st_size}


@contextlib.contextmanager
def _exportable(wrapper: IQPWrapper, plugin, score: float | None) -> Iterator[None]:
    """The export-only pieces described in the module doc, put back as they were on exit."""
    undo = []
    if plugin is not None:
        fixed = plugin.condition(plugin.scores(score, 1, torch.device("cpu")))  # (1, ...): broadcasts over the batch
        plugin.condition_for = lambda s, batch, device: fixed if s is None else plugin.condition(s.clamp(0, 1))
        plugin.pool = lambda x: _adaptive_avg_pool(x, plugin.grid_size(*x.shape[-2:])).flatten(2).transpose(1, 2)
        undo += [lambda: delattr(plugin, "condition_for"), lambda: delattr(plugin, "pool")]
    for block in wrapper.host.modules():
        if hasattr(block, "calculate_mask") and hasattr(block, "input_resolution"):  # a SwinTransformerBlock
            resolution = block.input_resolution
            block.input_resolution = None  # never equal to the size: the mask is computed for it
            undo.append(lambda b=block, r=resolution: setattr(b, "input_resolution", r))
            arch = sys.modules[type(block).__module__]
            if getattr(arch, "window_reverse", _window_reverse) is not _window_reverse:  # has one, not yet swapped
                original = arch.window_reverse
                arch.window_reverse = _window_reverse
                undo.append(lambda a=arch, f=original: setattr(a, "window_reverse", f))
    try:
        yield
    finally:
        for step in reversed(undo):
            step()


def _adaptive_avg_pool(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, grid)`` as two matrix products (same bins: ``floor(i n / g)`` to
    ``ceil((i + 1) n / g)``), which export for any size; the aten decomposition gathers a fixed bin count."""
    def bins(n: int, g: int) -> torch.Tensor:  # (g, n): row i averages bin i
        i = torch.arange(g, device=x.device)
        start, end = i * n // g, ((i + 1) * n + g - 1) // g
        j = torch.arange(n, device=x.device)
        inside = (j >= start[:, None]) & (j < end[:, None])
        return inside.to(x.dtype) / (end - start)[:, None].to(x.dtype)

    return torch.einsum("ih,bchw,jw->bcij", bins(x.shape[-2], grid[0]), x, bins(x.shape[-1], grid[1]))


def _window_reverse(windows: torch.Tensor, window_size: int, h: int, w: int) -> torch.Tensor:
    """SwinIR's ``window_reverse`` with the batch found by integer division (same result, no ``int(float)``)."""
    b = windows.shape[0] // ((h // window_size) * (w // window_size))
    x = windows.view(b, h // window_size, w // window_size, window_size, window_size, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
