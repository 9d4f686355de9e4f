"""The option keys of a BasicSR 1.4.2 training run, per section, and the checks of an option file against them.

The tables hold the keys BasicSR's pipeline reads (``basicsr/train.py``, ``utils/options.py``, ``utils/logger.py``,
``models/base_model.py``, ``models/sr_model.py``, ``data/__init__.py``) and the project's own (``IQPModel``,
``VQHostModel``, the datasets of :mod:`iqp_plugin.data.datasets`). :func:`check_training_options` runs once, after
the file is read and ``--force_yml`` applied: an unknown key gets a "did you mean", a missing one or an unusable
value one line naming the key and the file. :func:`missing_option` turns a KeyError that BasicSR still raises
into such a line. Sections of models and datasets without a table (other BasicSR models) are not checked for
unknown keys.
"""
from __future__ import annotations

import difflib
import inspect
import linecache
import os
import re
from dataclasses import dataclass

import torch
from basicsr.models import lr_scheduler

from iqp_plugin.errors import InvalidInputError

#: Top-level keys of every run; ``network_<x>`` keys name networks (their options are checked by the registry).
TOP_KEYS = {"name", "model_type", "scale", "num_gpu", "manual_seed", "datasets", "path", "train", "val", "logger",
            "dist_params", "find_unused_parameters"}
#: Keys BasicSR sets itself before any model reads them: allowed in a file, never needed.
TOP_SET_BY_BASICSR = {"dist", "rank", "world_size", "auto_resume", "is_train", "root_path"}
PATH_SET_BY_BASICSR = {"experiments_root", "models", "training_states", "log", "visualization", "results_root"}
REQUIRED_TOP = ("name", "model_type", "num_gpu", "datasets", "path", "train", "logger")

LOGGER_KEYS = {"print_freq", "save_checkpoint_freq", "use_tb_logger", "wandb"}
REQUIRED_LOGGER = ("print_freq", "save_checkpoint_freq", "use_tb_logger")
WANDB_KEYS = {"project", "resume_id"}
DIST_PARAMS_KEYS = {"backend", "port"}
TRAIN_PIPELINE_KEYS = {"total_iter", "warmup_iter"}
VAL_PIPELINE_KEYS = {"val_freq", "save_img"}

#: Dataset keys that BasicSR's pipeline reads, whatever the dataset type (``use_shuffle``: read by older
#: BasicSR versions, kept in most option files).
DATASET_PIPELINE_KEYS = {"name", "type", "phase", "scale", "dataroot_gt", "dataroot_lq", "batch_size_per_gpu",
                         "num_worker_per_gpu", "dataset_enlarge_ratio", "pin_memory", "persistent_workers",
                         "prefetch_mode", "num_prefetch_queue", "use_shuffle"}
REQUIRED_TRAIN_DATASET = ("name", "type", "batch_size_per_gpu", "num_worker_per_gpu")
_SCORED = {"io_backend", "score_csv", "top_copies", "top_percent", "scale", "gt_size", "use_hflip", "image_range",
           "phase", "seed"}
#: The project's datasets: (their own keys, the keys they need).
DATASET_KEYS = {
    "IQPDegradedDataset": (_SCORED | {"dataroot_gt", "use_crop", "lq_downscale", "blur_kernel_size", "kernel_list",
                                      "kernel_prob", "blur_sigma", "downsample_range", "noise_range", "jpeg_range",
                                      "dataroot_source"}, ("dataroot_gt",)),
    "IQPPairedDataset": (_SCORED | {"dataroot_gt", "dataroot_lq", "use_rot"}, ("dataroot_gt", "dataroot_lq")),
}


@dataclass(frozen=True)
class ModelKeys:
    """The keys a model type reads beyond the pipeline's; ``required_train`` entries that are tuples need one of
    their keys."""

    top: frozenset = frozenset()
    train: frozenset = frozenset()
    required_train: tuple = ()
    val: frozenset = frozenset()


_SR = ModelKeys(train=frozenset({"ema_decay", "pixel_opt", "perceptual_opt", "optim_g", "scheduler"}),
                required_train=("optim_g", "scheduler", ("pixel_opt", "perceptual_opt")),
                val=frozenset({"metrics", "pbar", "suffix"}))
MODEL_KEYS = {
    "SRModel": _SR,
    "SwinIRModel": _SR,
    "VQHostModel": ModelKeys(train=_SR.train | {"codebook_weight"}, required_train=("optim_g", "scheduler",
                                                                                    "pixel_opt"), val=_SR.val),
    "IQPModel": ModelKeys(top=frozenset({"stage"}),
                          train=frozenset({"ema_decay", "hq_threshold", "hq_top_percent", "ce_common_weight",
                                           "ce_hq_weight", "feat_weight", "pixel_opt", "quality_opt", "quality_mode",
                                           "quality_trains", "optim_g", "scheduler"}),
                          val=frozenset({"nr_metrics"})),
}

#: What a missing key is for, said in the error.
PURPOSE = {"total_iter": "the number of training iterations", "dataroot_gt": "the folder of target (GT) images",
           "dataroot_lq": "the folder of input (LQ) images", "optim_g": "the optimiser, e.g. {type: Adam, lr: 1e-4}",
           "scheduler": "e.g. {type: MultiStepLR, milestones: [100000], gamma: 0.5}",
           "num_gpu": "0 for the CPU, or 'auto'", "use_tb_logger": "true or false",
           "batch_size_per_gpu": "images per step", "num_worker_per_gpu": "data loader processes, 0 for none"}

#: Optimisers that ``BaseModel.get_optimizer`` of BasicSR 1.4.2 builds.
OPTIMIZERS = {"Adam": torch.optim.Adam}
SCHEDULERS = {"MultiStepLR": lr_scheduler.MultiStepRestartLR, "MultiStepRestartLR": lr_scheduler.MultiStepRestartLR,
              "CosineAnnealingRestartLR": lr_scheduler.CosineAnnealingRestartLR}


def _close(key: str, known) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.6)
    return f" (did you mean: {', '.join(close)}?)" if close else f" (known: {', '.join(sorted(known))})"


class _Report:
    """Problems of one option file, raised together in one line."""

    def __init__(self, origins: dict[str, str]):
        self.unknown: list[str] = []
        self.missing: list[str] = []
        self.values: list[str] = []
        self.origins = origins
        self._unknown_keys: dict[str, set] = {}

    def keys(self, section: dict, where: str, known, required=()) -> None:
        """Note the keys of ``section`` (at ``where``) outside ``known``, and the ``required`` ones it lacks."""
        prefix = f"{where}:" if where else ""
        unknown = [k for k in section if k not in known]
        for key in unknown:
            origin = self.origins.get(prefix + str(key))
            self.unknown.append(f"{prefix}{key}{_close(str(key), known)}" + (f" (set by {origin})" if origin else ""))
        self._unknown_keys[where] = set(map(str, unknown))
        for need in required:
            options = need if isinstance(need, tuple) else (need,)
            if any(section.get(k) is not None for k in options):
                continue
            if any(difflib.get_close_matches(k, self._unknown_keys[where], n=1, cutoff=0.6) for k in options):
                continue  # a misspelling of it is named already
            what = " or ".join(prefix + k for k in options)
            purpose = PURPOSE.get(options[0])
            self.missing.append(what + (f" ({purpose})" if purpose else ""))

    def signature(self, section: dict, where: str, cls, skip: str) -> None:
        """Check an optimiser's or scheduler's options against ``cls``'s signature, less ``skip``."""
        params = [p for p in inspect.signature(cls).parameters.values() if p.name != skip
                  and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        required = [p.name for p in params if p.default is p.empty]
        if cls is torch.optim.Adam:
            required.append("lr")  # BaseModel.get_optimizer takes it positionally
        self.keys({k: v for k, v in section.items() if k != "type"}, where, {p.name for p in params}, required)

    def raise_any(self, path: str) -> None:
        parts = []
        if self.unknown:
            parts.append(f"unknown key{'s' if len(self.unknown) > 1 else ''} {'; '.join(self.unknown)}")
        if self.missing:
            parts.append(f"missing {'; '.join(self.missing)}")
        parts += self.values
        if parts:
            fix = " ".join(([f"Rename or remove the unknown key{'s' if len(self.unknown) > 1 else ''}."]
                            if self.unknown else [])
                           + ([f"Add the missing key{'s' if len(self.missing) > 1 else ''}."] if self.missing else []))
            fix = f" {fix}" if fix else ""
            raise InvalidInputError(f"Option file {path}: {'; '.join(parts)}.{fix}")


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_training_options(opt: dict, path: str, origins: dict[str, str] | None = None) -> None:
    """Check a training option dict read from ``path`` (``--force_yml`` applied; ``origins``: {key path: the entry
    that set it}) against the tables; one InvalidInputError naming every problem."""
    report = _Report(origins or {})
    model = MODEL_KEYS.get(opt.get("model_type"))
    networks = [k for k in opt if str(k).startswith("network_")]
    if model is not None:
        report.keys({k: v for k, v in opt.items() if k not in networks}, "",
                    TOP_KEYS | TOP_SET_BY_BASICSR | model.top, REQUIRED_TOP)
    else:
        report.keys(opt, "", opt.keys(), REQUIRED_TOP)
    sections = {}
    for name in ("datasets", "path", "train", "logger", "val", "dist_params"):
        value = opt.get(name)
        if value is None or isinstance(value, dict):
            sections[name] = value or {}
        else:
            report.values.append(f"{name} must be a mapping of options, got {value!r}")
            sections[name] = {}
    _check_sections(report, opt, sections, model, networks)
    report.raise_any(path)


def _check_sections(report: _Report, opt: dict, s: dict, model: ModelKeys | None, networks: list[str]) -> None:
    report.keys(s["logger"], "logger", LOGGER_KEYS, REQUIRED_LOGGER)
    if isinstance(s["logger"].get("wandb"), dict):
        report.keys(s["logger"]["wandb"], "logger:wandb", WANDB_KEYS)
    report.keys(s["dist_params"], "dist_params", DIST_PARAMS_KEYS)
    for key in ("print_freq", "save_checkpoint_freq"):
        value = s["logger"].get(key)
        if value is not None and not (_number(value) and value > 0):
            report.values.append(f"logger:{key} must be a positive number of iterations, got {value!r}")
    if model is not None:
        suffixes = [n.removeprefix("network_") for n in networks]
        path_keys = ({"resume_state", "ignore_resume_networks"} | PATH_SET_BY_BASICSR
                     | {f"pretrain_network_{x}" for x in suffixes} | {f"param_key_{x}" for x in suffixes}
                     | {f"strict_load_{x}" for x in suffixes})
        report.keys(s["path"], "path", path_keys)
        required = model.required_train
        if opt.get("model_type") == "IQPModel" and opt.get("stage") != "codebook":
            required = ("optim_g",)
        report.keys(s["train"], "train", TRAIN_PIPELINE_KEYS | model.train, ("total_iter", *required))
        if opt.get("val") is not None:
            report.keys(s["val"], "val", VAL_PIPELINE_KEYS | model.val, ("val_freq", "save_img"))
        _check_optimiser(report, s["train"])
    else:
        report.keys(s["train"], "train", s["train"].keys() | {"total_iter"}, ("total_iter",))
    total = s["train"].get("total_iter")
    if total is not None and not (_number(total) and int(total) >= 1):
        report.values.append(f"train:total_iter is {total!r}: training would end before its first step and save an "
                             "untrained network; set a positive number of iterations")
    freq = s["val"].get("val_freq")
    if opt.get("val") is not None and freq is not None and not (_number(freq) and freq > 0):
        report.values.append(f"val:val_freq must be a positive number of iterations, got {freq!r}")
    num_gpu = opt.get("num_gpu")
    if num_gpu is not None and num_gpu != "auto" and not (isinstance(num_gpu, int) and not isinstance(num_gpu, bool)
                                                          and num_gpu >= 0):
        report.values.append(f"num_gpu must be 0 (CPU), a number of GPUs or 'auto', got {num_gpu!r}")
    _check_datasets(report, s["datasets"])


def _check_optimiser(report: _Report, train: dict) -> None:
    for key, table, skip in (("optim_g", OPTIMIZERS, "params"), ("scheduler", SCHEDULERS, "optimizer")):
        section = train.get(key)
        if section is None:
            continue
        if not isinstance(section, dict) or "type" not in section:
            report.values.append(f"train:{key} must be a mapping with a type ({' or '.join(table)}), got {section!r}")
        elif section["type"] not in table:
            report.values.append(f"train:{key}:type {section['type']!r} is not one BasicSR 1.4.2 builds"
                                 f"{_close(str(section['type']), table)}")
        else:
            report.signature(section, f"train:{key}", table[section["type"]], skip)


def _check_datasets(report: _Report, datasets: dict) -> None:
    if "train" not in datasets:
        report.missing.append("datasets:train (the training images)")
    for phase, dataset in datasets.items():
        where = f"datasets:{phase}"
        if phase != "train" and str(phase).split("_")[0] != "val":
            report.values.append(f"{where} is not a phase BasicSR trains with{_close(str(phase), ('train', 'val'))}: "
                                 "name the datasets train, val or val_<name>")
            continue
        if not isinstance(dataset, dict):
            report.values.append(f"{where} must be a mapping of dataset options, got {dataset!r}")
            continue
        own, needs = DATASET_KEYS.get(dataset.get("type"), (None, ()))
        required = (REQUIRED_TRAIN_DATASET if phase == "train" else ("name", "type")) + needs
        report.keys(dataset, where, dataset.keys() if own is None else DATASET_PIPELINE_KEYS | own, required)
        if phase == "train":
            size = dataset.get("batch_size_per_gpu")
            if size is not None and not (isinstance(size, int) and not isinstance(size, bool) and size >= 1):
                report.values.append(f"{where}:batch_size_per_gpu must be a positive integer, got {size!r}")


def check_devices(opt: dict, path: str, distributed: bool, cuda_count: int | None = None) -> None:
    """InvalidInputError when ``num_gpu`` asks for more CUDA GPUs than torch sees (``cuda_count``: the count to
    use, default ``torch.cuda.device_count()``)."""
    num_gpu = opt.get("num_gpu")
    if not isinstance(num_gpu, int) or isinstance(num_gpu, bool) or num_gpu <= 0:
        return
    count = torch.cuda.device_count() if cuda_count is None else cuda_count
    if count == 0:
        raise InvalidInputError(f"Option file {path}: num_gpu is {num_gpu}, but torch sees no CUDA GPU on this "
                                "machine: set num_gpu: 0 to train on the CPU, or 'auto' (e.g. --force_yml num_gpu=0).")
    if not distributed and num_gpu > count:
        raise InvalidInputError(f"Option file {path}: num_gpu is {num_gpu}, but torch sees {count} CUDA GPU(s): "
                                f"set num_gpu: {count}, or 'auto'.")


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OPTION_READERS = (os.path.join(_PACKAGE, "models"), os.path.join(_PACKAGE, "data"))


def missing_option(err: KeyError, path: str) -> InvalidInputError | None:
    """One line for a KeyError raised where BasicSR (or the project's models and datasets) reads an option that
    the file lacks, naming the key, the file and the line that reads it; None for any other KeyError (a bug)."""
    import basicsr

    key = err.args[0] if err.args else None
    tb = err.__traceback__
    if not isinstance(key, str) or tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    file, lineno = tb.tb_frame.f_code.co_filename, tb.tb_lineno
    readers = (os.path.dirname(os.path.abspath(basicsr.__file__)), *_OPTION_READERS)
    if not any(os.path.abspath(file).startswith(folder + os.sep) for folder in readers):
        return None
    line = linecache.getline(file, lineno).strip()
    chain = re.findall(r"\[['\"]([^'\"]+)['\"]\]", line)
    if f"['{key}']" not in line and f'["{key}"]' not in line and f"pop('{key}')" not in line \
            and f'pop("{key}")' not in line:
        return None
    where = ":".join(chain[:chain.index(key) + 1]) if key in chain and chain[0] != key else key
    purpose = f" ({PURPOSE[key]})" if key in PURPOSE else ""
    return InvalidInputError(f"Option file {path} lacks the key {where}{purpose}, which training reads "
                             f"({os.path.basename(file)}:{lineno}: {line}): add it (see configs/tiny/).")
