"""What ``iqp export`` gives: export time, ONNX file size, onnxruntime-to-torch CPU latency and agreement.

For each wrapper config (default: the tiny SwinIR and RestoreFormer of ``configs/tiny``), two cases:
``plugin`` (host + plug-in, the score folded in) and ``host`` (``--host-only``). A config without a plug-in
checkpoint (``--plugin`` or its ``plugin_checkpoint``) gets a random seeded plug-in whose zero-initialised
output conv is opened, so that the plug-in changes the output; a config without host weights gets random ones.

Latency: batch 1, the face size for face hosts and ``--side`` for the others, torch (``wrapper(x)`` as
``iqp restore`` runs it, no grad) and onnxruntime (CPUExecutionProvider) with the same thread count, one warm-up
each, then ``--repeats`` runs interleaved; the ratio is of the medians. Max |diff| is onnxruntime vs torch on
that input, in the host's image range.

    python benchmarks/export.py                                   # tiny hosts -> benchmarks/out/export/
    python benchmarks/export.py --config wrapper.yml --plugin net_g.pth --side 256 --out DIR
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import fmt_ratio, fmt_seconds, markdown_table, median, write_results  # noqa: E402
from iqp_plugin import IQPWrapper  # noqa: E402
from iqp_plugin.inference.loading import RANDOM_HOST, load_wrapper, wrapper_options  # noqa: E402
from iqp_plugin.inference.onnx import export  # noqa: E402

TINY_CONFIGS = [REPO / "configs" / "tiny" / f"{name}_quality.yml" for name in ("swinir", "restoreformer")]


def build(config: Path, plugin_file: str | None) -> IQPWrapper:
    """The config's wrapper on the CPU; a random seeded plug-in (output conv opened) when it names none."""
    net, named = wrapper_options(str(config))
    plugin_file = plugin_file or named
    if plugin_file or net.get("plugin") is None:  # the tiny configs time random hosts
        return load_wrapper({**net, "host_checkpoint": net.get("host_checkpoint") or RANDOM_HOST}, plugin_file, "cpu")
    torch.manual_seed(0)
    wrapper = IQPWrapper(**net).eval()
    torch.nn.init.normal_(wrapper.plugin.out_conv.weight, std=0.1)
    wrapper.plugin.cache_condition = True  # as load_wrapper
    return wrapper


def measure(wrapper: IQPWrapper, host_only: bool, side: int, repeats: int, threads: int, folder: Path) -> dict:
    """Export one case into ``folder`` and time torch against onnxruntime on one input."""
    path = folder / ("host.onnx" if host_only else "plugin.onnx")
    info = export(wrapper, path, host_only=host_only)
    size = wrapper.adapter.input_size or side
    lo, hi = wrapper.adapter.image_range
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * (hi - lo) + lo
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {"lq": x.numpy()}

    def torch_run():
        with torch.no_grad():
            return (wrapper.adapter.run(x) if host_only else wrapper(x)).numpy()

    runs = {"torch": torch_run, "onnxruntime": lambda: session.run(None, feeds)[0]}
    max_diff = float(np.abs(runs["torch"]() - runs["onnxruntime"]()).max())  # also the warm-up
    times = {name: [] for name in runs}
    for r in range(repeats):
        for name in list(runs)[r % 2:] + list(runs)[:r % 2]:
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    latency = {name: median(t) for name, t in times.items()}
    return {"export_s": info["seconds"], "bytes": info["bytes"], "dynamic": info["dynamic"], "input": list(x.shape),
            "torch_s": latency["torch"], "onnxruntime_s": latency["onnxruntime"],
            "ratio": latency["onnxruntime"] / latency["torch"], "max_abs_diff": max_diff, "times": times}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", action="append", help="wrapper YAML (repeatable; default: the tiny SwinIR and "
                                                     "RestoreFormer configs)")
    p.add_argument("--plugin", help="plug-in checkpoint for a single --config")
    p.add_argument("--side", type=int, default=64, help="input side for hosts that take any size (default 64)")
    p.add_argument("--repeats", type=int, default=5, help="measured runs per engine (default 5)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of torch and onnxruntime (default 1)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "export"))
    args = p.parse_args(argv)
    configs = [Path(c) for c in args.config] if args.config else TINY_CONFIGS
    if args.plugin and len(configs) != 1:
        p.error("--plugin goes with exactly one --config")
    torch.set_num_threads(args.threads)
    results, rows = [], []
    for config in configs:
        wrapper = build(config, args.plugin)
        name = f"{config.stem} ({type(wrapper.host).__name__})"
        for host_only in ([False, True] if wrapper.plugin is not None else [True]):
            case = "host" if host_only else "host + plug-in"
            with tempfile.TemporaryDirectory() as folder:
                r = measure(wrapper, host_only, args.side, args.repeats, args.threads, Path(folder))
            results.append({"config": str(config), "host": type(wrapper.host).__name__, "case": case, **r})
            rows.append([name, case, "x".join(map(str, r["input"][2:])), r["dynamic"], f"{r['export_s']:.1f} s",
                         f"{r['bytes'] / 2 ** 20:.2f} MiB", fmt_seconds(r["torch_s"]), fmt_seconds(r["onnxruntime_s"]),
                         fmt_ratio(r["ratio"]), f"{r['max_abs_diff']:.1e}"])
            print(" | ".join(map(str, rows[-1])), flush=True)
    env = {"torch": torch.__version__, "onnxruntime": ort.__version__, "threads": args.threads,
           "repeats": args.repeats, "python": platform.python_version(), "machine": platform.machine()}
    table = markdown_table(["config", "case", "input", "dynamic axes", "export", "file", "torch", "onnxruntime",
                            "ort / torch", "max abs diff"], rows)
    markdown = (f"# iqp export\n\nCPU, {args.threads} thread(s), batch 1, median of {args.repeats} runs; torch "
                f"{env['torch']}, onnxruntime {env['onnxruntime']}.\n\n{table}\n")
    json_path, md_path = write_results(args.out, "export", {"env": env, "results": results}, markdown)
    print(f"\n{table}\n\nwrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
