"""Loading a wrapper for inference (``iqp restore``, ``compare``, ``export``, the benchmarks) on the device
that ``--device`` names (:func:`iqp_plugin.inference.devices.resolve_device`).

A wrapper comes from either

* ``--config wrapper.yml``: a file with a ``network_g: {type: IQPWrapper, ...}`` block (as the training
  configs) or a bare IQPWrapper option dict; an optional top-level ``plugin_checkpoint: FILE``
  (``--plugin`` and ``--host-checkpoint`` override the config's files); or
* ``--host FILE [--plugin F]``: a host checkpoint alone, its architecture and options detected by spandrel
  (``host: auto``, see :mod:`iqp_plugin.archs.wrapper`); no YAML needed;
* ``--host TYPE [--host-opt JSON] --host-checkpoint F [--plugin F]``; with ``--plugin`` alone the host
  is the one recorded in the plug-in checkpoint.

A host without weights would restore with random ones: it is an error unless asked for by name, with
``host_checkpoint: random`` (``--host-checkpoint random``). Weights holding NaN or infinite values (a diverged
run), the host's or the plug-in's, are refused naming the file.

A plug-in file is a training checkpoint (``net_g_*.pth``, :mod:`iqp_plugin.io.plugin_checkpoint`): its EMA
weights are loaded when present; its ``plugin_opt`` builds the plug-in when the config has no ``plugin`` block. It
records the SHA-256 of the host file it was trained with: another host file is an error (a plug-in fits only its host),
or a warning with ``--allow-host-mismatch`` (``load_wrapper(..., allow_host_mismatch=True)``).
"""
from __future__ import annotations

import argparse
import json
import os

import torch

from iqp_plugin.archs.wrapper import IQPWrapper
from iqp_plugin.errors import InvalidInputError
from iqp_plugin.inference.devices import resolve_device
from iqp_plugin.io import plugin_checkpoint
from iqp_plugin.io.host_checkpoint import check_finite
from iqp_plugin.io.options import read_yaml
from iqp_plugin.io.registry import check_host_options, check_options

#: the ``host_checkpoint`` that asks for a host with random weights (tests, smoke runs)
RANDOM_HOST = "random"


def wrapper_options(config: str) -> tuple[dict, str | None]:
    """IQPWrapper keyword arguments and the plug-in checkpoint named by a wrapper YAML."""
    opt = read_yaml(config, "Config")
    plugin_file = opt.pop("plugin_checkpoint", None)
    net = dict(opt.get("network_g", opt))
    kind = net.pop("type", "IQPWrapper")
    if kind != "IQPWrapper" or "host" not in net:
        raise InvalidInputError(f"{config}: needs network_g: {{type: IQPWrapper, host: {{...}}}} or a bare IQPWrapper "
                         f"dict with a 'host' entry (got type {kind!r}); for a bare host use --host/--host-checkpoint")
    check_options(IQPWrapper, net, config)
    check_host_options(net["host"], f"{config}: host")
    return net, plugin_file


def load_wrapper(net: dict, plugin_file: str | None = None, device: str | torch.device = "cpu",
                 allow_host_mismatch: bool = False) -> IQPWrapper:
    """Build an IQPWrapper from its options, load the plug-in file (if any) and put it in eval mode; a missing
    host checkpoint file is an error before anything is read, and so are no host checkpoint at all (unless
    it is :data:`RANDOM_HOST`) and a plug-in trained on other host weights (a warning with
    ``allow_host_mismatch``)."""
    net = dict(net)
    host_file = net.get("host_checkpoint")
    if host_file == RANDOM_HOST:
        net["host_checkpoint"] = host_file = None
    elif not host_file and net.get("host") != "auto":  # host: auto without a file has its own error
        raise InvalidInputError("the host has no weights (no host_checkpoint), so it would restore with random "
                                "ones: give host_checkpoint: FILE in the config or --host-checkpoint FILE "
                                f"(host_checkpoint: {RANDOM_HOST} or --host-checkpoint {RANDOM_HOST} runs a random "
                                "host on purpose)")
    if host_file and not os.path.isfile(host_file):
        raise FileNotFoundError(f"host checkpoint not found: {host_file}. Point host_checkpoint in the config, or "
                                "--host / --host-checkpoint, at the host weights")
    if net.get("plugin") is not None and not plugin_file:
        raise InvalidInputError("the config builds a plug-in but names no trained one: an untrained plug-in reproduces "
                         "the host. Add plugin_checkpoint: FILE to the config or pass --plugin FILE "
                         "(or set plugin: null for the host alone)")
    state = None
    if plugin_file:
        ckpt = plugin_checkpoint.read(plugin_file)
        state = ckpt.weights
        check_finite(state, plugin_file, "plug-in")
        if net.get("plugin") is None:
            net["plugin"] = ckpt.plugin_opt
        plugin_checkpoint.check_host_file(ckpt, host_file, plugin_file, allow_host_mismatch)
    try:
        wrapper = IQPWrapper(**net)
    except TypeError as err:
        raise InvalidInputError(str(err)) from err
    if state is not None:
        try:
            wrapper.load_plugin_state_dict(state)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[:4]
            hint = ("" if "preset" in net["plugin"] else " (a plug-in saved before the recipes, 2026-12-06, was "
                    "the lean preset: add preset: lean to its plugin options)")
            raise InvalidInputError(f"{plugin_file} does not fit the plug-in built from {net['plugin']}{hint}: "
                             + " ".join(first)) from err
    if wrapper.plugin is not None:
        wrapper.plugin.cache_condition = True  # weights are fixed from here on
    return wrapper.to(device).eval()


def host_kwargs(wrapper: IQPWrapper, **given) -> dict:
    """The host arguments given on the command line (None: not given), each checked against those its adapter
    declares (``HostAdapter.host_args``)."""
    kwargs = {k: v for k, v in given.items() if v is not None}
    for key in kwargs:
        if key not in wrapper.adapter.host_args:
            takes = ", ".join(f"--{k} ({what})" for k, what in wrapper.adapter.host_args.items()) or "no host option"
            raise InvalidInputError(f"--{key} is not an option of this host, {type(wrapper.host).__name__}; "
                                    f"it takes {takes}")
    return kwargs


def load_from_args(args: argparse.Namespace) -> IQPWrapper:
    """The wrapper that :func:`iqp_plugin.cli.parsers.add_model_args` options describe, on the chosen device."""
    device = resolve_device(args.device)
    allow = args.allow_host_mismatch
    if args.config:
        if args.host:
            raise InvalidInputError("give either --config or --host, not both")
        net, plugin_file = wrapper_options(args.config)
        if args.host_checkpoint:  # as --plugin, the command line overrides the config
            net["host_checkpoint"] = args.host_checkpoint
        return load_wrapper(net, args.plugin or plugin_file, device, allow)
    if args.host and (os.path.isfile(args.host) or not args.host.isidentifier()):  # a file, not an arch type
        if args.host_opt:
            raise InvalidInputError("--host-opt goes with --host TYPE: the options of a --host checkpoint are detected")
        if args.host_checkpoint:
            raise InvalidInputError("give the host checkpoint once: --host FILE, or --host TYPE --host-checkpoint FILE")
        net = {"host": "auto", "host_checkpoint": args.host}
    elif args.host:
        try:
            host_opt = json.loads(args.host_opt or "{}")
        except json.JSONDecodeError as err:
            raise InvalidInputError(f"--host-opt is not valid JSON: {err}") from err
        if not isinstance(host_opt, dict):
            raise InvalidInputError("--host-opt must be a JSON object")
        check_host_options({**host_opt, "type": args.host}, "--host-opt")
        net = {"host": {**host_opt, "type": args.host}, "host_checkpoint": args.host_checkpoint}
    elif args.plugin:
        host = plugin_checkpoint.read(args.plugin).host
        if not host.get("opt"):
            raise InvalidInputError(f"{args.plugin} records no host: give --host FILE, "
                                    "or --host TYPE --host-checkpoint F")
        net = {"host": host["opt"], "host_checkpoint": args.host_checkpoint or host.get("checkpoint")}
    else:
        raise InvalidInputError("choose the model with --config FILE, --host FILE [--plugin F] or "
                         "--host TYPE --host-checkpoint F [--plugin F]")
    return load_wrapper(net, args.plugin, device, allow)
