"""Small helpers shared by the benchmark scripts: timing, peak memory, tensor accounting, output files.

Peak memory, the same definition on both devices::

    peak = live tensor bytes of the case (weights, buffers, optimizer state, inputs; counted, not measured)
         + the largest growth of memory during the measured call (measured)

* CUDA: growth = ``torch.cuda.max_memory_allocated() - torch.cuda.memory_allocated()`` around the call,
  after ``torch.cuda.reset_peak_memory_stats()`` (tensor memory of PyTorch's caching allocator; the
  cache itself is not counted).
* CPU: growth = ``VmHWM - VmRSS`` of the process around the call, after resetting the high-water mark
  by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0). PyTorch's CPU allocator does not cache,
  and the scripts start their workers with ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc returns every
  block of 64 KiB or more to the system when it is freed: the resident-set growth is then the memory of
  the tensors (activations, gradients, temporaries) alive at the worst moment of the call, plus small
  allocator and library overheads. It is resident memory, so pages allocated but never touched do not
  count (PyTorch writes every tensor it allocates in these workloads).
"""
from __future__ import annotations

import contextlib
import gc
import json
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

#: environment for CPU worker processes (see the module docstring); OMP_WAIT_POLICY=PASSIVE keeps idle
#: OpenMP threads from spinning, which otherwise slows small ops 10-30x on a machine shared with others
CPU_WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072", "OMP_WAIT_POLICY": "PASSIVE"}


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device | str) -> float:
    """Seconds ``fn()`` takes, synchronising the GPU before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def median(values: Iterable[float]) -> float:
    values = list(values)
    return float(statistics.median(values)) if values else float("nan")


def interleaved_runs(cases: dict[str, Callable[[], object]], device, warmup: int, repeats: int,
                     warmup_cases: list[str] | None = None,
                     progress: Callable[[str], None] | None = None) -> dict[str, dict[str, list]]:
    """Run every case ``repeats`` times, interleaved (each round runs all cases, the order rotated every
    round, so that a slow spell of a shared machine hits all cases alike), after ``warmup`` runs of the
    cases in ``warmup_cases`` (default: all). Every measured run is timed and its peak memory growth is
    measured (:func:`memory_growth`). Returns ``{case: {"times": [s, ...], "growth": [bytes, ...]}}``;
    take :func:`median` of the times and ``max`` of the growths."""
    names = list(cases)
    for w in range(warmup):
        for name in warmup_cases or names:
            t = timed(cases[name], device)
            if progress:
                progress(f"warm-up {w + 1}/{warmup} {name}: {fmt_seconds(t)}")
    runs: dict[str, dict[str, list]] = {name: {"times": [], "growth": []} for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            with memory_growth(device) as mem:
                t = timed(cases[name], device)
            runs[name]["times"].append(t)
            runs[name]["growth"].append(mem["growth"])
            if progress:
                progress(f"repeat {r + 1}/{repeats} {name}: {fmt_seconds(t)}, peak growth {fmt_bytes(mem['growth'])}")
    return runs


def _proc_status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


@contextlib.contextmanager
def memory_growth(device: torch.device | str):
    """Context manager measuring the peak memory growth (bytes) of its body; read ``result['growth']``
    after the block. See the module docstring for what is measured on each device."""
    device = torch.device(device)
    result = {"growth": None, "how": None}
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        torch.cuda.synchronize(device)
        result["growth"] = torch.cuda.max_memory_allocated(device) - base
        result["how"] = "cuda max_memory_allocated - memory_allocated"
    else:
        base = _proc_status()["VmRSS"]
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        yield result
        result["growth"] = max(0, _proc_status()["VmHWM"] - base)
        result["how"] = "cpu VmHWM - VmRSS (clear_refs reset)"


def tensor_bytes(tensors: Iterable[torch.Tensor | None]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (shared storages counted once)."""
    seen, total = set(), 0
    for t in tensors:
        if t is None or not isinstance(t, torch.Tensor):
            continue
        storage = t.untyped_storage()
        key = (storage.data_ptr(), t.device)
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total


def module_tensors(*modules: torch.nn.Module | None) -> list[torch.Tensor]:
    """Parameters, buffers and gradients of the given modules."""
    out = []
    for m in modules:
        if m is None:
            continue
        out += list(m.parameters()) + list(m.buffers()) + [p.grad for p in m.parameters() if p.grad is not None]
    return out


def optimizer_tensors(opt: torch.optim.Optimizer | None) -> list[torch.Tensor]:
    """The optimizer's state tensors (Adam's moments and step counters)."""
    if opt is None:
        return []
    return [v for state in opt.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2 ** 20:.0f} MiB" if n < 2 ** 30 * 10 else f"{n / 2 ** 30:.1f} GiB"


def fmt_count(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def fmt_seconds(s: float | None) -> str:
    if s is None or s != s:
        return "-"
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None or r != r else f"{r:.3f}x"


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(out: str | Path, name: str, data: dict, markdown: str) -> tuple[Path, Path]:
    """Write ``<out>/<name>.json`` and ``<out>/<name>.md`` side by side; returns both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path
