"""The ``iqp`` command: ``iqp <command> [options]``; each command lives in its own module and runs through
:func:`run`, which turns user errors and Ctrl-C into one line (exit codes 2 and 130)."""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": ("iqp_plugin.train", "train with a BasicSR option YAML (-opt FILE)"),
    "score": ("iqp_plugin.scoring", "score image folders with an NR-IQA prior (-i DIR -o CSV; --summary CSV)"),
    "restore": ("iqp_plugin.restore", "restore an image or folder with host + plug-in (-i IN -o OUT --config F)"),
    "compare": ("iqp_plugin.compare", "host alone vs host + plug-in: grids, metrics, plot, HTML (-i IN -o DIR)"),
    "export": ("iqp_plugin.export", "host + plug-in as one ONNX graph (--config F --onnx OUT.onnx)"),
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: iqp <command> [options]\n\ncommands:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\niqp: unknown command '{argv[0]}'", file=sys.stderr)
            sys.exit(2)
        return
    module = importlib.import_module(COMMANDS[argv[0]][0])
    run(module.main, argv[1:])


#: The output the running command writes into, named if it is interrupted (see :func:`writing`).
_output: str | None = None


def writing(path) -> None:
    """Record the output the running command writes into: Ctrl-C then says its partial work is kept there."""
    global _output
    _output = str(path)


def run(entry, argv: list[str] | None = None) -> None:
    """Call a command's ``main``, the one handler of every command: a user error (bad option, missing or
    unreadable file, unwritable output) ends in one line and exit code 2; Ctrl-C in one line naming where
    the partial work is kept (:func:`writing`) and exit code 130, instead of a traceback."""
    from iqp_plugin.registry import UnknownTypeError

    global _output
    _output = None
    try:
        entry(argv)
    except (OSError, ValueError, UnknownTypeError) as err:
        print(f"iqp: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"iqp: interrupted, partial work kept in {_output or 'the outputs written so far'}", file=sys.stderr)
        sys.exit(130)
