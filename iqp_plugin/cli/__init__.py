"""The ``iqp`` command: ``iqp <command> [options]``. Each command lives in its own module, its options in
:mod:`iqp_plugin.cli.parsers` (argparse only, so that ``--help`` and argument errors return before torch is
loaded), and it runs through :func:`run`, which turns user errors and Ctrl-C into one line (exit codes 2
and 130)."""
from __future__ import annotations

import importlib
import sys
import warnings

from iqp_plugin.cli import parsers
from iqp_plugin.errors import IQPError

#: command -> (module with ``main(argv)``, its parser in :mod:`iqp_plugin.cli.parsers`, whether it builds models
#: (registers the project in BasicSR first), help line)
COMMANDS = {
    "train": ("iqp_plugin.train", parsers.train, True, "train with a BasicSR option YAML (-opt FILE)"),
    "score": ("iqp_plugin.cli.score", parsers.score, False,
              "score image folders with an NR-IQA prior (-i DIR -o CSV; --summary CSV)"),
    "restore": ("iqp_plugin.cli.restore", parsers.restore, True,
                "restore an image or folder with host + plug-in (-i IN -o OUT --config F)"),
    "compare": ("iqp_plugin.cli.compare", parsers.compare, True,
                "host alone vs host + plug-in: grids, metrics, plot, HTML (-i IN -o DIR)"),
    "export": ("iqp_plugin.cli.export", parsers.export, True,
               "host + plug-in as one ONNX graph (--config F --onnx OUT.onnx)"),
    "app": ("iqp_plugin.cli.app", parsers.app, True,
            "a local web page: restore your images, move the score live (--config F; [app] extra)"),
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:<10} {help_}" for name, (*_, help_) in COMMANDS.items()]
        print("usage: iqp <command> [options]\n\ncommands:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\niqp: unknown command '{argv[0]}'", file=sys.stderr)
            sys.exit(2)
        return
    module, parser, builds_models, _ = COMMANDS[argv[0]]
    parser().parse_args(argv[1:])  # --help and argument errors end here, before torch is loaded
    if builds_models:
        import iqp_plugin

        iqp_plugin.register()
    run(importlib.import_module(module).main, argv[1:])


#: The output the running command writes into, named if it is interrupted (see :func:`writing`).
_output: str | None = None


def writing(path) -> None:
    """Record the output the running command writes into: Ctrl-C then says its partial work is kept there."""
    global _output
    _output = str(path)


#: Warnings that third-party code gives while a command builds its models, about that code, not the user's input:
#: (category, message regex). BasicSR's SwinIR calls ``torch.meshgrid`` without ``indexing``.
THIRD_PARTY_WARNINGS = [(UserWarning, r"torch\.meshgrid: in an upcoming release")]


def run(entry, argv: list[str] | None = None) -> None:
    """Call a command's ``main``, the one handler of every command: a user error ends in one line and exit
    code 2; Ctrl-C in one line naming where the partial work is kept (:func:`writing`) and exit code 130,
    instead of a traceback. :data:`THIRD_PARTY_WARNINGS` are not shown."""
    global _output
    _output = None
    try:
        with warnings.catch_warnings():
            for category, message in THIRD_PARTY_WARNINGS:
                warnings.filterwarnings("ignore", message, category)
            entry(argv)
    except KeyboardInterrupt:
        print(f"iqp: interrupted, partial work kept in {_output or 'the outputs written so far'}", file=sys.stderr)
        sys.exit(130)
    except (IQPError, OSError) as err:  # user errors; anything else is a bug and keeps its traceback
        print(f"iqp: error: {err}", file=sys.stderr)
        sys.exit(2)
