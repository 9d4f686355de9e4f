"""What the IQP plug-in costs on top of its host: parameters, inference latency and memory, training step.

Hosts (random, seeded weights; batch 1; fp32):

* CodeFormer, official inference arguments (dim_embd 512, 9 layers, codebook 1024, connect_list
  32/64/128/256, ``w=0.5``, ``adain=True``), 512x512 input in [-1, 1];
* RestoreFormer, official (GFPGAN) arguments, 512x512 input in [-1, 1];
* SwinIR-M x4 (the official classical/real-world x4 configuration: img_size 64, window 8, embed 180,
  depths/heads [6]*6, mlp_ratio 2, pixelshuffle, 1conv) on a 256x256 LR input in [0, 1].

Cases, per host:

* ``host``: the host module's own forward (the user's baseline);
* ``plugin``: ``IQPWrapper(plugin={})``, i.e. the host adapter's ``default_recipe`` (see
  :mod:`iqp_plugin.archs.recipes`): ``lean`` on CodeFormer and RestoreFormer (adaLN-single, similarity index heads,
  the host's own codebook borrowed), ``pixel`` on SwinIR (per-block adaLN, dense index heads, two 1024-code
  codebooks of its own, a code per bottleneck pixel, a 7x7 injection); score = the plug-in's inference target;
* ``plugin_other``: the other recipe on the same host (``pixel`` on the face hosts, ``lean`` on SwinIR), so
  that both recipes are reported side by side; the JSON (``recipes`` per host, ``recipe`` per variant) and the
  markdown name the recipe of each case;
* ``plugin_graphed`` (CUDA only): ``plugin`` replayed as a CUDA graph (:mod:`iqp_plugin.inference.cuda_graphs`); its
  outputs are checked against the eager plug-in's on the same bottleneck;
* training step (Adam lr 1e-4, L1 loss between the output and a random target, then ``zero_grad``):
  ``full`` fine-tunes every host parameter through the host's own forward (host in train mode);
  ``plugin``/``plugin_other`` train the plug-in only, host frozen and in eval mode, as
  ``IQPWrapper``/``IQPModel`` do (the L1 loss back-propagates through the frozen host decoder, the
  costliest plug-in step: stage 3 of IQPModel), with the default ``recompute_decoder: true``;
  ``plugin_stored`` is ``plugin`` with ``recompute_decoder: false`` (every decoder activation stored).

Every measured run is timed and its peak memory recorded (see ``benchmarks/common.py`` for what is
measured on CPU and on CUDA). Cases of one host run in one worker process, interleaved round by round,
so the ratios compare runs made under the same machine load; inference and training of each host run
in separate fresh worker processes. Ratios are the result; absolute times are context only.

    python benchmarks/overhead.py --device cpu --budget small --out benchmarks/out/overhead
    python benchmarks/overhead.py --phases params             # parameter counts only, seconds
    python benchmarks/overhead.py --device cuda --budget full --out $OUT/overhead
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import (  # noqa: E402
    CPU_WORKER_ENV,
    fmt_bytes,
    fmt_count,
    fmt_ratio,
    fmt_seconds,
    interleaved_runs,
    markdown_table,
    median,
    module_tensors,
    optimizer_tensors,
    tensor_bytes,
    timed,
    write_results,
)

HOSTS = ("codeformer", "restoreformer", "swinir")
FACE_HOSTS = ("codeformer", "restoreformer")

#: host option dicts (BasicSR ``type`` + kwargs), input side and image range, per configuration size
HOST_CONFIGS = {
    "full": {
        "codeformer": {"opt": {"type": "CodeFormer", "dim_embd": 512, "n_head": 8, "n_layers": 9, "codebook_size": 1024,
                               "latent_size": 256, "connect_list": ["32", "64", "128", "256"]},
                       "size": 512, "range": (-1.0, 1.0), "kwargs": {"w": 0.5, "adain": True}},
        "restoreformer": {"opt": {"type": "RestoreFormer", "n_embed": 1024, "embed_dim": 256, "ch": 64,
                                  "out_ch": 3, "ch_mult": [1, 2, 2, 4, 4, 8], "num_res_blocks": 2,
                                  "attn_resolutions": [16], "dropout": 0.0, "in_channels": 3, "resolution": 512,
                                  "z_channels": 256, "double_z": False, "enable_mid": True, "head_size": 8},
                          "size": 512, "range": (-1.0, 1.0), "kwargs": {}},
        "swinir": {"opt": {"type": "SwinIR", "upscale": 4, "in_chans": 3, "img_size": 64, "window_size": 8,
                           "img_range": 1.0, "embed_dim": 180, "depths": [6] * 6, "num_heads": [6] * 6,
                           "mlp_ratio": 2, "upsampler": "pixelshuffle", "resi_connection": "1conv"},
                   "size": 256, "range": (0.0, 1.0), "kwargs": {}},
    },
    # CodeFormer's VQGAN (channels, 512x512 input) is fixed by its arch: only its Transformer shrinks
    "tiny": {
        "codeformer": {"opt": {"type": "CodeFormer", "dim_embd": 64, "n_head": 2, "n_layers": 1, "codebook_size": 64},
                       "size": 512, "range": (-1.0, 1.0), "kwargs": {"w": 0.5, "adain": True}},
        "restoreformer": {"opt": {"type": "RestoreFormer", "ch": 32, "ch_mult": [1, 2, 2], "resolution": 64,
                                  "n_embed": 64, "embed_dim": 64, "z_channels": 64},
                          "size": 64, "range": (-1.0, 1.0), "kwargs": {}},
        "swinir": {"opt": {"type": "SwinIR", "upscale": 4, "img_size": 16, "window_size": 8, "embed_dim": 24,
                           "depths": [2], "num_heads": [2], "mlp_ratio": 2, "upsampler": "pixelshuffle",
                           "resi_connection": "1conv"},
                   "size": 32, "range": (0.0, 1.0), "kwargs": {}},
    },
}
TINY_PLUGIN = {"dim": 32, "depth": 1, "heads": 2, "common_size": 64, "hq_size": 64}

#: repeats per budget; ``swinir_*`` override for SwinIR-M, whose CPU forward takes tens of seconds
BUDGETS = {
    "tiny": {"configs": "tiny", "infer_warmup": 1, "infer_repeats": 2, "train_warmup": 1, "train_repeats": 2,
             "warmup_all": True, "swinir_infer_repeats": 2, "swinir_train_size": None},
    "small": {"configs": "full", "infer_warmup": 1, "infer_repeats": 2, "train_warmup": 0, "train_repeats": 1,
              "warmup_all": False, "swinir_infer_repeats": 1, "swinir_train_size": 64},
    "full": {"configs": "full", "infer_warmup": 3, "infer_repeats": 20, "train_warmup": 2, "train_repeats": 10,
             "warmup_all": True, "swinir_infer_repeats": 10, "swinir_train_size": None},
}

TARGETS = {"added_params": {"codeformer": 0.015, "restoreformer": 0.015, "swinir": 0.10}, "latency": 1.10,
           "latency_graphed": 1.03, "train_memory": 0.60}
SCORE = 0.9  # training condition score
LR = 1e-4


def log(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------------------------------
# worker side (a fresh process per host and phase)
# ----------------------------------------------------------------------------------------------------

def _setup(spec: dict):
    import torch

    import iqp_plugin

    iqp_plugin.register()
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    return torch


def other_recipe(default: str) -> str:
    """The recipe that ``plugin_other`` measures: the first of :data:`RECIPES` that is not the host's default."""
    from iqp_plugin.archs.recipes import RECIPES
    return next(name for name in RECIPES if name != default)


def _build(spec: dict):
    """The wrapper (host + its default recipe's plug-in) and the extra plug-ins of this host, seeded."""
    torch = _setup(spec)
    from iqp_plugin import IQPWrapper
    from iqp_plugin.archs.plugin import IQPPlugin
    cfg = HOST_CONFIGS[spec["configs"]][spec["host"]]
    plugin_opt = dict(TINY_PLUGIN if spec["configs"] == "tiny" else {})
    torch.manual_seed(0)
    wrapper = IQPWrapper(host=cfg["opt"], plugin=plugin_opt)
    plugins = {"plugin": wrapper.plugin}
    torch.manual_seed(0)
    host_codebook = wrapper.adapter.codebook if wrapper.adapter.codebook() is not None else None
    plugins["plugin_other"] = IQPPlugin(wrapper.adapter.channels, host_codebook=host_codebook,
                                        **{**plugin_opt, "preset": other_recipe(wrapper.plugin.cfg["preset"])})
    device = torch.device(spec["device"])
    wrapper.to(device)
    for p in plugins.values():
        p.to(device)
    return torch, cfg, wrapper, plugins, device


def _image(torch, size: int, rng: tuple[float, float], device, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    lo, hi = rng
    return (torch.rand(batch, 3, size, size, generator=g) * (hi - lo) + lo).to(device)


def _param_counts(wrapper, plugins) -> dict:
    from iqp_plugin.archs.codebook import Codebook
    host = sum(p.numel() for p in wrapper.host.parameters())
    out = {"host": host, "recipes": recipes_of(plugins), "variants": {}}
    for name, plugin in plugins.items():
        trainable = sum(p.numel() for p in plugin.parameters() if p.requires_grad)
        codebooks = sum(m.embed.numel() for m in plugin.modules() if isinstance(m, Codebook))
        state = sum(v.numel() for v in plugin.state_dict().values())
        out["variants"][name] = {"recipe": plugin.cfg["preset"], "trainable": trainable, "codebook_entries": codebooks,
                                 "added": trainable + codebooks, "ratio": (trainable + codebooks) / host,
                                 "checkpoint_values": state}
    return out


def recipes_of(plugins: dict) -> dict[str, str]:
    """The recipe of every measured case that runs a plug-in (``plugin_graphed``/``plugin_stored`` run
    ``plugin``'s)."""
    default = plugins["plugin"].cfg["preset"]
    return {**{name: p.cfg["preset"] for name, p in plugins.items()}, "plugin_graphed": default,
            "plugin_stored": default}


def worker_params(spec: dict) -> dict:
    _, _, wrapper, plugins, _ = _build(spec)
    return _param_counts(wrapper, plugins)


def _host_out(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def worker_infer(spec: dict) -> dict:
    torch, cfg, wrapper, plugins, device = _build(spec)
    kwargs = cfg["kwargs"]
    x = _image(torch, cfg["size"], cfg["range"], device, spec["batch"], 1)
    host = wrapper.host.eval()
    wrapper.eval()
    for plugin in plugins.values():  # the extra plug-ins are not children of the wrapper yet
        plugin.eval()
        plugin.cache_condition = True  # as iqp restore / compare run it
    outputs = {}  # the last output of each case: a fresh plug-in must reproduce the host

    def host_case():
        outputs["host"] = _host_out(host(x, **kwargs))

    def plugin_case(name):
        def run():
            wrapper.plugin = plugins[name]
            outputs[name] = wrapper(x, **kwargs)
        return run

    cases = {"host": host_case, **{name: plugin_case(name) for name in plugins}}
    if device.type == "cuda":  # the default plug-in's kernels launched as one CUDA graph
        from iqp_plugin.inference.cuda_graphs import GraphedPlugin

        graphed = GraphedPlugin(plugins["plugin"])

        def graphed_case():
            wrapper.plugin = graphed
            outputs["plugin_graphed"] = wrapper(x, **kwargs)

        cases["plugin_graphed"] = graphed_case
    bottleneck = {}  # the last (feat, z) each plug-in saw
    hooks = [p.register_forward_pre_hook(lambda mod, args, name=name: bottleneck.update({name: args[:2]}) and None)
             for name, p in plugins.items()]
    tag = f"[{spec['host']}/inference]"
    log(f"{tag} input {tuple(x.shape)} on {device}; cases {', '.join(cases)}")
    with torch.inference_mode():
        runs = interleaved_runs(cases, device, spec["infer_warmup"], spec["infer_repeats"],
                                warmup_cases=None if spec["warmup_all"] else [list(cases)[-1]],
                                progress=lambda m: log(f"{tag} {m}"))
        diff = max(float((outputs[n] - outputs["host"]).abs().max()) for n in plugins)
        log(f"{tag} fresh plug-in vs host output: max |diff| = {diff:.2e}")
        # the plug-in alone on the host's bottleneck (captured in the runs above): a low-noise estimate
        # of the added latency
        alone = interleaved_runs({name: (lambda p=p, name=name: p(*bottleneck[name]))
                                  for name, p in plugins.items()}, device, 1, max(5, spec["infer_repeats"]))
        for h in hooks:
            h.remove()
        graph_diff = None
        if "plugin_graphed" in cases:  # replay vs eager on the same bottleneck: output, logits, codes
            eager, replay = plugins["plugin"](*bottleneck["plugin"]), graphed(*bottleneck["plugin"])
            graph_diff = max(float((a - b).abs().max()) for a, b in ((eager.z, replay.z), (eager.codes, replay.codes),
                             (eager.logits_common, replay.logits_common), (eager.logits_hq, replay.logits_hq)))
            log(f"{tag} CUDA graph vs eager plug-in: max |diff| = {graph_diff:.2e}")
    variants = {}
    for name, r in runs.items():
        live = tensor_bytes(module_tensors(host, None if name == "host" else plugins.get(name, plugins["plugin"]))
                            + [x])
        growth = max(r["growth"])
        variants[name] = {"recipe": recipes_of(plugins).get(name), "times_s": r["times"],
                          "median_s": median(r["times"]), "min_s": min(r["times"]),
                          "live_bytes": live, "growth_bytes": growth, "peak_bytes": live + growth}
        if name in alone:
            variants[name]["plugin_alone_s"] = median(alone[name]["times"])
    base = variants["host"]
    for v in variants.values():
        v["latency_ratio"] = v["median_s"] / base["median_s"]
        v["latency_ratio_min"] = v["min_s"] / base["min_s"]
        v["memory_ratio"] = v["peak_bytes"] / base["peak_bytes"]
        if "plugin_alone_s" in v:
            v["latency_ratio_from_parts"] = 1 + v["plugin_alone_s"] / base["median_s"]
    return {"input": list(x.shape), "host_kwargs": kwargs, "variants": variants,
            "params": _param_counts(wrapper, plugins), "max_abs_diff_fresh_plugin_vs_host": diff,
            "max_abs_diff_graphed_vs_eager": graph_diff,
            "warmup": spec["infer_warmup"], "warmup_cases": "all" if spec["warmup_all"] else list(cases)[-1],
            "repeats": spec["infer_repeats"]}


def _graph_params(out) -> set[int]:
    """ids of the leaf tensors (parameters) that back-propagating ``out`` would give a gradient."""
    found, seen, stack = set(), set(), [out.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):  # AccumulateGrad
            found.add(id(fn.variable))
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return found


def _train_cases(torch, wrapper, plugins, x, gt, kwargs):
    """Step functions and their optimizers: 'full' (host fine-tuning) and one per plug-in."""
    import torch.nn.functional as F
    host = wrapper.host
    host.requires_grad_(True)
    opts = {"full": torch.optim.Adam([p for p in host.parameters()], lr=LR)}
    host.requires_grad_(False)
    for name, p in plugins.items():
        opts[name] = torch.optim.Adam([q for q in p.parameters() if q.requires_grad], lr=LR)
    # Create Adam's state (the steady-state memory) with a zero-gradient step, which changes no weight, for
    # the parameters a real step gives a gradient: every plug-in parameter, and the host parameters that the
    # L1 loss reaches (found on the autograd graph of one forward; e.g. CodeFormer's code Transformer gets
    # none: its argmax and the detached codes cut the graph).
    host.requires_grad_(True).train()
    reached = _graph_params(F.l1_loss(_host_out(host(x, **kwargs)), gt))
    host.requires_grad_(False).eval()
    for name, opt in opts.items():
        for group in opt.param_groups:
            for q in group["params"]:
                if name != "full" or id(q) in reached:
                    q.grad = torch.zeros_like(q)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def full_step():
        host.requires_grad_(True).train()
        opt = opts["full"]
        opt.zero_grad(set_to_none=True)
        loss = F.l1_loss(_host_out(host(x, **kwargs)), gt)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        host.requires_grad_(False).eval()
        return loss.detach()

    def plugin_step(name, recompute=True):
        def step():
            wrapper.plugin = plugins[name]
            wrapper.recompute_decoder = recompute
            wrapper.train()  # plug-in in train mode (straight-through codes), host stays in eval
            opt = opts[name]
            opt.zero_grad(set_to_none=True)
            loss = F.l1_loss(wrapper(x, score=SCORE, **kwargs), gt)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.detach()
        return step

    cases = {"full": full_step, **{name: plugin_step(name) for name in plugins}}
    if wrapper.adapter.decoder_blocks():
        cases["plugin_stored"] = plugin_step("plugin", recompute=False)
        opts["plugin_stored"] = opts["plugin"]
    return cases, opts


def worker_train(spec: dict) -> dict:
    torch, cfg, wrapper, plugins, device = _build(spec)
    kwargs = cfg["kwargs"]
    size = cfg["size"]
    notes = []
    if spec["host"] == "swinir" and spec.get("swinir_train_size") and spec["swinir_train_size"] != size:
        size = spec["swinir_train_size"]
        notes.append(f"SwinIR training step measured on a {size}x{size} LR input "
                     f"(inference: {cfg['size']}x{cfg['size']}): "
                     f"full fine-tuning at the inference size does not fit this budget/device")
    tag = f"[{spec['host']}/training]"
    while True:
        oom = False
        try:
            x = _image(torch, size, cfg["range"], device, spec["batch"], 1)
            scale = wrapper.host.upscale if spec["host"] == "swinir" else 1
            gt = _image(torch, size * scale, cfg["range"], device, spec["batch"], 2)
            cases, opts = _train_cases(torch, wrapper, plugins, x, gt, kwargs)
            if spec["train_warmup"] == 0:  # first-call costs then fall on the plug-in cases (conservative)
                cases = {**{k: v for k, v in cases.items() if k != "full"}, "full": cases["full"]}
            log(f"{tag} input {tuple(x.shape)} on {device}; cases {', '.join(cases)}")
            runs = interleaved_runs(cases, device, spec["train_warmup"], spec["train_repeats"],
                                    progress=lambda m: log(f"{tag} {m}"))
        except torch.OutOfMemoryError:
            if spec["host"] != "swinir" or size <= 32:
                raise
            oom = True
        if not oom:
            break
        # out of the except block, so that the traceback no longer holds the step's tensors
        cases = opts = x = gt = None
        for p in list(wrapper.parameters()) + [q for pl in plugins.values() for q in pl.parameters()]:
            p.grad = None
        gc.collect()
        torch.cuda.empty_cache()
        notes.append(f"out of memory at a {size}x{size} LR input; retried at {size // 2}x{size // 2}")
        log(f"{tag} {notes[-1]}")
        size //= 2
    host = wrapper.host
    variants = {}
    for name, r in runs.items():
        plugin = None if name == "full" else plugins.get(name, plugins["plugin"])
        weights = tensor_bytes(module_tensors(host, plugin))
        opt_state = tensor_bytes(optimizer_tensors(opts[name]))
        io = tensor_bytes([x, gt])
        growth = max(r["growth"])
        trainable = sum(p.numel() for p in opts[name].state)  # parameters the loss gives a gradient
        variants[name] = {"recipe": recipes_of(plugins).get(name), "times_s": r["times"],
                          "median_s": median(r["times"]), "trainable_params": trainable,
                          "weights_bytes": weights, "optimizer_state_bytes": opt_state, "io_bytes": io,
                          "growth_bytes": growth, "peak_bytes": weights + opt_state + io + growth}
    base = variants["full"]
    for v in variants.values():
        v["time_ratio"] = v["median_s"] / base["median_s"]
        v["memory_ratio"] = v["peak_bytes"] / base["peak_bytes"]
    return {"input": list(x.shape), "target": list(gt.shape), "loss": "L1(output, random target)",
            "optimizer": f"Adam lr {LR}", "variants": variants, "notes": notes,
            "warmup": spec["train_warmup"], "repeats": spec["train_repeats"]}


def worker_profile(spec: dict) -> dict:
    """torch.profiler on one plug-in inference pass (phase 'inference') or training step ('training'),
    with the pass split into host encoder / plug-in / host decoder by timing each part on its own."""
    from torch.profiler import ProfilerActivity, profile, record_function
    torch, cfg, wrapper, plugins, device = _build(spec)
    kwargs = cfg["kwargs"]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    out = {"phase": spec["phase"]}
    tag = f"[{spec['host']}/profile {spec['phase']}]"
    if spec["phase"] == "inference":
        x = _image(torch, cfg["size"], cfg["range"], device, spec["batch"], 1)
        wrapper.eval()
        adapter, plugin = wrapper.adapter, plugins["plugin"]
        with torch.inference_mode():
            wrapper(x, **kwargs)  # warm-up
            parts = {"host encoder": [], "plug-in": [], "host decoder": []}
            for _ in range(max(1, min(3, spec["infer_repeats"]))):
                holder = {}
                parts["host encoder"].append(timed(lambda holder=holder: holder.update(b=adapter.encode(x, **kwargs)),
                                                   device))
                b = holder["b"]
                parts["plug-in"].append(timed(lambda holder=holder, b=b: holder.update(z=plugin(b.feat, b.z).z),
                                              device))
                b.z = holder["z"]
                parts["host decoder"].append(timed(lambda b=b: adapter.decode(b, **kwargs), device))
            med = {k: median(v) for k, v in parts.items()}
            total = sum(med.values())
            out["parts"] = {k: {"median_s": v, "share": v / total} for k, v in med.items()}
            log(f"{tag} " + ", ".join(f"{k} {fmt_seconds(v)} ({v / total:.1%})" for k, v in med.items()))
            with profile(activities=activities) as prof:
                with record_function("host encoder"):
                    b = adapter.encode(x, **kwargs)
                with record_function("plug-in"):
                    b.z = plugin(b.feat, b.z).z
                with record_function("host decoder"):
                    adapter.decode(b, **kwargs)
    else:
        size = spec.get("train_size") or cfg["size"]
        x = _image(torch, size, cfg["range"], device, spec["batch"], 1)
        scale = wrapper.host.upscale if spec["host"] == "swinir" else 1
        gt = _image(torch, size * scale, cfg["range"], device, spec["batch"], 2)
        import torch.nn.functional as F
        host = wrapper.host
        wrapper.plugin = plugins["plugin"]
        wrapper.train()
        out["saved_for_backward"] = {
            "plugin": saved_tensor_bytes(torch, lambda: F.l1_loss(wrapper(x, score=SCORE, **kwargs), gt),
                                         {"host": host, "plugin": wrapper.plugin})}
        host.requires_grad_(True).train()
        out["saved_for_backward"]["full"] = saved_tensor_bytes(
            torch, lambda: F.l1_loss(_host_out(host(x, **kwargs)), gt), {"host": host})
        host.requires_grad_(False).eval()
        for case, per in out["saved_for_backward"].items():
            log(f"{tag} saved for backward, {case} step: "
                + ", ".join(f"{k} {fmt_bytes(v)}" for k, v in list(per.items())[:4]))
        cases, _ = _train_cases(torch, wrapper, {"plugin": plugins["plugin"]}, x, gt, kwargs)
        with profile(activities=activities, profile_memory=True) as prof:
            cases["plugin"]()
        sort = "self_cuda_memory_usage" if device.type == "cuda" else "self_cpu_memory_usage"
    out["top_ops"] = prof.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=60)
    return out


def saved_tensor_bytes(torch, run, roots: dict) -> dict[str, int]:
    """Bytes of the tensors autograd saves for backward while ``run()`` executes, by the submodule that
    saved them: ``<root>.<top-level child>`` (e.g. ``host.generator``); parameters and buffers excluded,
    shared storages counted once, tensors saved outside any submodule (losses, functional glue) under
    ``(outside modules)``. Sorted, largest first."""
    stack, handles, per, seen = ["(outside modules)"], [], {}, set()
    skip = {t.untyped_storage().data_ptr() for m in roots.values() for t in list(m.parameters()) + list(m.buffers())}
    for root, module in roots.items():
        for name, sub in module.named_modules():
            label = f"{root}.{name.split('.')[0]}" if name else root
            handles.append(sub.register_forward_pre_hook(lambda mod, inp, label=label: stack.append(label) and None))
            handles.append(sub.register_forward_hook(lambda mod, inp, res: stack.pop() and None))  # hooks return None

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in seen and ptr not in skip:
            seen.add(ptr)
            per[stack[-1]] = per.get(stack[-1], 0) + t.untyped_storage().nbytes()
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            run()
    finally:
        for h in handles:
            h.remove()
    return dict(sorted(per.items(), key=lambda kv: -kv[1]))


def run_worker(args) -> None:
    spec = json.loads(args.worker)
    fn = {"params": worker_params, "inference": worker_infer, "training": worker_train}[spec["phase"]]
    result = worker_profile(spec) if spec.get("profile") else fn(spec)
    Path(args.result).write_text(json.dumps(result, default=str))


# ----------------------------------------------------------------------------------------------------
# driver side
# ----------------------------------------------------------------------------------------------------

def spawn(spec: dict, device: str) -> dict:
    """Run one worker in a fresh process (so that its memory and allocator state start clean)."""
    env = dict(os.environ)
    if device == "cpu":
        env.update(CPU_WORKER_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec), "--result", str(result)]
        proc = subprocess.run(cmd, env=env, cwd=str(REPO))
        if proc.returncode != 0 or not result.exists():
            return {"error": f"worker {spec['host']}/{spec['phase']} failed with exit code {proc.returncode}"}
        return json.loads(result.read_text())


def variant_label(variant: str, recipes: dict | None) -> str:
    """``variant`` with its recipe, e.g. ``plugin (pixel, the default)``, ``plugin_other (lean)``."""
    recipe = (recipes or {}).get(variant)
    if not recipe:
        return variant
    return f"{variant} ({recipe}, the default)" if variant == "plugin" else f"{variant} ({recipe})"


def evaluate_targets(results: dict, budget: str) -> list[dict]:
    rows = []

    def add(name, value, limit, applies, note=""):
        status = "not run" if value is None else ("PASS" if value <= limit else "MISS")
        rows.append({"target": name, "value": value, "limit": limit, "status": status, "applies_to": applies,
                     "note": note})

    for host in HOSTS:
        params = results.get(host, {}).get("params")
        recipes = results.get(host, {}).get("recipes")
        for variant in ("plugin", "plugin_other"):
            value = params["variants"][variant]["ratio"] if params and "variants" in params else None
            add(f"{host} added parameters / host parameters ({variant_label(variant, recipes)})", value,
                TARGETS["added_params"][host], {"host": host, "phase": "params"})
    infer = results.get("codeformer", {}).get("inference", {})
    recipes = results.get("codeformer", {}).get("recipes")
    for variant in ("plugin", "plugin_other", "plugin_graphed"):
        v = infer.get("variants", {}).get(variant, {})
        if variant == "plugin_graphed" and not v:
            continue  # CUDA only
        note = ""
        if v:
            host_times = infer["variants"]["host"]["times_s"]
            spread = max(host_times) / min(host_times) - 1
            note = f"ratio of minima {v['latency_ratio_min']:.3f}x; the host's own runs differ by {spread:.0%}"
            if "plugin_alone_s" in v:
                note += (f"; the plug-in alone takes {fmt_seconds(v['plugin_alone_s'])}, i.e. "
                         f"{v['latency_ratio_from_parts']:.3f}x")
            if variant == "plugin_graphed":
                note += f"; max |graph - eager| {infer['max_abs_diff_graphed_vs_eager']:.1e} (limit 1e-5)"
        limit = TARGETS["latency_graphed"] if variant == "plugin_graphed" else TARGETS["latency"]
        add(f"codeformer 512x512 inference latency ratio ({variant_label(variant, recipes)})", v.get("latency_ratio"),
            limit, {"host": "codeformer", "phase": "inference"}, note)
    for host in HOSTS:
        train = results.get(host, {}).get("training", {})
        recipes = results.get(host, {}).get("recipes")
        for variant in ("plugin", "plugin_other"):
            v = train.get("variants", {}).get(variant, {})
            note = ""
            if v:
                full = train["variants"]["full"]
                note = (f"{fmt_bytes(v['peak_bytes'])} vs {fmt_bytes(full['peak_bytes'])}; growth during the step "
                        f"{fmt_bytes(v['growth_bytes'])} vs {fmt_bytes(full['growth_bytes'])}")
            add(f"{host} plug-in-only training step peak memory / full fine-tuning ({variant_label(variant, recipes)})",
                v.get("memory_ratio"),
                TARGETS["train_memory"], {"host": host, "phase": "training"}, note)
    return rows


def render_markdown(data: dict) -> str:
    meta, results = data["meta"], data["results"]
    lines = [f"# Plug-in overhead ({meta['device_name']}, budget {meta['budget']}, torch {meta['torch']})", ""]
    lines += [f"Random seeded weights, fp32, batch {meta['batch']}. Ratios are the result (measured in the same worker "
              "process, interleaved); absolute times are context only. Peak memory = live tensors (weights, buffers, "
              f"optimizer state, inputs) + measured peak growth during the call ({meta['memory']}).", ""]
    rows = []
    for host, res in results.items():
        params = res.get("params")
        if not params:
            continue
        for variant, v in params["variants"].items():
            rows.append([host, fmt_count(params["host"]), variant_label(variant, res.get("recipes")),
                         fmt_count(v["added"]), fmt_count(v["trainable"]), fmt_count(v["codebook_entries"]),
                         f"{v['ratio']:.1%}", fmt_count(v["checkpoint_values"])])
    lines += ["## Parameters", "", markdown_table(
        ["host", "host params", "variant", "added (trainable + codebooks)", "trainable", "codebook entries",
         "added / host", "plug-in checkpoint values"], rows), ""]
    rows = []
    for host, res in results.items():
        inf = res.get("inference")
        if not inf or "variants" not in inf:
            continue
        for variant, v in inf["variants"].items():
            rows.append([host, "x".join(map(str, inf["input"][2:])), variant_label(variant, res.get("recipes")),
                         fmt_seconds(v["median_s"]),
                         fmt_ratio(v["latency_ratio"]), fmt_ratio(v.get("latency_ratio_min")),
                         fmt_seconds(v.get("plugin_alone_s")), fmt_ratio(v.get("latency_ratio_from_parts")),
                         fmt_bytes(v["peak_bytes"]), fmt_ratio(v["memory_ratio"]), len(v["times_s"])])
    lines += ["## Inference", "",
              "`latency ratio` = median / host median (the target's number); `ratio of minima` = fastest run / "
              "fastest host run; `plug-in alone` = the plug-in module timed on its own on the host's bottleneck, "
              "and `1 + alone / host` the latency ratio it implies (least sensitive to a busy machine).", "",
              markdown_table(["host", "input", "case", "median latency", "latency ratio", "ratio of minima",
                              "plug-in alone", "1 + alone / host", "peak memory", "memory ratio", "runs"], rows), ""]
    rows, notes = [], []
    for host, res in results.items():
        tr = res.get("training")
        if not tr or "variants" not in tr:
            continue
        notes += tr.get("notes", [])
        for variant, v in tr["variants"].items():
            rows.append([host, "x".join(map(str, tr["input"][2:])), variant_label(variant, res.get("recipes")),
                         fmt_count(v["trainable_params"]),
                         fmt_seconds(v["median_s"]), fmt_ratio(v["time_ratio"]), fmt_bytes(v["peak_bytes"]),
                         fmt_ratio(v["memory_ratio"]),
                         f"{fmt_bytes(v['weights_bytes'])} / {fmt_bytes(v['optimizer_state_bytes'])} / "
                         f"{fmt_bytes(v['growth_bytes'])}", len(v["times_s"])])
    lines += ["## One training step (Adam, L1 on the output; `full` = every host parameter trainable)", "",
              "`trained` = parameters the loss gives a gradient (CodeFormer's code Transformer gets none from an "
              "image loss: argmax + detached codes).", "",
              markdown_table(["host", "input", "case", "trained", "median step", "time ratio vs full",
                              "peak memory", "memory ratio vs full", "weights / optimizer state / growth",
                              "runs"], rows), ""]
    lines += ["## Targets", "", markdown_table(
        ["target", "value", "limit", "status", "context"],
        [[t["target"], "-" if t["value"] is None else (f"{t['value']:.1%}" if "parameters" in t["target"]
                                                        else f"{t['value']:.3f}x"),
          (f"{t['limit']:.1%}" if "parameters" in t["target"] else f"{t['limit']:.2f}x"), t["status"],
          t.get("note", "")]
         for t in data["targets"]]), ""]
    for key, prof in data.get("profiles", {}).items():
        lines += [f"## Profile: {key}", ""]
        if "parts" in prof:
            lines += [markdown_table(["part", "median", "share"],
                                     [[k, fmt_seconds(v["median_s"]), f"{v['share']:.1%}"]
                                      for k, v in prof["parts"].items()]), ""]
        if "dominant" in prof:
            lines += [f"Dominates: {prof['dominant']}", ""]
        if "top_ops" in prof:
            lines += ["```", prof["top_ops"].rstrip(), "```", ""]
    for host, res in results.items():
        diff = (res.get("inference") or {}).get("max_abs_diff_fresh_plugin_vs_host")
        if diff is not None:
            notes.append(f"{host}: a fresh (zero-initialised) plug-in reproduces the host output, "
                         f"max |diff| = {diff:.1e}")
    errors = [f"{h}: {p}: {r[p]['error']}" for h, r in results.items() for p in ("inference", "training")
              if isinstance(r.get(p), dict) and "error" in r[p]]
    all_notes = meta.get("notes", []) + notes + errors
    if all_notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in all_notes] + [""]
    return "\n".join(lines)


def dominant_memory(train_variant: dict) -> str:
    parts = {"host + plug-in weights": train_variant["weights_bytes"],
             "optimizer state": train_variant["optimizer_state_bytes"],
             "activations/gradients/temporaries (measured growth)": train_variant["growth_bytes"]}
    name = max(parts, key=parts.get)
    total = sum(parts.values())
    return f"{name}: {fmt_bytes(parts[name])} of {fmt_bytes(total)} ({parts[name] / total:.0%})"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.machine()
    return f"CPU {name}, {os.cpu_count()} cores"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--budget", default="small", choices=list(BUDGETS))
    parser.add_argument("--hosts", default=",".join(HOSTS), help="comma-separated subset of " + ",".join(HOSTS))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "overhead"))
    parser.add_argument("--phases", default="inference,training",
                        help="inference (which also counts parameters), training, or params (counts only)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in the workers (CPU)")
    parser.add_argument("--no-profile", action="store_true", help="do not profile missed targets")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args)
        return 0

    import torch
    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    unknown = set(hosts) - set(HOSTS)
    if unknown:
        parser.error(f"unknown host(s) {sorted(unknown)}; choose from {', '.join(HOSTS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    if not phases or phases - {"params", "inference", "training"}:
        parser.error(f"--phases: choose from params, inference, training (got {args.phases!r})")
    budget = BUDGETS[args.budget]
    start = time.time()
    results: dict[str, dict] = {}
    base_spec = {"device": args.device, "batch": args.batch, "threads": args.threads, **budget}
    for host in hosts:
        spec = {**base_spec, "host": host}
        if host == "swinir":
            spec["infer_repeats"] = budget["swinir_infer_repeats"]
        if "inference" in phases:
            log(f"== {host}: inference ({time.time() - start:.0f} s elapsed)")
            inf = spawn({**spec, "phase": "inference"}, args.device)
            results[host] = {"params": inf.pop("params", None), "inference": inf}
        else:
            results[host] = {"params": spawn({**spec, "phase": "params"}, args.device)}
        results[host]["recipes"] = (results[host]["params"] or {}).get("recipes")
        if "training" in phases:
            log(f"== {host}: training step ({time.time() - start:.0f} s elapsed)")
            results[host]["training"] = spawn({**spec, "phase": "training"}, args.device)

    data = {"meta": {
        "script": "benchmarks/overhead.py", "argv": sys.argv[1:], "device": args.device, "budget": args.budget,
        "batch": args.batch, "torch": torch.__version__, "python": platform.python_version(),
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else _cpu_name(),
        "threads": args.threads or "torch default",
        "cpu_env": CPU_WORKER_ENV if args.device == "cpu" else None,
        "memory": "CUDA: max_memory_allocated growth" if args.device == "cuda"
        else "CPU: resident-set high-water-mark growth, VmHWM reset via /proc/self/clear_refs",
        "configs": {h: HOST_CONFIGS[budget["configs"]][h] for h in hosts},
        "plugin": ("each host's default recipe (plugin) and the other recipe (plugin_other)"
                   + (f", with the sizes {TINY_PLUGIN}" if budget["configs"] == "tiny" else "")),
        "budget_settings": budget, "targets": TARGETS, "notes": [],
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start))},
        "results": results}
    if budget["configs"] == "tiny":
        data["meta"]["notes"].append("tiny configurations (test of the script): the ratios say nothing about the "
                                     "full-size hosts; CodeFormer's VQGAN is fixed by its arch, "
                                     "only its Transformer shrinks")
    data["targets"] = evaluate_targets(results, args.budget)

    profiles = {}
    if not args.no_profile:
        for t in data["targets"]:
            where = t["applies_to"]
            key = f"{where['host']} {where['phase']}"
            if t["status"] != "MISS" or key in profiles:
                continue
            if where["phase"] == "params":
                p = results[where["host"]]["params"]["variants"]
                recipes = results[where["host"]].get("recipes")
                profiles[key] = {"dominant": ", ".join(f"{variant_label(n, recipes)}: {fmt_count(v['trainable'])} "
                                                       f"trainable + {fmt_count(v['codebook_entries'])} "
                                                       "codebook entries"
                                                       for n, v in p.items())}
                continue
            log(f"== target missed: {t['target']}; profiling {key}")
            spec = {**base_spec, "host": where["host"], "phase": where["phase"], "profile": True,
                    "train_size": results[where["host"]]["training"].get("input", [0, 0, 0])[2] or None}
            prof = spawn(spec, args.device)
            if where["phase"] == "training" and "variants" in results[where["host"]]["training"]:
                variants = results[where["host"]]["training"]["variants"]
                prof["dominant"] = ("plug-in step: " + dominant_memory(variants["plugin"]) + "; full fine-tuning: "
                                    + dominant_memory(variants["full"]))
                for case, per in prof.get("saved_for_backward", {}).items():
                    total = sum(per.values()) or 1
                    top = ", ".join(f"{k} {fmt_bytes(v)} ({v / total:.0%})" for k, v in list(per.items())[:3])
                    prof["dominant"] += f". Saved for backward in the {case} step: {fmt_bytes(total)}, largest: {top}"
            elif "parts" in prof:
                top = max(prof["parts"], key=lambda k: prof["parts"][k]["share"])
                prof["dominant"] = f"{top} ({prof['parts'][top]['share']:.0%} of the wrapped forward)"
            profiles[key] = prof
    data["profiles"] = profiles
    data["meta"]["wall_s"] = time.time() - start
    markdown = render_markdown(data)
    json_path, md_path = write_results(args.out, "overhead", data, markdown)
    log("")
    log(markdown)
    for t in data["targets"]:
        log(f"{t['status']:>7}  {t['target']}")
    log(f"\nwrote {json_path} and {md_path} in {data['meta']['wall_s']:.0f} s")
    failed = [h for h, r in results.items() for p in ("params", "inference", "training") if "error" in (r.get(p) or {})]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
