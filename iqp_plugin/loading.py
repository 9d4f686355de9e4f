"""Loading a wrapper for inference (``iqp restore``, ``compare``, ``export``, the benchmarks) on the device
that ``--device`` names (:func:`iqp_plugin.devices.resolve_device`).

A wrapper comes from either

* ``--config wrapper.yml``: a file with a ``network_g: {type: IQPWrapper, ...}`` block (as the training
  configs) or a bare IQPWrapper option dict; an optional top-level ``plugin_checkpoint: FILE``; or
* ``--host FILE [--plugin F]``: a host checkpoint alone, its architecture and options detected by spandrel
  (``host: auto``, see :mod:`iqp_plugin.wrapper`); no YAML needed;
* ``--host TYPE [--host-opt JSON] --host-checkpoint F [--plugin F]``; with ``--plugin`` alone the host
  is the one recorded in the plug-in checkpoint.

A plug-in file is a training checkpoint (``net_g_*.pth``): ``params_ema`` is loaded when present, else
``params``; its ``plugin_opt`` builds the plug-in when the config has no ``plugin`` block. It records the
SHA-256 of the host file it was trained with: another host file is an error (a plug-in fits only its host),
or a warning with ``--allow-host-mismatch`` (``load_wrapper(..., allow_host_mismatch=True)``).
"""
from __future__ import annotations

import argparse
import json
import os
import warnings

import torch

from iqp_plugin.checkpoint import file_sha256, read_checkpoint
from iqp_plugin.devices import resolve_device
from iqp_plugin.options import read_yaml
from iqp_plugin.registry import check_options
from iqp_plugin.wrapper import IQPWrapper


def wrapper_options(config: str) -> tuple[dict, str | None]:
    """IQPWrapper keyword arguments and the plug-in checkpoint named by a wrapper YAML."""
    opt = read_yaml(config, "Config")
    plugin_file = opt.pop("plugin_checkpoint", None)
    net = dict(opt.get("network_g", opt))
    kind = net.pop("type", "IQPWrapper")
    if kind != "IQPWrapper" or "host" not in net:
        raise ValueError(f"{config}: needs network_g: {{type: IQPWrapper, host: {{...}}}} or a bare IQPWrapper "
                         f"dict with a 'host' entry (got type {kind!r}); for a bare host use --host/--host-checkpoint")
    check_options(IQPWrapper, net, config)
    return net, plugin_file


def load_wrapper(net: dict, plugin_file: str | None = None, device: str | torch.device = "cpu",
                 allow_host_mismatch: bool = False) -> IQPWrapper:
    """Build an IQPWrapper from its options, load the plug-in file (if any) and put it in eval mode; a missing
    host checkpoint file is an error before anything is read, and so is a plug-in trained on other host weights
    (a warning with ``allow_host_mismatch``)."""
    net = dict(net)
    host_file = net.get("host_checkpoint")
    if host_file and not os.path.isfile(host_file):
        raise FileNotFoundError(f"host checkpoint not found: {host_file}. Point host_checkpoint in the config, or "
                                "--host / --host-checkpoint, at the host weights")
    if net.get("plugin") is not None and not plugin_file:
        raise ValueError("the config builds a plug-in but names no trained one: an untrained plug-in reproduces "
                         "the host. Add plugin_checkpoint: FILE to the config or pass --plugin FILE "
                         "(or set plugin: null for the host alone)")
    state = None
    if plugin_file:
        ckpt = read_checkpoint(plugin_file)
        state = ckpt.get("params_ema") or ckpt.get("params")
        if not isinstance(state, dict):
            raise ValueError(f"{plugin_file} is not a plug-in checkpoint: it has no 'params_ema' or 'params' "
                             f"(keys: {sorted(ckpt)[:10]})")
        if net.get("plugin") is None:
            net["plugin"] = ckpt.get("plugin_opt") or {}
        _check_host_file(ckpt.get("host") or {}, host_file, plugin_file, allow_host_mismatch)
    try:
        wrapper = IQPWrapper(**net)
    except TypeError as err:
        raise ValueError(str(err)) from err
    if state is not None:
        try:
            wrapper.load_plugin_state_dict(state)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[:4]
            hint = ("" if "preset" in net["plugin"] else " (a plug-in saved before the recipes, 2026-12-06, was "
                    "the lean preset: add preset: lean to its plugin options)")
            raise ValueError(f"{plugin_file} does not fit the plug-in built from {net['plugin']}{hint}: "
                             + " ".join(first)) from err
    if wrapper.plugin is not None:
        wrapper.plugin.cache_condition = True  # weights are fixed from here on
    return wrapper.to(device).eval()


def _check_host_file(trained: dict, host_file: str | None, plugin_file: str, allow: bool) -> None:
    """ValueError (a warning when ``allow``) when the host file is not the one the plug-in was trained with."""
    sha = trained.get("sha256")
    found = file_sha256(host_file) if host_file else None
    if sha and found != sha:
        loads = f"{host_file} (sha256 {found[:12]})" if found else "no weights"
        message = (f"{plugin_file} was trained on host weights {trained.get('checkpoint')} (sha256 {sha[:12]}), but "
                   f"the host loads {loads}, and a plug-in fits only the host it was trained on")
        if not allow:
            raise ValueError(f"{message}: load that host file, or pass --allow-host-mismatch "
                             "(allow_host_mismatch=True) to run it anyway")
        warnings.warn(f"{message}: results may be poor (--allow-host-mismatch)")


def host_kwargs(wrapper: IQPWrapper, **given) -> dict:
    """The host arguments given on the command line (None: not given), each checked against those its adapter
    declares (``HostAdapter.host_args``)."""
    kwargs = {k: v for k, v in given.items() if v is not None}
    for key in kwargs:
        if key not in wrapper.adapter.host_args:
            takes = ", ".join(f"--{k} ({what})" for k, what in wrapper.adapter.host_args.items()) or "no host option"
            raise ValueError(f"--{key} is not an option of this host, {type(wrapper.host).__name__}; it takes {takes}")
    return kwargs


def load_from_args(args: argparse.Namespace) -> IQPWrapper:
    """The wrapper that :func:`iqp_plugin.parsers.add_model_args` options describe, on the chosen device."""
    device = resolve_device(args.device)
    allow = args.allow_host_mismatch
    if args.config:
        if args.host:
            raise ValueError("give either --config or --host, not both")
        net, plugin_file = wrapper_options(args.config)
        return load_wrapper(net, args.plugin or plugin_file, device, allow)
    if args.host and (os.path.isfile(args.host) or not args.host.isidentifier()):  # a file, not an arch type
        if args.host_opt:
            raise ValueError("--host-opt goes with --host TYPE: the options of a --host checkpoint are detected")
        if args.host_checkpoint:
            raise ValueError("give the host checkpoint once: --host FILE, or --host TYPE --host-checkpoint FILE")
        net = {"host": "auto", "host_checkpoint": args.host}
    elif args.host:
        try:
            host_opt = json.loads(args.host_opt or "{}")
        except json.JSONDecodeError as err:
            raise ValueError(f"--host-opt is not valid JSON: {err}") from err
        if not isinstance(host_opt, dict):
            raise ValueError("--host-opt must be a JSON object")
        net = {"host": {**host_opt, "type": args.host}, "host_checkpoint": args.host_checkpoint}
    elif args.plugin:
        host = read_checkpoint(args.plugin).get("host") or {}
        if not host.get("opt"):
            raise ValueError(f"{args.plugin} records no host: give --host FILE, or --host TYPE --host-checkpoint F")
        net = {"host": host["opt"], "host_checkpoint": args.host_checkpoint or host.get("checkpoint")}
    else:
        raise ValueError("choose the model with --config FILE, --host FILE [--plugin F] or "
                         "--host TYPE --host-checkpoint F [--plugin F]")
    return load_wrapper(net, args.plugin, device, allow)
