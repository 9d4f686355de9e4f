"""Train with BasicSR's pipeline and the project's registrations.

    python -m iqp_plugin.train -opt configs/X.yml [--auto_resume] [--launcher pytorch] [--force_yml k=v]
    torchrun --nproc_per_node 2 -m iqp_plugin.train -opt configs/X.yml --launcher pytorch

Experiments are written under ``./experiments/<name>`` of the current directory; training states are
written atomically, a checkpoint that cannot be written stops the run, and ``--auto_resume`` continues from the
newest readable state whose network files are complete (:mod:`iqp_plugin.models.training`). The option file,
with ``--force_yml`` applied, is checked before training starts (:mod:`iqp_plugin.io.training_keys`).
Run as a module or as ``iqp train``, errors end in one line (exit code 2) and Ctrl-C in
"iqp: interrupted, partial work kept in experiments/<name>" (exit code 130).
"""
from __future__ import annotations

import os
import sys

import iqp_plugin
from iqp_plugin.cli import parsers, writing
from iqp_plugin.io.options import apply_overrides, read_options
from iqp_plugin.io.registry import check_option_types
from iqp_plugin.io.training_keys import check_devices, check_training_options, missing_option
from iqp_plugin.models import training


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    known = parsers.train().parse_args(argv)
    iqp_plugin.register()
    opt = read_options(known.opt)
    origins = apply_overrides(opt, known.force_yml, known.opt)
    check_option_types(opt)
    check_training_options(opt, known.opt, origins)
    check_devices(opt, known.opt, distributed=known.launcher != "none")
    writing(os.path.join(os.getcwd(), "experiments", opt["name"]))

    training.patch()
    from basicsr.train import train_pipeline

    sys.argv = [sys.argv[0], *argv]
    try:
        train_pipeline(os.getcwd())
    except KeyError as err:  # an option BasicSR reads that no check above knows of
        error = missing_option(err, known.opt)
        if error is None:
            raise
        raise error from err
    _close_process_group()


def _close_process_group() -> None:
    """After a successful run, wait for every rank, then close the process group before exiting.

    BasicSR validates on rank 0 only after training; without this, the other ranks exit while rank 0 still
    holds the group open and gloo aborts them ("terminate called without an active exception").
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    from iqp_plugin.cli import run

    run(main)
