"""Beyond ground truth: does the quality prior restore above the average quality of mixed-quality training GT?

The paper's claim as a controlled experiment with a pristine reference that training never sees:

1. data      ``--data DIR`` (any folder of HQ images, e.g. aligned CelebA faces), central square at 128 px:
             the last ``heldout`` images held out (pristine, evaluation only); of the others, a seeded
             ``--contaminate`` fraction replaced by contaminated copies (blur, down-up sampling, JPEG, at the
             ``--contamination`` level; see benchmarks/beyond_gt_data.py). Only the oracle ever trains on the
             pristine copies as targets.
             ``--lq-from target`` (default) degrades each training input from its target, as restorers are
             trained, so a soft target comes with a softer input; ``--lq-from pristine`` degrades it from the
             target's pristine copy instead, so that the input does not show how good its target is: the
             setting where only a quality condition can tell the model which kind of target to restore to.
2. prior     ``iqp score`` (offline NIQE) on the mixed training GT, normalised as the recipe says; its AUC for
             telling contaminated from pristine targets is reported. NIQE is the prior and the stage-3 loss; PIQE
             is never used in training (pyiqa's PIQE has no gradient), and neither is the sharpness ratio.
3. hosts     per host family (``--hosts``), trained by its own YAML in benchmarks/configs/beyond_gt/ on the mixed GT:
             ``swinir`` (a small SwinIR x1) and ``restoreformer`` (a small RestoreFormer, codebook host).
4. controls  the host trained further on the same data for as many iterations as the plug-in's three stages;
             host filtering: the host fine-tuned as long on the top-scored GT only; the oracle: trained on the
             pristine GT, first as the host is, then as long again as the host trained further (so that it
             trains as long as the longest system); plug-in filtering: the recipe's plug-in, same stages and
             iterations, trained on the top-scored GT only with the score held at the target (the same
             capacity as IQP, without the prior's condition).
5. plug-in   the three IQP stages of the named recipe (``--recipe``, :data:`iqp_plugin.archs.recipes.RECIPES`: the
             plug-in options, the scores' normalisation, the top-scored targets' copies and stage 2's learning
             rate, from the one definition a user's ``plugin: {}`` gets) around the frozen host. Ablations
             (``--ablations``): stage 3 in 'continuous' mode, and with ``W_o`` trained by the NIQE loss too
             (``quality_trains: plugin``); the HQ branch off and the plug-in without its quality stage need no
             training and are always evaluated.
6. evaluate  on the held-out images, degraded once with the host's training degradations (seed 0): PSNR and
             SSIM against the pristine image, NIQE, PIQE and the sharpness ratio (high-frequency energy of the
             output over that of the pristine image); host + IQP at every score of ``SCORES``. Verdicts from
             paired per-image differences. ``--split development`` evaluates the same on the development split
             instead (the pristine copies of the first 50 contaminated training images, degraded once with seed
             1), where options are chosen. ``--precondition`` trains the host and the oracle only and reports
             target 2a (the setup's validity), before the plug-in's trainings are spent on it.

Every training runs the project's entry point (``python -m iqp_plugin.train -opt benchmarks/configs/beyond_gt/X.yml
--force_yml ...``) in OUT/work_<budget>; the budget only changes image counts and iteration counts. A rerun
reuses the data, the scores and every training whose ``net_g_latest.pth`` exists. Nothing is tuned on the
held-out images: options are compared with ``--split development``, and the held-out run comes after the choice.

    python benchmarks/beyond_gt.py --budget small --data DIR --lq-from pristine --contaminate 0.35 \
        --hosts swinir --no-ablations --recipe pixel                                # the main setup, CPU
    python benchmarks/beyond_gt.py ... --split development                          # the same, to choose options
    python benchmarks/beyond_gt.py ... --precondition     # host and oracle only: is the setup valid (target 2a)?
    python benchmarks/beyond_gt.py --budget full --device cuda --data DIR --out OUT  # GPU
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle OpenMP threads must not spin

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from benchmarks import beyond_gt_data  # noqa: E402
from benchmarks.common import markdown_table, write_results  # noqa: E402
from benchmarks.quality import checkpoint, run  # noqa: E402
from benchmarks.quality import train as quality_train  # noqa: E402
from iqp_plugin.archs.recipes import RECIPES  # noqa: E402
from iqp_plugin.data.contamination import CONTAMINATION  # noqa: E402
from iqp_plugin.data.datasets import IQPDegradedDataset  # noqa: E402
from iqp_plugin.inference.devices import resolve_device  # noqa: E402
from iqp_plugin.inference.loading import load_wrapper  # noqa: E402
from iqp_plugin.io.options import read_options  # noqa: E402
from iqp_plugin.prior.metrics import create_prior  # noqa: E402
from iqp_plugin.prior.score_files import load_scores, read_sidecar, sidecar_path  # noqa: E402
from iqp_plugin.report.metrics import NOISE_SE, full_reference, paired, summary  # noqa: E402

CONFIGS = REPO / "benchmarks" / "configs" / "beyond_gt"
SIZE = 128
SCORES = (0.1, 0.3, 0.5, 0.7, 0.95)
TARGET = 0.95
PRIOR, HELDOUT_NR = "niqe", "piqe"
#: per host family: config prefix in benchmarks/configs/beyond_gt/
HOSTS = {"restoreformer": "rf", "swinir": "sw"}
#: the images evaluated -> the seed of their one degradation (WORK/data/<split>, see beyond_gt_data): --split, and
#: ``eval`` for --eval DIR
SPLIT_SEEDS = {"heldout": 0, "development": 1, "eval": 2}
#: --lq-from: the folder each training input is degraded from (None: the training target itself)
LQ_FROM = {"target": None, "pristine": "data/train_pristine"}
#: the trainings of the host alone: the host, the oracle's first part and the oracle, the host trained further, the
#: filtering host
CONTROLS = ("host", "oracle_start", "oracle", "further", "filtered")
#: the plug-in trainings: IQP's three stages, and plug-in filtering's
PLUGIN = ("codebook", "predictor", "quality", "top_codebook", "top_predictor", "top_quality")
#: the trainings of :func:`trainings` that ``--no-ablations`` keeps
CORE = (*CONTROLS, *PLUGIN)
#: the systems' names in the tables
FURTHER, HOST_FILTERING, ORACLE = "host trained further", "host on top-scored GT", "oracle (pristine GT)"
PLUGIN_FILTERING = "plug-in on top-scored GT"
#: the scores CSV of each normalisation (``iqp score --norm``), relative to the work folder; min-max's is always
#: made (the AUC and the filtering baselines' top set, which is the same under both)
SCORE_CSVS = {"minmax": "data/train_scores.csv", "rank": "data/train_scores_rank.csv"}
STAGES = ("codebook", "predictor", "quality")
#: images, iterations (host; plug-in stages) and the filtering baselines' top fraction, per budget; small's plug-in
#: stages are the pixel recipe's schedule (stage 2 three times its first 400 iterations, chosen on the development
#: split)
BUDGETS = {
    "tiny": {"train": 12, "heldout": 4, "top_percent": 40,
             "iters": {"host": 4, "codebook": 2, "predictor": 3, "quality": 2}},
    "small": {"train": 800, "heldout": 100, "top_percent": 40,
              "iters": {"host": 800, "codebook": 50, "predictor": 1200, "quality": 100}},
    "full": {"train": 800, "heldout": 100, "top_percent": 40,
             "iters": {"host": 20000, "codebook": 500, "predictor": 10000, "quality": 2000}},
}
#: metric -> (lower is better, what it is)
METRICS = {"psnr": (False, "PSNR against the pristine image (dB)"),
           "ssim": (False, "SSIM against the pristine image"),
           "sharpness": (False, "high-frequency energy of the output / of the pristine image (1 = as sharp)"),
           PRIOR: (True, "NIQE: the prior's metric, used for the scores and the stage-3 loss"),
           HELDOUT_NR: (True, "PIQE: never used in training")}


def log(msg: str) -> None:
    tqdm.write(msg)


def arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", choices=BUDGETS, default="small",
                   help="tiny: seconds (tests, plumbing only); small: CPU (one host, --no-ablations: about an hour on "
                        "2 cores); full: a GPU")
    p.add_argument("--data", required=True, help="folder of HQ images (faces: aligned crops)")
    p.add_argument("--recipe", choices=RECIPES, default="pixel",
                   help="the plug-in's named recipe (iqp_plugin/archs/recipes.py): its plug-in options, score "
                        "normalisation, top-scored copies and stage-2 learning rate; each recipe trains its own "
                        "plug-ins and shares the host and the controls")
    p.add_argument("--contaminate", type=float, default=0.5, help="fraction of the training GT contaminated")
    p.add_argument("--contamination", choices=CONTAMINATION, default="standard",
                   help="how far each contaminated target is degraded: standard (blur sigma 1-2, down-up 1-2x, JPEG "
                        "q30-60) or light (each distance from the identity halved: 0.5-1, 1-1.5x, q65-80)")
    p.add_argument("--lq-from", choices=LQ_FROM, default="target",
                   help="what each training input is degraded from: its target (as restorers are trained) or the "
                        "target's pristine copy (the input then does not show the target's quality)")
    p.add_argument("--hosts", default="swinir", help=f"host families: {', '.join(HOSTS)} (comma-separated)")
    p.add_argument("--ablations", action=argparse.BooleanOptionalAction, default=True,
                   help="also train and evaluate the stage-3 ablations (continuous codes; W_o trained by the NIQE "
                        "loss); --no-ablations: the host, the controls and the recipe's plug-in only")
    p.add_argument("--split", choices=("heldout", "development"), default="heldout",
                   help="evaluate on the held-out images (default), or on the development split (the pristine copies "
                        f"of the first {beyond_gt_data.DEVELOPMENT} contaminated training images) to choose between "
                        "options without touching the held-out images; writes beyond_gt_development.* and its figures "
                        "beside the held-out ones")
    p.add_argument("--eval", metavar="DIR",
                   help="evaluate every trained system on your own folder of pristine images instead (their central "
                        "square at 128 px, degraded once with the host's training degradations, seed 2); trains "
                        "nothing new; writes beyond_gt_eval.* and its figures beside the held-out ones")
    p.add_argument("--precondition", action="store_true",
                   help="train the host and the oracle only and report whether the setup is valid (target 2a: the "
                        "host 1 dB above its input, the oracle 0.5 dB above the host), before the plug-in's trainings "
                        "are spent on it; writes precondition[_development].*")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--jobs", type=int, default=2, help="trainings run at once (on a CPU, the cores are split)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "beyond_gt"),
                   help="output folder (JSON, markdown, figures; trainings under OUT/work_<budget>[_<setup>])")
    return p


def work_dir(out: Path, budget: str, lq_from: str, contaminate: float, level: str = "standard") -> Path:
    """OUT/work_<budget>, suffixed by the setup where it differs from the default (the data and every
    training depend on it): ``_lq-pristine``, ``_c<fraction>`` and ``_<level>``."""
    suffix = (("" if lq_from == "target" else f"_lq-{lq_from}") + ("" if contaminate == 0.5 else f"_c{contaminate:g}")
              + ("" if level == "standard" else f"_{level}"))
    return out / f"work_{budget}{suffix}"


def control_names(prefix: str, iters: dict) -> dict[str, str]:
    """The control trainings' names. The oracle, the host trained further and the filtering host continue for as
    many iterations as the plug-in's three stages (``_i<N>``); ``oracle_start`` is the oracle's first part,
    trained as the host is."""
    extra = sum(iters[s] for s in STAGES)
    return {"host": f"bgt_{prefix}_host", "oracle_start": f"bgt_{prefix}_oracle",
            **{k: f"bgt_{prefix}_{k}_i{extra}" for k in ("oracle", "further", "filtered")}}


def plugin_base(prefix: str, recipe: str) -> str:
    """The prefix of a recipe's plug-in trainings' names."""
    return f"bgt_{prefix}_{recipe}"


# ---------------------------------------------------------------- prior
def score_training_gt(work: Path, manifest: dict, norm: str = "minmax") -> dict:
    """``iqp score`` of the mixed training GT with the prior (min-max, and ``norm`` too when it is another);
    the AUC of each offline metric for telling pristine from contaminated targets (P(a pristine target scores
    better than a contaminated one))."""
    csv = work / SCORE_CSVS["minmax"]
    if not csv.exists():
        run(["-m", "iqp_plugin.cli.score", "-i", "data/train", "-o", SCORE_CSVS["minmax"], "--metrics", PRIOR,
             "--norm", "minmax"], work, work / "logs" / "score.log")
    other = work / SCORE_CSVS[norm]
    # from min-max's raw scores: scoring into a copy computes no unchanged image again; a copy whose sidecar still
    # says min-max (an interrupted run) is normalised again
    if not other.exists() or read_sidecar(sidecar_path(other)).get("norm") != norm:
        for path in (other.with_suffix(".json"), other):
            shutil.copyfile(csv.with_suffix(path.suffix), path)
        run(["-m", "iqp_plugin.cli.score", "-i", "data/train", "-o", SCORE_CSVS[norm], "--metrics", PRIOR,
             "--norm", norm], work, work / "logs" / f"score_{norm}.log")
    scores = load_scores(csv)
    dirty = set(manifest["contaminated"])
    auc = {f"{PRIOR} (the prior)": _auc([s for n, s in scores.items() if n not in dirty],
                                        [s for n, s in scores.items() if n in dirty])}
    return {"scores": scores, "auc": auc}


def _auc(good: list[float], bad: list[float]) -> float | None:
    """P(a random ``good`` value exceeds a random ``bad`` one), ties counted half."""
    if not good or not bad:
        return None
    g, b = np.asarray(good)[:, None], np.asarray(bad)[None, :]
    return float(((g > b).sum() + 0.5 * (g == b).sum()) / (g.size * b.size))


# ---------------------------------------------------------------- trainings
def train(work: Path, config: str, device: torch.device, threads: int | None = None, **overrides) -> Path:
    """Train benchmarks/configs/beyond_gt/<config>.yml in WORK (see ``benchmarks.quality.train``)."""
    return quality_train(work, config, device, threads, CONFIGS, **overrides)


#: which trainings of a host family need which others first
NEEDS = {"host": (), "oracle_start": (), "oracle": ("oracle_start",), "further": ("host",), "filtered": ("host",),
         "codebook": ("host",), "predictor": ("codebook",), "quality": ("predictor",),
         "top_codebook": ("host",), "top_predictor": ("top_codebook",), "top_quality": ("top_predictor",),
         "continuous": ("predictor",), "injection": ("predictor",)}


def train_all(work: Path, jobs: dict[tuple[str, str], tuple[str, dict]], device: torch.device,
              workers: int) -> dict[str, float]:
    """Run every training of ``jobs`` ((family, key) -> (config, overrides)), ``workers`` at a time, each as
    soon as the trainings it needs (:data:`NEEDS`) are done. Returns seconds per training.

    Ready trainings start longest chain first (the plug-in's three stages before a control), and on a CPU each
    starts with the cores left to it: a training that runs alone, as the last stage often does, gets them all."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    chain = {}

    def chain_length(job):  # trainings that must run one after another from ``job`` on, itself included
        if job not in chain:
            after = [other for other in jobs if other[0] == job[0] and job[1] in NEEDS[other[1]]]
            chain[job] = 1 + max(map(chain_length, after), default=0)
        return chain[job]

    cores = os.cpu_count() or 1
    done, running, seconds = set(), {}, {}
    with ThreadPoolExecutor(workers) as pool, tqdm(total=len(jobs), desc="trainings", unit="training") as bar:
        while len(done) < len(jobs):
            ready = [job for job in jobs if job not in done and job not in running.values()
                     and all((job[0], need) in done for need in NEEDS[job[1]])]
            starting = sorted(ready, key=chain_length, reverse=True)[:workers - len(running)]
            threads = max(1, cores // max(1, len(running) + len(starting))) if device.type == "cpu" else None
            for job in starting:
                config, overrides = jobs[job]
                future = pool.submit(train, work, config, device, threads, **overrides)
                future.start = time.perf_counter()
                running[future] = job
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                future.result()
                seconds[" ".join(job)] = round(time.perf_counter() - future.start, 1)
                done.add(job)
                bar.update()
    return seconds


def trainings(prefix: str, iters: dict, lq_from: str = "target", ablations: bool = True,
              recipe: str = "pixel") -> dict[str, tuple[str, dict]]:
    """Every training of one host family, in order: system key -> (config, --force_yml overrides).

    ``lq_from``: a key of :data:`LQ_FROM` (the oracle's targets are pristine, so its inputs are the same either
    way); ``ablations`` False keeps the :data:`CORE` trainings only; ``recipe``: a key of
    :data:`iqp_plugin.archs.recipes.RECIPES`. The filtering baselines train on WORK/data/train_top."""
    r = RECIPES[recipe]
    host = read_options(str(CONFIGS / f"{prefix}_host.yml"))
    extra = sum(iters[s] for s in STAGES)
    names = control_names(prefix, iters)
    lr = host["train"]["optim_g"]["lr"] * host["train"]["scheduler"]["gamma"] ** 2
    pbase = plugin_base(prefix, recipe)

    def after(name: str) -> dict:  # start from another training's weights
        return {"path:pretrain_network_g": f"experiments/{name}/models/net_g_latest.pth"}

    host_ckpt = f"experiments/{names['host']}/models/net_g_latest.pth"
    host_iters = {"train:total_iter": iters["host"],
                  "train:scheduler:milestones": [max(1, iters["host"] // 2), max(2, 3 * iters["host"] // 4)]}
    more = {"train:total_iter": extra, "train:optim_g:lr": lr, "train:scheduler:milestones": [extra + 1]}
    pristine = {"datasets:train:dataroot_gt": "data/train_pristine"}
    top = {"datasets:train:dataroot_gt": "data/train_top"}
    # the recipe's plug-in and data sides; its stage-2 learning rate and schedule
    stage = {s: {"network_g:host_checkpoint": host_ckpt, "network_g:plugin:preset": recipe,
                 "datasets:train:score_csv": SCORE_CSVS[r.norm], "train:total_iter": iters[s]} for s in STAGES}
    stage["predictor"].update({"train:optim_g:lr": r.predictor_lr,
                               "train:scheduler:milestones": [max(1, 3 * iters["predictor"] // 4)]})
    copies = {"datasets:train:top_copies": r.top_copies, "datasets:train:top_percent": r.top_percent}
    for s in ("predictor", "quality"):
        stage[s].update(copies)
    # plug-in filtering: the same stages on the top-scored targets only; stages 2-3 see no score (every target
    # at the plug-in's target score), the codebook stage takes the HQ set from the scores as IQP's does
    held = {s: {**{k: v for k, v in stage[s].items() if k not in copies}, **top, "datasets:train:score_csv": None}
            for s in STAGES[1:]}
    jobs = {
        "host": (f"{prefix}_host", {"name": names["host"], **host_iters}),
        "oracle_start": (f"{prefix}_host", {"name": names["oracle_start"], **pristine, **host_iters}),
        "oracle": (f"{prefix}_host", {"name": names["oracle"], **pristine, **after(names["oracle_start"]), **more}),
        "further": (f"{prefix}_host", {"name": names["further"], **after(names["host"]), **more}),
        "filtered": (f"{prefix}_host", {"name": names["filtered"], **top, **after(names["host"]), **more}),
        "codebook": (f"{prefix}_codebook", {"name": f"{pbase}_codebook", **stage["codebook"]}),
        "predictor": (f"{prefix}_predictor", {"name": f"{pbase}_predictor", **after(f"{pbase}_codebook"),
                                              **stage["predictor"]}),
        "quality": (f"{prefix}_quality", {"name": f"{pbase}_quality", **after(f"{pbase}_predictor"),
                                          **stage["quality"]}),
        "top_codebook": (f"{prefix}_codebook", {"name": f"{pbase}_top_codebook", **stage["codebook"], **top}),
        "top_predictor": (f"{prefix}_predictor", {"name": f"{pbase}_top_predictor", **after(f"{pbase}_top_codebook"),
                                                  **held["predictor"]}),
        "top_quality": (f"{prefix}_quality", {"name": f"{pbase}_top_quality", **after(f"{pbase}_top_predictor"),
                                              **held["quality"]}),
        "continuous": (f"{prefix}_quality", {"name": f"{pbase}_continuous", "train:quality_mode": "continuous",
                                             **after(f"{pbase}_predictor"), **stage["quality"]}),
        "injection": (f"{prefix}_quality", {"name": f"{pbase}_injection", "train:quality_trains": "plugin",
                                            **after(f"{pbase}_predictor"), **stage["quality"]}),
    }
    source = LQ_FROM[lq_from]
    return {key: (config, {**opt, **({"datasets:train:dataroot_source": source}
                                     if source and not key.startswith("oracle") else {})})
            for key, (config, opt) in jobs.items() if ablations or key in CORE}


# ---------------------------------------------------------------- evaluation
def split_pairs(work: Path, prefix: str, split: str = "heldout") -> tuple[torch.Tensor, torch.Tensor]:
    """(LQ, pristine GT) of a split's images (a key of :data:`SPLIT_SEEDS`), whole 128 px images in the host's image
    range, degraded once (the split's seed) with the host's training degradations."""
    opt = dict(read_options(str(CONFIGS / f"{prefix}_host.yml"))["datasets"]["train"])
    opt.update(phase="val", seed=SPLIT_SEEDS[split], dataroot_gt=str(work / "data" / split), score_csv=None,
               use_crop=False, gt_size=SIZE)
    ds = IQPDegradedDataset(opt)
    samples = [ds[i] for i in range(len(ds))]
    return torch.stack([s["lq"] for s in samples]), torch.stack([s["gt"] for s in samples])


def as_8bit(x: torch.Tensor, image_range: tuple[float, float]) -> torch.Tensor:
    """Images in ``image_range`` -> [0, 1] RGB rounded to 8 bit, as a saved file would be."""
    lo, hi = image_range
    return ((x - lo) / (hi - lo)).clamp(0, 1).mul(255).round().div(255)


def restored(net, lq: torch.Tensor, device: torch.device, score=None, batch: int = 10) -> torch.Tensor:
    """``net`` on every image (``score`` None: the plug-in's target), 8-bit [0, 1] RGB on the CPU."""
    outs = []
    with torch.no_grad():
        for i in range(0, len(lq), batch):
            outs.append(net(lq[i:i + batch].to(device), score=score).cpu())
    return as_8bit(torch.cat(outs), net.adapter.image_range)


def metrics_of(images: torch.Tensor, pristine: torch.Tensor, nr: dict, device: torch.device) -> dict[str, list]:
    """Per-image PSNR, SSIM and sharpness ratio against the pristine images (8-bit RGB, as ``iqp compare``
    computes them), and NR metrics."""
    def u8(x: torch.Tensor) -> np.ndarray:
        return x.permute(1, 2, 0).mul(255).round().byte().numpy()

    pairs = [full_reference(u8(a), u8(b)) for a, b in zip(images, pristine, strict=False)]
    values = {m: [p[m] for p in pairs] for m in ("psnr", "ssim", "sharpness")}
    with torch.no_grad():
        for name, module in nr.items():
            values[name] = torch.cat([module(images[i:i + 10].to(device)).reshape(-1).double().cpu()
                                      for i in range(0, len(images), 10)]).tolist()
    return values


def wrapper_net(prefix: str, host_ckpt: Path, recipe: str | None) -> dict:
    """IQPWrapper options of a host family, with the plug-in of ``recipe`` (None: the host alone)."""
    net = dict(read_options(str(CONFIGS / f"{prefix}_quality.yml"))["network_g"])
    net.pop("type")
    return {**net, "host_checkpoint": str(host_ckpt),
            "plugin": None if recipe is None else {**net["plugin"], "preset": recipe}}


def evaluate(work: Path, prefix: str, device: torch.device, iters: dict, ablations: bool = True,
             recipe: str = "pixel", split: str = "heldout") -> tuple[dict, dict]:
    """Per-image metrics of every system of one host family on ``split`` (``iters``: the budget's; ``ablations``
    False: without the ablations; the plug-ins of ``recipe``), and its restored images (for figures)."""
    lq, gt = split_pairs(work, prefix, split)
    pbase = plugin_base(prefix, recipe)
    names = control_names(prefix, iters)
    host = {k: load_wrapper(wrapper_net(prefix, checkpoint(work, names[k]), None), device=device)
            for k in ("host", "further", "filtered", "oracle")}
    net = wrapper_net(prefix, checkpoint(work, names["host"]), recipe)

    def plugin(name: str):
        return load_wrapper(net, str(checkpoint(work, f"{pbase}_{name}")), device)

    iqp = plugin("quality")
    image_range = iqp.adapter.image_range
    pristine = as_8bit(gt, image_range)
    systems = {"input (LQ)": lambda: as_8bit(lq, image_range),
               "host": lambda: restored(host["host"], lq, device),
               FURTHER: lambda: restored(host["further"], lq, device),
               HOST_FILTERING: lambda: restored(host["filtered"], lq, device),
               PLUGIN_FILTERING: lambda: restored(plugin("top_quality"), lq, device, TARGET),
               ORACLE: lambda: restored(host["oracle"], lq, device)}
    for s in SCORES:
        systems[f"host + IQP @{s}"] = lambda s=s: restored(iqp, lq, device, score=s)
    systems["IQP, HQ branch off"] = lambda: _hq_off(iqp, lq, device)
    systems["IQP, no quality stage"] = lambda: restored(plugin("predictor"), lq, device, TARGET)
    if ablations:
        systems["IQP, continuous quality stage"] = lambda: restored(plugin("continuous"), lq, device, TARGET)
        systems["IQP, injection trained in stage 3"] = lambda: restored(plugin("injection"), lq, device, TARGET)
    nr = create_prior([PRIOR, HELDOUT_NR]).create_metrics(device)
    per_image, images = {}, {"pristine": pristine}
    for name, fn in tqdm(systems.items(), desc=f"evaluate {prefix}", unit="system"):
        images[name] = fn()
        per_image[name] = metrics_of(images[name], pristine, nr, device)
    per_image["pristine (reference)"] = metrics_of(pristine, pristine, nr, device)
    return per_image, images


def _hq_off(net, lq: torch.Tensor, device: torch.device) -> torch.Tensor:
    """host + IQP at the target score with the HQ codebook's contribution removed at inference."""
    codebook = net.plugin.codebook
    weight, codebook.hq_weight = codebook.hq_weight, 0.0
    try:
        return restored(net, lq, device, score=TARGET)
    finally:
        codebook.hq_weight = weight


#: the trainings --precondition runs (the oracle as long as the longest system)
PRECONDITION = ("host", "oracle_start", "oracle")


def setup_valid(gain: float, gap: float) -> bool:
    """Target 2a: the host restores (1 dB above its input) and leaves room (the oracle 0.5 dB above it)."""
    return gain >= 1 and gap >= 0.5


def precondition(out: Path, work: Path, families: list[str], budget: dict, device: torch.device, split: str,
                 prior: dict, top_contaminated: float) -> dict:
    """Target 2a alone, from the host and the oracle: per host family the PSNR of the input, the host and the
    oracle on ``split``, the host's gain over its input and the oracle's gap, and whether the setup is valid.
    Writes OUT/precondition[_<split>].json and .md; returns the JSON."""
    rows, fams = [], {}
    for family in families:
        prefix = HOSTS[family]
        lq, gt = split_pairs(work, prefix, split)
        names = control_names(prefix, budget["iters"])
        nets = {k: load_wrapper(wrapper_net(prefix, checkpoint(work, names[k]), None), device=device)
                for k in ("host", "oracle")}
        image_range = nets["host"].adapter.image_range
        pristine = as_8bit(gt, image_range)
        outputs = {"input (LQ)": as_8bit(lq, image_range), **{k: restored(net, lq, device) for k, net in nets.items()}}
        psnr = {k: summary(metrics_of(v, pristine, {}, device)["psnr"])["mean"] for k, v in outputs.items()}
        gain, gap = psnr["host"] - psnr["input (LQ)"], psnr["oracle"] - psnr["host"]
        fams[family] = {"psnr": psnr, "host gain over input (dB)": gain, "oracle gap (dB)": gap,
                        "setup valid": setup_valid(gain, gap)}
        rows.append([family, *(f"{psnr[k]:.2f}" for k in ("input (LQ)", "host", "oracle")), f"{gain:+.2f}",
                     f"{gap:+.2f}", "yes" if fams[family]["setup valid"] else "no"])
    data = {"prior": {"auc": prior["auc"]}, "top_contaminated_fraction": top_contaminated, "work": work.name,
            "split": split, "families": fams}
    markdown = "\n".join([
        f"# Precondition of `{work.name}` ({split}; target 2a: host >= input + 1 dB, oracle >= host + 0.5 dB)", "",
        "Prior AUC (pristine vs contaminated training GT): "
        + ", ".join(f"{k} {v:.3f}" for k, v in prior["auc"].items())
        + f"; filtering's top {budget['top_percent']:g}% holds {100 * top_contaminated:.1f}% contaminated targets.", "",
        markdown_table(["host family", "input PSNR", "host", "oracle", "host - input", "oracle - host", "valid"],
                       rows)])
    paths = write_results(out, "precondition" + ("" if split == "heldout" else f"_{split}"), data, markdown)
    log("\n" + markdown + f"\n\nwrote {paths[0]}, {paths[1]}")
    return data


# ---------------------------------------------------------------- verdicts and targets
def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties), rounded to 12 decimals: over five scores it takes a
    few exact values (one adjacent pair out of order gives 0.9), which the float sum would miss by 1e-16."""
    from scipy.stats import spearmanr

    return round(float(spearmanr(x, y).statistic), 12)


def targets(per_image: dict, results: dict) -> dict:
    """The targets at budget small, each with its numbers and 'met', for the recipe's plug-in, and the ablations.
    Verdicts: paired differences beyond NOISE_SE standard errors, with no relative floor (``rtol=0``: 100 images
    resolve small differences)."""
    iqp = f"host + IQP @{TARGET}"
    pairs = {
        "HQ branch (on - off)": (iqp, "IQP, HQ branch off"),
        "quality stage (with - without)": (iqp, "IQP, no quality stage"),
        "discrete - continuous": (iqp, "IQP, continuous quality stage"),
        "stage 3 injection (frozen - trained)": (iqp, "IQP, injection trained in stage 3"),
    }
    ablation = {name: {m: paired(per_image[a][m], per_image[b][m], METRICS[m][0], rtol=0.0) for m in METRICS}
                for name, (a, b) in pairs.items() if a in per_image and b in per_image}
    return {**target_rows(per_image, results), "4 ablations": ablation}


def target_rows(per_image: dict, results: dict) -> dict:
    """Targets 1-3 for host + IQP: 1 the score steers; 2 the prior beats more training (2a the setup is valid, 2b
    half the oracle gap closed and 'better' than the host and the host trained further); 3 it holds up against
    host filtering (3a: 'same' or 'better') and adds something beyond choosing the data (3b: 'better' than
    plug-in filtering)."""
    iqp = f"host + IQP @{TARGET}"
    psnr = {k: v["psnr"]["mean"] for k, v in results.items()}
    sweep = {m: [results[f"host + IQP @{s}"][m]["mean"] for s in SCORES] for m in ("psnr", "sharpness")}
    rho = {m: spearman(list(SCORES), v) for m, v in sweep.items()}
    gain = psnr["host"] - psnr["input (LQ)"]
    gap = psnr[ORACLE] - psnr["host"]
    closed = (psnr[iqp] - psnr["host"]) / gap if gap > 0 else float("nan")
    vs = {base: {m: paired(per_image[iqp][m], per_image[base][m], METRICS[m][0], rtol=0.0) for m in METRICS}
          for base in ("host", FURTHER, HOST_FILTERING, PLUGIN_FILTERING, ORACLE)}
    verdict = {base: v["psnr"]["verdict"] for base, v in vs.items()}
    return {
        "1 the score steers": {"spearman": rho, "sweep": sweep, "met": all(r >= 0.9 for r in rho.values())},
        "2 the prior beats more training": {
            "host gain over input (dB)": gain, "oracle gap (dB)": gap, "setup valid": setup_valid(gain, gap),
            "gap closed": closed, "verdict vs host": verdict["host"],
            "verdict vs host trained further": verdict[FURTHER],
            "met": bool(setup_valid(gain, gap) and closed >= 0.5 and verdict["host"] == "better"
                        and verdict[FURTHER] == "better")},
        "3 it holds up against filtering": {"verdict vs host filtering": verdict[HOST_FILTERING],
                                            "met": verdict[HOST_FILTERING] in ("same", "better"),
                                            "verdict vs plug-in filtering": verdict[PLUGIN_FILTERING],
                                            "prior adds": verdict[PLUGIN_FILTERING] == "better"},
        "paired": vs,
    }


# ---------------------------------------------------------------- figures and report
def save_grid(path: Path, images: dict, count: int = 6) -> None:
    """Rows: the first ``count`` held-out images; columns: input | host | host filtering | host + IQP | oracle |
    pristine."""
    import cv2

    columns = {"input": "input (LQ)", "host": "host", "host filtering": HOST_FILTERING,
               f"host + IQP @{TARGET}": f"host + IQP @{TARGET}", "oracle": ORACLE, "pristine": "pristine"}
    columns = {label: key for label, key in columns.items() if key in images}
    rows = []
    for i in range(min(count, len(images["pristine"]))):
        tiles = [(images[key][i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for key in columns.values()]
        rows.append(np.hstack([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles]))
    grid = np.vstack(rows)
    width = grid.shape[1] // len(columns)
    head = np.full((24, grid.shape[1], 3), 255, np.uint8)
    for j, label in enumerate(columns):
        cv2.putText(head, label, (j * width + 4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    grid = np.vstack([head, grid])
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


def save_sweep(path: Path, results: dict[str, dict]) -> None:
    """PSNR against pristine and sharpness ratio vs the conditioning score, per host family, with the host,
    the filtering baselines and the oracle as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("psnr", "sharpness"), strict=False):
        for k, (family, res) in enumerate(results.items()):
            colour = f"C{k}"
            means = [res[f"host + IQP @{s}"][metric]["mean"] for s in SCORES]
            errs = [res[f"host + IQP @{s}"][metric]["sem"] for s in SCORES]
            ax.errorbar(SCORES, means, yerr=errs, fmt="-o", color=colour, label=f"{family}: host + IQP")
            for control, label, style in (("host", "host", dict(ls="--", lw=1)),
                                          (HOST_FILTERING, "host filtering", dict(ls=(0, (6, 2, 1, 2)), lw=1)),
                                          (PLUGIN_FILTERING, "plug-in filtering", dict(ls="-.", lw=1)),
                                          (ORACLE, "oracle", dict(ls=":", lw=1.5))):
                ax.axhline(res[control][metric]["mean"], color=colour, label=f"{family}: {label}", **style)
        ax.set_xlabel("conditioning score")
        ax.set_ylabel({"psnr": "PSNR vs pristine (dB)", "sharpness": "sharpness ratio (1 = pristine)"}[metric])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(stat: dict, digits: int) -> str:
    return "-" if stat["mean"] is None else f"{stat['mean']:.{digits}f} ± {stat['sem']:.{digits}f}"


def target_table(tg: dict) -> str:
    """Targets 1-3 of host + IQP (:func:`target_rows`) as a markdown table."""
    t1, t2, t3 = tg["1 the score steers"], tg["2 the prior beats more training"], tg["3 it holds up against filtering"]
    word = {True: "**met**", False: "**missed**"}
    return "\n".join([
        "| target | numbers | |", "|---|---|---|",
        f"| 1. the score steers (Spearman ρ ≥ 0.9 over {list(SCORES)}) | ρ PSNR {t1['spearman']['psnr']:+.2f}, "
        f"ρ sharpness {t1['spearman']['sharpness']:+.2f}; PSNR " + " / ".join(f"{v:.2f}" for v in t1["sweep"]["psnr"])
        + " | " + word[t1["met"]] + " |",
        f"| 2a. setup valid (host - input ≥ 1 dB, oracle - host ≥ 0.5 dB) | {t2['host gain over input (dB)']:+.2f} dB, "
        f"{t2['oracle gap (dB)']:+.2f} dB | " + word[t2["setup valid"]] + " |",
        f"| 2b. closes ≥ half the oracle gap, 'better' than host and host trained further | "
        f"{t2['gap closed']:.0%} closed; vs host: {t2['verdict vs host']}; vs trained further: "
        f"{t2['verdict vs host trained further']} | " + word[t2["met"]] + " |",
        f"| 3a. at least matches host filtering | {t3['verdict vs host filtering']} | " + word[t3["met"]] + " |",
        f"| 3b. beats plug-in filtering (the prior adds beyond choosing the data) | "
        f"{t3['verdict vs plug-in filtering']} | "
        + word[t3["prior adds"]] + " |"])


def report(meta: dict, prior: dict, families: dict) -> str:
    """The markdown: setup, prior, per host family the systems table, the targets and the ablations."""
    it = meta["iters"]
    evaluated = {"heldout": f"held out: {meta['n_heldout']} pristine images, degraded once (seed 0)",
                 "development": f"**development split** (for choices, not for claims): the pristine copies of "
                                f"{meta['n_evaluated']} contaminated training images, degraded once "
                                f"(seed {SPLIT_SEEDS['development']})",
                 "eval": f"evaluated on `{meta.get('eval_source')}`: {meta['n_evaluated']} pristine images never "
                         f"trained on, degraded once (seed {SPLIT_SEEDS['eval']})"}[meta.get("split", "heldout")]
    lines = [f"# Beyond ground truth: recipe `{meta['recipe']}` (budget {meta['budget']}, {meta['device']}, "
             f"{meta['wall_s'] / 60:.0f} min)", "",
             f"Training GT: {meta['n_train']} images of `{meta['data']}`, {meta['n_contaminated']} of them "
             f"contaminated ({meta['contamination']}); training inputs degraded from "
             + {"target": "their targets", "pristine": "the targets' pristine copies"}[meta["lq_from"]]
             + f"; {evaluated} with each host's training degradations. Hosts {it['host']} iterations; plug-in stages "
             f"{it['codebook']} + {it['predictor']} + {it['quality']}; the host trained further, the filtering host "
             f"and the oracle +{meta['control_iters']} iterations (as many; the oracle on the pristine GT). "
             "Plug-in filtering: the recipe's plug-in trained the same way on the top-scored GT only, score held at "
             f"{TARGET}. Mean ± standard error over the images evaluated.",
             "", "Prior AUC (pristine vs contaminated training GT): "
             + ", ".join(f"{k} {v:.3f}" for k, v in prior["auc"].items())
             + f"; the top {meta['top_percent']:g}% by score holds {100 * meta['top_contaminated_fraction']:.1f}% "
             "contaminated targets.", ""]
    digits = {"psnr": 2, "ssim": 4, "sharpness": 3, PRIOR: 3, HELDOUT_NR: 2}
    for family, fam in families.items():
        res, tg = fam["results"], fam["targets"]
        header = ["system", "PSNR ↑", "SSIM ↑", "sharpness →1", "NIQE ↓ (prior)", "PIQE ↓ (held out)"]
        rows = [[name] + [fmt(stats[m], digits[m]) for m in ("psnr", "ssim", "sharpness", PRIOR, HELDOUT_NR)]
                for name, stats in res.items()]
        lines += [f"## {family}", "", markdown_table(header, rows), "", f"![grid]({fam['grid']}) ", "",
                  "Targets:", "", target_table(tg), "",
                  f"Paired differences of host + IQP @{TARGET} (mean ± s.e.; "
                  f"better/worse beyond {NOISE_SE:g} s.e.):", ""]
        rows = [[base] + [f"{d['mean']:+.3f} ± {d['sem']:.3f} ({d['verdict']})" for d in ms.values()]
                for base, ms in tg["paired"].items()]
        rows += [[f"ablation: {name}"] + [f"{d['mean']:+.3f} ± {d['sem']:.3f} ({d['verdict']})" for d in ms.values()]
                 for name, ms in tg["4 ablations"].items()]
        lines += [markdown_table(["minus", *METRICS], rows), ""]
    lines += [f"![sweep]({meta['sweep_plot']})", "", f"Wall time {meta['wall_s']:.0f} s; steps (s): "
              + ", ".join(f"{k} {v}" for k, v in meta["steps_s"].items()) + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the JSON it writes (OUT/beyond_gt.json, .md, grid_<family>.png, sweep.png)."""
    args = arg_parser().parse_args(argv)
    families = [f.strip() for f in args.hosts.split(",") if f.strip()]
    unknown = [f for f in families if f not in HOSTS]
    if unknown or not families:
        raise SystemExit(f"--hosts: unknown host family {unknown or args.hosts!r}; choose from {', '.join(HOSTS)}")
    if not 0 < args.contaminate < 1:
        raise SystemExit(f"--contaminate must lie strictly between 0 and 1, got {args.contaminate}")
    if args.eval and not Path(args.eval).is_dir():
        raise SystemExit(f"--eval {args.eval}: no such folder; name a folder of pristine images")
    split = "eval" if args.eval else args.split
    start = time.perf_counter()
    device = resolve_device(args.device)
    budget = BUDGETS[args.budget]
    recipe = RECIPES[args.recipe]
    out = Path(args.out).resolve()
    work = work_dir(out, args.budget, args.lq_from, args.contaminate, args.contamination)
    times = {}

    def step(name, fn):
        t = time.perf_counter()
        result = fn()
        times[name] = round(time.perf_counter() - t, 1)
        log(f"== {name}: {times[name]} s")
        return result

    manifest = step("data", lambda: beyond_gt_data.prepare(
        args.data, work, train=budget["train"], heldout=budget["heldout"], fraction=args.contaminate, size=SIZE,
        level=args.contamination))
    prior = step("score", lambda: score_training_gt(work, manifest, recipe.norm))
    _, threshold = beyond_gt_data.top_scored(work, prior["scores"], budget["top_percent"])
    top = [n for n, s in prior["scores"].items() if s >= threshold]
    if split == "development":
        beyond_gt_data.development(work, manifest)
    if split == "eval":
        beyond_gt_data.external(args.eval, work, SIZE)
    suffix = "" if split == "heldout" else f"_{split}"
    jobs = {(family, key): job for family in families
            for key, job in trainings(HOSTS[family], budget["iters"], args.lq_from, args.ablations, args.recipe).items()
            if not args.precondition or key in PRECONDITION}
    times.update(train_all(work, jobs, device, args.jobs))
    top_contaminated = sum(n in manifest["contaminated"] for n in top) / max(1, len(top))
    if args.precondition:
        return precondition(out, work, families, budget, device, split, prior, top_contaminated)
    fam_out = {}
    for family in families:
        prefix = HOSTS[family]
        per_image, images = step(f"{family} evaluate",
                                 lambda p=prefix: evaluate(work, p, device, budget["iters"], args.ablations,
                                                           args.recipe, split))
        results = {name: {m: summary(v) for m, v in values.items()} for name, values in per_image.items()}
        grid = f"grid_{family}{suffix}.png"
        out.mkdir(parents=True, exist_ok=True)
        save_grid(out / grid, images)
        fam_out[family] = {"results": results, "targets": targets(per_image, results), "grid": grid}
    save_sweep(out / f"sweep{suffix}.png", {f: v["results"] for f, v in fam_out.items()})
    meta = {"budget": args.budget, "recipe": args.recipe, "device": str(device),
            "wall_s": round(time.perf_counter() - start, 1), "steps_s": times, "iters": budget["iters"],
            "data": Path(args.data).name, "n_train": len(manifest["train"]),
            "n_contaminated": len(manifest["contaminated"]), "n_heldout": len(manifest["heldout"]),
            "split": split, "eval_source": args.eval and str(Path(args.eval).resolve()),
            "n_evaluated": len(beyond_gt_data.list_images(work / "data" / split)),
            "contamination": manifest["contamination"], "contaminate": args.contaminate,
            "contamination_level": args.contamination, "lq_from": args.lq_from,
            "control_iters": sum(budget["iters"][s] for s in STAGES), "ablations": args.ablations,
            "scores": list(SCORES), "top_percent": budget["top_percent"], "top_threshold": threshold,
            "top_contaminated_fraction": top_contaminated,
            "metrics": {m: {"lower_better": lb, "what": w} for m, (lb, w) in METRICS.items()},
            "sweep_plot": f"sweep{suffix}.png", "work": work.name, "torch": torch.__version__,
            "python": platform.python_version()}
    data = {"meta": meta, "prior": {"auc": prior["auc"]}, "families": fam_out}
    markdown = report(meta, prior, fam_out)
    paths = write_results(out, f"beyond_gt{suffix}", data, markdown)
    log("\n" + markdown + f"\n\nwrote {paths[0]}, {paths[1]} and the figures in {out}")
    return data


if __name__ == "__main__":
    main()
