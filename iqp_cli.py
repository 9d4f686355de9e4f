"""Entry point of the ``iqp`` command.

It lives outside the ``iqp_plugin`` package so that it is imported first and can ask the package to defer
its BasicSR registration (:data:`DEFER_REGISTRATION`, read by ``iqp_plugin/__init__.py``), which loads
torchvision, BasicSR and pyiqa and takes seconds. ``iqp --help`` and argument errors then load no torch at
all, ``iqp score`` loads no BasicSR, and the commands that build models register everything first
(:data:`iqp_plugin.cli.COMMANDS`).
"""

DEFER_REGISTRATION = True


def main(argv: list[str] | None = None) -> None:
    """``iqp <command> [options]``."""
    from iqp_plugin.cli import main as dispatch

    dispatch(argv)


if __name__ == "__main__":  # python -m iqp_cli: run the module under its own name, where iqp_plugin looks for the flag
    import iqp_cli

    iqp_cli.main()
