"""``python -m iqp_plugin.cli``: the ``iqp`` command."""
from iqp_plugin.cli import main

main()
