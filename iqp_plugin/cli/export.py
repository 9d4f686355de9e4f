"""``iqp export``: host + plug-in as one ONNX graph, or the plug-in-free host for before/after.

    iqp export --config wrapper.yml --onnx out.onnx [--plugin F] [--score S | --score-input] [--size N]
               [--host-only] [--w W]

Needs the ``[export]`` extra (``pip install -e '.[export]'``). The graph's inputs, output, dynamic sizes and
metadata, and how it is exported: :mod:`iqp_plugin.inference.onnx`. The options that need no model, and the
place of the ``.onnx`` file (not one of the files it reads), are checked before the model loads; the file is
written atomically.
"""
from __future__ import annotations

import logging
from pathlib import Path

from iqp_plugin.cli import parsers
from iqp_plugin.errors import InvalidInputError
from iqp_plugin.inference.loading import host_kwargs, load_wrapper, wrapper_options
from iqp_plugin.inference.onnx import export
from iqp_plugin.io.files import check_outputs_apart, check_writable
from iqp_plugin.prior.score_files import check_scores


def main(argv: list[str] | None = None) -> None:
    """Run ``iqp export`` with the options ``argv``: check them, load the wrapper, write the ONNX file."""
    args = parsers.export().parse_args(argv)
    if args.score is not None:
        check_scores(args.score, "--score")
    if args.size is not None and args.size < 1:
        raise InvalidInputError(f"--size must be a positive side in pixels, got {args.size}")
    if args.host_only and (args.score is not None or args.score_input):
        raise InvalidInputError("--host-only exports no plug-in: drop --score/--score-input")
    if Path(args.onnx).suffix.lower() != ".onnx":
        raise InvalidInputError(f"--onnx {args.onnx}: name the file *.onnx")
    check_writable(args.onnx, option="--onnx")
    if not Path(args.config).is_file():
        raise FileNotFoundError(f"--config {args.config}: no such file")
    net, plugin_file = wrapper_options(args.config)
    plugin_file = args.plugin or plugin_file
    reads = [args.config, *(f for f in (plugin_file, net.get("host_checkpoint")) if f)]
    check_outputs_apart(reads, files={"--onnx": args.onnx})
    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError as err:
            raise InvalidInputError(f"iqp export needs {module}: pip install -e '.[export]'") from err
    logging.getLogger("onnxscript.optimizer").setLevel(logging.ERROR)  # notes on constants it leaves unfolded
    if args.host_only:
        net["plugin"], plugin_file = None, None
    elif (args.score is not None or args.score_input) and net.get("plugin") is None and not plugin_file:
        raise InvalidInputError("--score and --score-input need a plug-in: --plugin F or a plugin block in the config")
    wrapper = load_wrapper(net, plugin_file, "cpu")
    kwargs = host_kwargs(wrapper, w=args.w)
    info = export(wrapper, args.onnx, score=args.score, score_input=args.score_input, size=args.size,
                  host_only=args.host_only, host_kwargs=kwargs)
    what = "host" if args.host_only or wrapper.plugin is None else "host + plug-in"
    print(f"iqp export: {what} -> {args.onnx} ({info['bytes'] / 2 ** 20:.1f} MiB, {info['seconds']:.1f} s); "
          f"inputs {', '.join(info['inputs'])}; dynamic {info['dynamic']}; score {info['score']}; "
          f"scale {info['scale']}" + (f"; size {info['size']}x{info['size']}" if info["size"] else ""))


if __name__ == "__main__":
    from iqp_plugin.cli import run

    run(main)
