"""The ``iqp`` command: ``iqp <command> [options]``; each command lives in its own module."""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": ("iqp_plugin.train", "train with a BasicSR option YAML (-opt FILE)"),
    "score": ("iqp_plugin.scoring", "score image folders with an NR-IQA prior (-i DIR -o CSV; --summary CSV)"),
    "restore": ("iqp_plugin.restore", "restore an image or folder with host + plug-in (-i IN -o OUT --config F)"),
    "compare": ("iqp_plugin.compare", "host alone vs host + plug-in: grids, metrics, plot, HTML (-i IN -o DIR)"),
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


def run(entry, argv: list[str] | None = None) -> None:
    """Call a command's ``main``; user errors end in one clear line and exit code 2, not a traceback."""
    from iqp_plugin.registry import UnknownTypeError

    try:
        entry(argv)
    except (FileNotFoundError, ValueError, UnknownTypeError) as err:
        print(f"iqp: error: {err}", file=sys.stderr)
        sys.exit(2)
