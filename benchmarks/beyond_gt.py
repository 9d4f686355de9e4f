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
2. prior     ``iqp score`` (offline NIQE) on the mixed training GT; its AUC for telling contaminated from
             pristine targets is reported. NIQE is the prior and the stage-3 loss; PIQE is never used in
             training (pyiqa's PIQE has no gradient), and neither is the sharpness ratio.
3. hosts     per host family (``--hosts``), trained by its own YAML in configs/beyond_gt/ on the mixed GT:
             ``restoreformer`` (a small RestoreFormer, codebook host) and ``swinir`` (a small SwinIR x1 with a
             pixel-shuffle plug-in correction).
4. controls  the host trained further on the same data for as many iterations as the plug-in stages; the host
             fine-tuned on the top-scored GT only (filtering); the host trained on pristine GT (oracle).
5. plug-in   the three IQP stages around the frozen host; stage 3 also in 'continuous' mode, and with the
             injection W_o trained by the NIQE loss too (``quality_trains: plugin``) (ablations). The
             configs' plug-in is the ``standard`` preset, scaled down; the three stages are run again with
             the ``lean`` default preset (every preset option reset to lean, the configs' patch and upsampling
             kept), compared as 'IQP, lean default'; the stages 2-3 again with ``teacher_forcing`` in stage 2
             (W_o learns from the GT's own codes, the Transformer from its predicted ones), as
             'IQP teacher-forced', swept over the scores and held to targets 1-3 too. ``--no-ablations`` trains
             only the host, the controls and the configs' plug-in (its HQ-branch and quality-stage ablations
             need no training and are still evaluated). ``--codes pixel`` trains every
             plug-in with a code per bottleneck pixel instead of per token (``codes: pixel``; the HQ code
             decoded at full weight), ``--inject-kernel K`` with a K x K ``W_o`` (each correction sees its
             neighbours' codes), ``--inject-depth D`` with D such layers, GELU between, ``--patch P`` with a
             Transformer token per P x P bottleneck pixels, ``--norm rank`` conditioned on
             the targets' ranks by score (``iqp score --norm rank``) instead of min-max scores,
             ``--top-copies C`` with each top-scored target (the filtering baseline's set) C times in stages 2-3
             (the datasets' ``top_copies``, ``top_percent``),
             every target keeping its score, ``--predictor-lr X`` with stage 2 at learning rate X,
             ``--predictor-pixel-weight W`` with stage 2's L1 image loss at weight W, ``--index-head similarity``
             with similarity index heads, and
             ``--quality-iters N`` with N stage-3 iterations, under their own
             training names, against the same host and controls.
6. evaluate  on the held-out images, degraded once with the host's training degradations (seed 0): PSNR and
             SSIM against the pristine image, NIQE, PIQE and the sharpness ratio (high-frequency energy of the
             output over that of the pristine image); host + IQP at every score of ``SCORES``, with its HQ
             branch off, and without its quality stage (``--code-temperature T``: once more at every score,
             decoding the softmax mixture of its codes at temperature T; no training). Verdicts from paired
             per-image differences.
             ``--split development`` evaluates the same on the development split instead (the pristine copies of
             the first 50 contaminated training images, degraded once with seed 1), where options are chosen.
             ``--precondition`` trains the host and the oracle only and reports target 2a (the setup's validity),
             so that a setup is checked before the plug-in's trainings are spent on it.

Every training runs the project's entry point (``python -m iqp_plugin.train -opt configs/beyond_gt/X.yml
--force_yml ...``) in OUT/work_<budget>; the budget only changes image counts and iteration counts. A rerun
reuses the data, the scores and every training whose ``net_g_latest.pth`` exists. Nothing is tuned on the
held-out images: options are compared with ``--split development`` (writing ``beyond_gt_development.*``), and the
held-out run comes after the choice.

    python benchmarks/beyond_gt.py --budget small --data DIR                         # CPU, 2 cores
    python benchmarks/beyond_gt.py --budget small --data DIR --lq-from pristine --contaminate 0.35 \
        --hosts swinir --no-ablations [--codes pixel --inject-kernel 7 --patch 2 --predictor-iters 1200 \
        --quality-iters 100 --top-copies 16 --norm rank --predictor-lr 4e-3]
                                                                                     # the decoupled setup
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
from dataclasses import dataclass
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
from benchmarks.quality import checkpoint, run, train as quality_train  # noqa: E402
from iqp_plugin.contamination import CONTAMINATION  # noqa: E402
from iqp_plugin.datasets import IQPDegradedDataset  # noqa: E402
from iqp_plugin.evaluation import NOISE_SE, full_reference, paired, summary  # noqa: E402
from iqp_plugin.devices import resolve_device  # noqa: E402
from iqp_plugin.loading import load_wrapper  # noqa: E402
from iqp_plugin.plugin import PRESETS  # noqa: E402
from iqp_plugin.quality import create_prior  # noqa: E402
from iqp_plugin.score_files import load_scores, read_sidecar, sidecar_path  # noqa: E402
from iqp_plugin.options import read_options  # noqa: E402

CONFIGS = REPO / "configs" / "beyond_gt"
SIZE = 128
SCORES = (0.1, 0.3, 0.5, 0.7, 0.95)
TARGET = 0.95
PRIOR, HELDOUT_NR = "niqe", "piqe"
#: the plug-in whose W_o learned from the GT's own codes in stage 2 (``train: teacher_forcing``)
TEACHER = "IQP teacher-forced"
#: the same plug-in decoding at inference the softmax mixture of its codes at temperature T (``--code-temperature``)
MIXTURE = "host + IQP, codes at T={:g}"
#: per host family: config prefix in configs/beyond_gt/
HOSTS = {"restoreformer": "rf", "swinir": "sw"}
#: --split: the images evaluated -> the seed of their one degradation (WORK/data/<split>, see beyond_gt_data)
SPLIT_SEEDS = {"heldout": 0, "development": 1}
#: --lq-from: the folder each training input is degraded from (None: the training target itself)
LQ_FROM = {"target": None, "pristine": "data/train_pristine"}
#: the trainings of the host alone: the host, the oracle, the host trained further, the filtering host
CONTROLS = ("host", "oracle", "further", "filtered")
#: the trainings of :func:`trainings` that ``--no-ablations`` keeps
CORE = (*CONTROLS, "codebook", "predictor", "quality")
#: families whose plug-in uses the pixel-shuffle correction: they also train the bilinear ablation (token codes)
PIXEL_SHUFFLE = ("sw",)
#: --codes: the plug-in options set over the configs', and the tag in the plug-in trainings' names (the host and
#: the controls do not depend on it, so every choice shares them). ``pixel``: one code per bottleneck pixel, the
#: common code and the HQ code a residual pair decoded at full weight (the HQ codebook learns the residual the
#: common code leaves, so ``common + 1.0 * hq`` is what it reconstructs)
CODES = {"token": ({}, ""), "pixel": ({"codes": "pixel", "upsample": "bilinear", "hq_weight": 1.0}, "_pixel")}
#: --norm: how the prior's raw scores are mapped to [0, 1] for the plug-in's condition (``iqp score --norm``): the
#: scores CSV and the tag in the plug-in trainings' names. Ranks keep the order, so the filtering baseline's top
#: set and the HQ codebook's top-q% set are the same under both; min-max's CSV is always made (the AUC, filtering)
NORMS = {"minmax": ("data/train_scores.csv", ""), "rank": ("data/train_scores_rank.csv", "_rank")}


@dataclass(frozen=True)
class PluginChoice:
    """The plug-in's ``--codes`` (a key of :data:`CODES`), ``--inject-kernel``, ``--inject-depth``, ``--patch``, the
    scores' ``--norm``, ``--quality-iters``, ``--top-copies``, ``--predictor-iters``, ``--predictor-lr``,
    ``--predictor-pixel-weight`` and ``--index-head``: the options
    they set over the configs', and the tag they add to the plug-in trainings' names (``_k<K>`` for a kernel other than
    1, ``_d<D>`` for a depth other than 1, ``_p<P>`` for a patch other than the config's, ``_rank`` for rank-normalised
    scores, ``_o<C>`` for each top-scored target C times in stages 2-3, ``_s<N>`` for N stage-2 iterations instead of
    the budget's, ``_lr<X>`` for stage 2's learning rate X instead of the config's, ``_q<N>`` for N stage-3
    iterations instead of the budget's, ``_pw<W>`` for stage 2's L1 image loss at weight W instead of the config's and
    ``_sim`` for similarity index heads instead of the config's dense ones)."""
    codes: str = "token"
    inject_kernel: int = 1
    inject_depth: int = 1
    patch: int | None = None
    norm: str = "minmax"
    quality_iters: int | None = None
    top_copies: int = 1
    predictor_iters: int | None = None
    predictor_lr: float | None = None
    predictor_pixel_weight: float | None = None
    index_head: str = "dense"

    @property
    def options(self) -> dict:
        kernel = {"inject_kernel": self.inject_kernel} if self.inject_kernel != 1 else {}
        depth = {"inject_depth": self.inject_depth} if self.inject_depth != 1 else {}
        patch = {"patch": self.patch} if self.patch else {}
        head = {"index_head": self.index_head} if self.index_head != "dense" else {}
        return {**CODES[self.codes][0], **kernel, **depth, **patch, **head}

    @property
    def tag(self) -> str:
        return (CODES[self.codes][1] + (f"_k{self.inject_kernel}" if self.inject_kernel != 1 else "")
                + (f"_d{self.inject_depth}" if self.inject_depth != 1 else "")
                + (f"_p{self.patch}" if self.patch else "") + NORMS[self.norm][1]
                + (f"_o{self.top_copies}" if self.top_copies > 1 else "")
                + (f"_s{self.predictor_iters}" if self.predictor_iters else "")
                + (f"_lr{self.predictor_lr:g}" if self.predictor_lr else "")
                + (f"_q{self.quality_iters}" if self.quality_iters else "")
                + (f"_pw{self.predictor_pixel_weight:g}" if self.predictor_pixel_weight else "")
                + ("_sim" if self.index_head == "similarity" else ""))

    @property
    def score_csv(self) -> str:
        """The scores the plug-in trainings condition on, relative to the work folder."""
        return NORMS[self.norm][0]

    def stage_iters(self, iters: dict) -> dict:
        """Iterations of each plug-in stage under a budget's ``iters`` (``predictor_iters`` and ``quality_iters``
        replace stage 2's and stage 3's)."""
        return ({s: iters[s] for s in STAGES} | ({"predictor": self.predictor_iters} if self.predictor_iters else {})
                | ({"quality": self.quality_iters} if self.quality_iters else {}))

    def control_names(self, prefix: str, iters: dict) -> dict[str, str]:
        """The control trainings' names: the host trained further and the filtering host train for as many
        iterations as the plug-in's three stages, and take ``_i<N>`` when N differs from the budget's count."""
        extra = sum(self.stage_iters(iters).values())
        suffix = f"_i{extra}" if extra != sum(iters[s] for s in STAGES) else ""
        return {k: f"bgt_{prefix}_{k}{suffix if k in ('further', 'filtered') else ''}" for k in CONTROLS}


STAGES = ("codebook", "predictor", "quality")
#: images, iterations (host; plug-in stages) and the filtering baseline's top fraction, per budget
BUDGETS = {
    "tiny": {"train": 12, "heldout": 4, "top_percent": 40,
             "iters": {"host": 4, "codebook": 2, "predictor": 3, "quality": 2}},
    "small": {"train": 800, "heldout": 100, "top_percent": 40,
              "iters": {"host": 800, "codebook": 50, "predictor": 400, "quality": 100}},
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
                   help="tiny: seconds (tests, plumbing only); small: CPU (one host, --no-ablations: 35 to 45 min on 2 "
                        "cores; both hosts with the ablations: 1.5 h or more); full: a GPU")
    p.add_argument("--data", required=True, help="folder of HQ images (faces: aligned crops)")
    p.add_argument("--contaminate", type=float, default=0.5, help="fraction of the training GT contaminated")
    p.add_argument("--contamination", choices=CONTAMINATION, default="standard",
                   help="how far each contaminated target is degraded: standard (blur sigma 1-2, down-up 1-2x, JPEG "
                        "q30-60) or light (each distance from the identity halved: 0.5-1, 1-1.5x, q65-80)")
    p.add_argument("--lq-from", choices=LQ_FROM, default="target",
                   help="what each training input is degraded from: its target (as restorers are trained) or the "
                        "target's pristine copy (the input then does not show the target's quality)")
    p.add_argument("--codes", choices=CODES, default="token",
                   help="the plug-in's codes: one per token (the configs') or one per bottleneck pixel; each choice "
                        "trains its own plug-ins and shares the host and the controls")
    p.add_argument("--inject-kernel", type=int, default=1,
                   help="the kernel of the plug-in's output layer W_o (odd; the configs': 1); a kernel other than 1 "
                        "trains its own plug-ins, as --codes does")
    p.add_argument("--inject-depth", type=int, default=1,
                   help="W_o's convolutions (the configs': 1, linear; D > 1: a small decoder of the code "
                        "differences, GELU between); a depth other than 1 trains its own plug-ins, as --codes does")
    p.add_argument("--patch", type=int,
                   help="pixels per Transformer token side (the configs': 4; with --codes pixel a smaller patch gives "
                        "attention at a finer grid); another patch trains its own plug-ins, as --codes does")
    p.add_argument("--norm", choices=NORMS, default="minmax",
                   help="the scores the plug-in is conditioned on: min-max normalised (the authors') or ranks among "
                        "the training GT (iqp score --norm rank); rank trains its own plug-ins, as --codes does")
    p.add_argument("--quality-iters", type=int,
                   help="stage-3 iterations of the plug-in trainings (default: the budget's); another count trains its "
                        "own plug-ins, as --codes does, and its own host trained further and filtering host (each "
                        "trains for as many iterations as the plug-in's three stages)")
    p.add_argument("--predictor-iters", type=int,
                   help="stage-2 iterations of the plug-in trainings (default: the budget's); another count trains its "
                        "own plug-ins and controls, as --quality-iters does")
    p.add_argument("--predictor-lr", type=float,
                   help="stage 2's learning rate (default: the config's, 1e-3); another rate trains its own plug-ins, "
                        "as --codes does (the controls stay the same)")
    p.add_argument("--predictor-pixel-weight", type=float,
                   help="weight of stage 2's L1 image loss (default: the config's, 1); another weight trains its own "
                        "plug-ins, as --codes does (the controls stay the same)")
    p.add_argument("--index-head", choices=("dense", "similarity"), default="dense",
                   help="the plug-in's index heads (plugin: index_head): dense (the configs', a logit layer per codebook) "
                        "or similarity (logits from the distance of a predicted feature to each code); similarity trains "
                        "its own plug-ins, as --codes does")
    p.add_argument("--code-temperature", type=float, default=0.0,
                   help="also evaluate the plug-in decoding at inference the softmax mixture of its codes at this "
                        "temperature (plugin: code_temperature; 0, the default: only the most likely codes, the paper's); "
                        "no training")
    p.add_argument("--top-copies", type=int, default=1,
                   help="each top-scored training target (the filtering baseline's top set) this many times in the plug-in's "
                        "stages 2-3, every target keeping its score; another count trains its own plug-ins, as --codes does")
    p.add_argument("--hosts", default="restoreformer,swinir", help=f"host families: {', '.join(HOSTS)}")
    p.add_argument("--ablations", action=argparse.BooleanOptionalAction, default=True,
                   help="also train and evaluate the ablations, the teacher-forced plug-in among them (--no-ablations: "
                        "the host, the controls and the configs' plug-in only)")
    p.add_argument("--split", choices=SPLIT_SEEDS, default="heldout",
                   help="evaluate on the held-out images (default), or on the development split (the pristine copies "
                        f"of the first {beyond_gt_data.DEVELOPMENT} contaminated training images) to choose between "
                        "options without touching the "
                        "held-out images; writes beyond_gt_development.* and its figures beside the held-out ones")
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


# ---------------------------------------------------------------- prior
def score_training_gt(work: Path, manifest: dict, norm: str = "minmax") -> dict:
    """``iqp score`` of the mixed training GT with the prior (min-max, and ``norm`` too when it is another);
    the AUC of each offline metric for telling pristine from contaminated targets (P(a pristine target scores
    better than a contaminated one))."""
    csv = work / NORMS["minmax"][0]
    if not csv.exists():
        run(["-m", "iqp_plugin.scoring", "-i", "data/train", "-o", NORMS["minmax"][0], "--metrics", PRIOR],
            work, work / "logs" / "score.log")
    other = work / NORMS[norm][0]
    # from min-max's raw scores: scoring into a copy computes no unchanged image again; a copy whose sidecar still
    # says min-max (an interrupted run) is normalised again
    if not other.exists() or read_sidecar(sidecar_path(other)).get("norm") != norm:
        for path in (other.with_suffix(".json"), other):
            shutil.copyfile(csv.with_suffix(path.suffix), path)
        run(["-m", "iqp_plugin.scoring", "-i", "data/train", "-o", NORMS[norm][0], "--metrics", PRIOR, "--norm", norm],
            work, work / "logs" / f"score_{norm}.log")
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
    """Train configs/beyond_gt/<config>.yml in WORK (see ``benchmarks.quality.train``)."""
    return quality_train(work, config, device, threads, CONFIGS, **overrides)


#: which trainings of a host family need which others first
NEEDS = {"host": (), "oracle": (), "further": ("host",), "filtered": ("host",), "codebook": ("host",),
         "predictor": ("codebook",), "quality": ("predictor",), "continuous": ("predictor",), "injection": ("predictor",),
         "teacher_predictor": ("codebook",), "teacher": ("teacher_predictor",),
         "bilinear_codebook": ("host",), "bilinear_predictor": ("bilinear_codebook",), "bilinear": ("bilinear_predictor",),
         "lean_codebook": ("host",), "lean_predictor": ("lean_codebook",), "lean": ("lean_predictor",)}
#: the plug-in options of the lean default preset, set over a config's (its patch and upsampling stay)
LEAN = {"preset": "lean", **PRESETS["lean"]}


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
              choice: PluginChoice = PluginChoice(), top_percent: float = 40) -> dict[str, tuple[str, dict]]:
    """Every training of one host family, in order: system key -> (config, --force_yml overrides).

    ``lq_from``: a key of :data:`LQ_FROM` (the oracle's targets are pristine, so its inputs are the same either
    way); ``ablations`` False keeps the :data:`CORE` trainings only; ``choice``: the plug-in's options;
    ``top_percent``: the filtering baseline's share of top-scored targets, the ones ``choice.top_copies`` repeats."""
    host = read_options(str(CONFIGS / f"{prefix}_host.yml"))
    h = iters["host"]
    plugin_iters = choice.stage_iters(iters)
    extra = sum(plugin_iters.values())
    names = choice.control_names(prefix, iters)
    lr = host["train"]["optim_g"]["lr"] * host["train"]["scheduler"]["gamma"] ** 2
    base = f"bgt_{prefix}"
    plugin_opt, tag = choice.options, choice.tag
    forced = {f"network_g:plugin:{k}": v for k, v in plugin_opt.items()}
    if choice.norm != "minmax":
        forced["datasets:train:score_csv"] = choice.score_csv
    pbase = f"{base}{tag}"  # the plug-in trainings'

    def after(stage: str) -> dict:  # start from a plug-in training of the same choice
        return {"path:pretrain_network_g": f"experiments/{pbase}_{stage}/models/net_g_latest.pth"}

    host_ckpt = f"experiments/{names['host']}/models/net_g_latest.pth"
    host_iters = {"train:total_iter": h, "train:scheduler:milestones": [max(1, h // 2), max(2, 3 * h // 4)]}
    more = {"path:pretrain_network_g": host_ckpt, "train:total_iter": extra, "train:optim_g:lr": lr,
            "train:scheduler:milestones": [extra + 1]}
    stage_opt = {s: {"network_g:host_checkpoint": host_ckpt, **forced, "train:total_iter": plugin_iters[s]} for s in STAGES}
    stage_opt["predictor"]["train:scheduler:milestones"] = [max(1, 3 * plugin_iters["predictor"] // 4)]
    if choice.predictor_lr:
        stage_opt["predictor"]["train:optim_g:lr"] = choice.predictor_lr
    if choice.predictor_pixel_weight:
        stage_opt["predictor"]["train:pixel_opt:loss_weight"] = choice.predictor_pixel_weight
    jobs = {
        "host": (f"{prefix}_host", {"name": names["host"], **host_iters}),
        "oracle": (f"{prefix}_host", {"name": names["oracle"], "datasets:train:dataroot_gt": "data/train_pristine",
                                      **host_iters}),
        "further": (f"{prefix}_host", {"name": names["further"], **more}),
        "filtered": (f"{prefix}_host", {"name": names["filtered"], "datasets:train:dataroot_gt": "data/train_top",
                                        **more}),
        "codebook": (f"{prefix}_codebook", {"name": f"{pbase}_codebook", **stage_opt["codebook"]}),
        "predictor": (f"{prefix}_predictor", {"name": f"{pbase}_predictor",
                                              **after("codebook"), **stage_opt["predictor"]}),
        "quality": (f"{prefix}_quality", {"name": f"{pbase}_quality",
                                          **after("predictor"), **stage_opt["quality"]}),
        "continuous": (f"{prefix}_quality", {"name": f"{pbase}_continuous", "train:quality_mode": "continuous",
                                             **after("predictor"), **stage_opt["quality"]}),
        "injection": (f"{prefix}_quality", {"name": f"{pbase}_injection", "train:quality_trains": "plugin",
                                            **after("predictor"), **stage_opt["quality"]}),
        "teacher_predictor": (f"{prefix}_predictor", {"name": f"{pbase}_teacher_predictor", "train:teacher_forcing": True,
                                                       **after("codebook"), **stage_opt["predictor"]}),
        "teacher": (f"{prefix}_quality", {"name": f"{pbase}_teacher", **stage_opt["quality"], **after("teacher_predictor")}),
        **_variant_chain(prefix, pbase, stage_opt, "lean", {**LEAN, **plugin_opt}),
        **(_variant_chain(prefix, pbase, stage_opt, "bilinear", {"upsample": "bilinear"})
           if prefix in PIXEL_SHUFFLE and choice.codes == "token" else {}),
    }
    source = LQ_FROM[lq_from]
    jobs = {key: (config, {**opt, **({"datasets:train:dataroot_source": source} if source and key != "oracle" else {})})
            for key, (config, opt) in jobs.items() if ablations or key in CORE}
    if choice.top_copies > 1:  # stages 2-3 of every plug-in see each top-scored target top_copies times
        over = {"datasets:train:top_copies": choice.top_copies, "datasets:train:top_percent": top_percent}
        jobs = {key: (config, {**opt, **over} if config.endswith(("_predictor", "_quality")) else opt)
                for key, (config, opt) in jobs.items()}
    return jobs


def _variant_chain(prefix: str, pbase: str, stage_opt: dict, variant: str, plugin: dict) -> dict[str, tuple[str, dict]]:
    """The three stages again, named ``<pbase>_<variant>...``, with the plug-in options ``plugin`` set over the
    config's: ``bilinear`` (the ablation of ``upsample: pixelshuffle``) and ``lean`` (the default preset against
    the configs' standard)."""
    base, jobs, previous = f"{pbase}_{variant}", {}, None
    forced = {f"network_g:plugin:{k}": v for k, v in plugin.items()}
    for stage, key in zip(STAGES, (f"{variant}_codebook", f"{variant}_predictor", variant)):
        name = base if stage == "quality" else f"{base}_{stage}"
        opt = {"name": name, **forced, **stage_opt[stage]}
        if previous:
            opt["path:pretrain_network_g"] = f"experiments/{previous}/models/net_g_latest.pth"
        jobs[key] = (f"{prefix}_{stage}", opt)
        previous = name
    return jobs


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

    pairs = [full_reference(u8(a), u8(b)) for a, b in zip(images, pristine)]
    values = {m: [p[m] for p in pairs] for m in ("psnr", "ssim", "sharpness")}
    with torch.no_grad():
        for name, module in nr.items():
            values[name] = torch.cat([module(images[i:i + 10].to(device)).reshape(-1).double().cpu()
                                      for i in range(0, len(images), 10)]).tolist()
    return values


def wrapper_net(prefix: str, host_ckpt: Path, plugin: bool, choice: PluginChoice = PluginChoice()) -> dict:
    """IQPWrapper options of a host family (with its plug-in of ``choice`` when ``plugin``)."""
    net = dict(read_options(str(CONFIGS / f"{prefix}_quality.yml"))["network_g"])
    net.pop("type")
    return {**net, "host_checkpoint": str(host_ckpt),
            "plugin": {**net["plugin"], **choice.options} if plugin else None}


def evaluate(work: Path, prefix: str, device: torch.device, iters: dict, ablations: bool = True,
             choice: PluginChoice = PluginChoice(), split: str = "heldout",
             code_temperature: float = 0.0) -> tuple[dict, dict]:
    """Per-image metrics of every system of one host family on ``split`` (``iters``: the budget's; ``ablations``
    False: without the ablations; the plug-ins of ``choice``; ``code_temperature`` > 0: the plug-in once more at
    every score, decoding its codes' softmax mixture at that temperature), and its restored images (for figures)."""
    lq, gt = split_pairs(work, prefix, split)
    pbase = f"bgt_{prefix}{choice.tag}"
    ckpt = {**{k: checkpoint(work, name) for k, name in choice.control_names(prefix, iters).items()},
            **{k: checkpoint(work, f"{pbase}_{k}") for k in ("predictor", "quality")}}
    host = {k: load_wrapper(wrapper_net(prefix, ckpt[k], False), device=device) for k in CONTROLS}
    net = wrapper_net(prefix, ckpt["host"], True, choice)
    iqp = load_wrapper(net, str(ckpt["quality"]), device)
    image_range = iqp.adapter.image_range
    pristine = as_8bit(gt, image_range)
    systems = {"input (LQ)": lambda: as_8bit(lq, image_range),
               "host": lambda: restored(host["host"], lq, device),
               "host trained further": lambda: restored(host["further"], lq, device),
               "host on top-scored GT": lambda: restored(host["filtered"], lq, device),
               "oracle (pristine GT)": lambda: restored(host["oracle"], lq, device)}
    for s in SCORES:
        systems[f"host + IQP @{s}"] = lambda s=s: restored(iqp, lq, device, score=s)
    if code_temperature:
        mixed = load_wrapper({**net, "plugin": {**net["plugin"], "code_temperature": code_temperature}},
                             str(ckpt["quality"]), device)
        for s in SCORES:
            systems[f"{MIXTURE.format(code_temperature)} @{s}"] = lambda s=s: restored(mixed, lq, device, score=s)
    systems["IQP, HQ branch off"] = lambda: _hq_off(iqp, lq, device)
    systems["IQP, no quality stage"] = lambda: restored(load_wrapper(net, str(ckpt["predictor"]), device), lq, device,
                                                        TARGET)
    if ablations:
        systems.update(_ablation_systems(work, prefix, lq, device, choice))
    nr = create_prior([PRIOR, HELDOUT_NR]).create_metrics(device)
    per_image, images = {}, {"pristine": pristine}
    for name, fn in tqdm(systems.items(), desc=f"evaluate {prefix}", unit="system"):
        images[name] = fn()
        per_image[name] = metrics_of(images[name], pristine, nr, device)
    per_image["pristine (reference)"] = metrics_of(pristine, pristine, nr, device)
    return per_image, images


def _ablation_systems(work: Path, prefix: str, lq: torch.Tensor, device: torch.device,
                      choice: PluginChoice = PluginChoice()) -> dict:
    """The systems of the plug-ins trained differently (:func:`trainings` outside :data:`CORE`): name -> a
    function returning their outputs (at every score for the teacher-forced plug-in, at the target score for the
    others)."""
    host = checkpoint(work, f"bgt_{prefix}_host")
    teacher = load_wrapper(wrapper_net(prefix, host, True, choice), str(checkpoint(work, f"bgt_{prefix}{choice.tag}_teacher")),
                           device)
    systems = {f"{TEACHER} @{s}": lambda s=s: restored(teacher, lq, device, score=s) for s in SCORES}
    variants = {"IQP, continuous quality stage": ("continuous", {}), "IQP, injection trained in stage 3": ("injection", {}),
                "IQP, lean default": ("lean", LEAN)}
    if prefix in PIXEL_SHUFFLE and choice.codes == "token":
        variants["IQP, bilinear correction"] = ("bilinear", {"upsample": "bilinear"})
    for system, (variant, plugin) in variants.items():
        net = wrapper_net(prefix, host, True, choice)
        net["plugin"] = {**net["plugin"], **plugin, **choice.options}
        name = f"bgt_{prefix}{choice.tag}_{variant}"
        systems[system] = lambda net=net, name=name: restored(
            load_wrapper(net, str(checkpoint(work, name)), device), lq, device, TARGET)
    return systems


def _hq_off(net, lq: torch.Tensor, device: torch.device) -> torch.Tensor:
    """host + IQP at the target score with the HQ codebook's contribution removed at inference."""
    codebook = net.plugin.codebook
    weight, codebook.hq_weight = codebook.hq_weight, 0.0
    try:
        return restored(net, lq, device, score=TARGET)
    finally:
        codebook.hq_weight = weight


#: the trainings --precondition runs
PRECONDITION = ("host", "oracle")


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
        names = PluginChoice().control_names(prefix, budget["iters"])
        nets = {k: load_wrapper(wrapper_net(prefix, checkpoint(work, names[k]), False), device=device)
                for k in PRECONDITION}
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
        "Prior AUC (pristine vs contaminated training GT): " + ", ".join(f"{k} {v:.3f}" for k, v in prior["auc"].items())
        + f"; filtering's top {budget['top_percent']:g}% holds {100 * top_contaminated:.1f}% contaminated targets.", "",
        markdown_table(["host family", "input PSNR", "host", "oracle", "host - input", "oracle - host", "valid"], rows)])
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
    """The issue's four targets at budget small, each with its numbers and 'met', for the configs' plug-in,
    and targets 1-3 again for the teacher-forced one where it was evaluated (with the ablations) and, under
    "mixture", for the plug-in decoding its codes' mixture (``--code-temperature``). Verdicts:
    paired differences beyond NOISE_SE standard errors, with no relative floor (``rtol=0``: 100 images resolve
    small differences)."""
    iqp = f"host + IQP @{TARGET}"
    pairs = {
        "HQ branch (on - off)": (iqp, "IQP, HQ branch off"),
        "quality stage (with - without)": (iqp, "IQP, no quality stage"),
        "discrete - continuous": (iqp, "IQP, continuous quality stage"),
        "stage 3 injection (frozen - trained)": (iqp, "IQP, injection trained in stage 3"),
        "lean default - standard preset": ("IQP, lean default", iqp),
        "pixel-shuffle - bilinear correction": (iqp, "IQP, bilinear correction"),
        "stage-2 W_o from GT codes (teacher-forced) - from predicted codes": (f"{TEACHER} @{TARGET}", iqp),
    }
    ablation = {name: {m: paired(per_image[a][m], per_image[b][m], METRICS[m][0], rtol=0.0) for m in METRICS}
                for name, (a, b) in pairs.items() if a in per_image and b in per_image}
    teacher = {"teacher-forced": target_rows(per_image, results, TEACHER)} if f"{TEACHER} @{TARGET}" in per_image else {}
    mixed = {name.rsplit(" @", 1)[0] for name in per_image if name.startswith(MIXTURE.partition("{")[0])}
    mixture = {system: target_rows(per_image, results, system) for system in sorted(mixed)}
    return {**target_rows(per_image, results, "host + IQP"), "4 ablations": ablation, **teacher,
            **({"mixture": mixture} if mixture else {})}


def target_rows(per_image: dict, results: dict, system: str) -> dict:
    """Targets 1-3 for the plug-in whose outputs are named ``<system> @<score>``."""
    iqp = f"{system} @{TARGET}"
    psnr = {k: v["psnr"]["mean"] for k, v in results.items()}
    sweep = {m: [results[f"{system} @{s}"][m]["mean"] for s in SCORES] for m in ("psnr", "sharpness")}
    rho = {m: spearman(list(SCORES), v) for m, v in sweep.items()}
    gain = psnr["host"] - psnr["input (LQ)"]
    gap = psnr["oracle (pristine GT)"] - psnr["host"]
    closed = (psnr[iqp] - psnr["host"]) / gap if gap > 0 else float("nan")
    vs = {base: {m: paired(per_image[iqp][m], per_image[base][m], METRICS[m][0], rtol=0.0) for m in METRICS}
          for base in ("host", "host trained further", "host on top-scored GT", "oracle (pristine GT)")}
    return {
        "1 the score steers": {"spearman": rho, "sweep": sweep, "met": all(r >= 0.9 for r in rho.values())},
        "2 the prior beats more training": {
            "host gain over input (dB)": gain, "oracle gap (dB)": gap, "setup valid": setup_valid(gain, gap),
            "gap closed": closed,
            "verdict vs host": vs["host"]["psnr"]["verdict"],
            "verdict vs host trained further": vs["host trained further"]["psnr"]["verdict"],
            "met": bool(setup_valid(gain, gap) and closed >= 0.5 and vs["host"]["psnr"]["verdict"] == "better"
                        and vs["host trained further"]["psnr"]["verdict"] == "better")},
        "3 it holds up against filtering": {"verdict vs host on top-scored GT": vs["host on top-scored GT"]["psnr"]["verdict"],
                                            "met": vs["host on top-scored GT"]["psnr"]["verdict"] in ("same", "better")},
        "paired": vs,
    }


# ---------------------------------------------------------------- figures and report
def save_grid(path: Path, images: dict, count: int = 6) -> None:
    """Rows: the first ``count`` held-out images; columns: input | host | host + IQP (and the teacher-forced
    plug-in, where evaluated) | oracle | pristine."""
    import cv2

    columns = {"input": "input (LQ)", "host": "host", f"host + IQP @{TARGET}": f"host + IQP @{TARGET}",
               f"teacher-forced @{TARGET}": f"{TEACHER} @{TARGET}", "oracle": "oracle (pristine GT)", "pristine": "pristine"}
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
    the filtering baseline and the oracle as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("psnr", "sharpness")):
        for k, (family, res) in enumerate(results.items()):
            colour = f"C{k}"
            for system, style in (("host + IQP", "-o"), (TEACHER, "-.s")):
                if f"{system} @{TARGET}" not in res:
                    continue
                means = [res[f"{system} @{s}"][metric]["mean"] for s in SCORES]
                errs = [res[f"{system} @{s}"][metric]["sem"] for s in SCORES]
                ax.errorbar(SCORES, means, yerr=errs, fmt=style, color=colour, label=f"{family}: {system}")
            for control, label, style in (("host", "host", dict(ls="--", lw=1)),
                                          ("host on top-scored GT", "filtering", dict(ls=(0, (6, 2, 1, 2)), lw=1)),
                                          ("oracle (pristine GT)", "oracle", dict(ls=":", lw=1.5))):
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
    """Targets 1-3 of one plug-in (:func:`target_rows`) as a markdown table."""
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
        f"| 3. at least matches filtering | vs host on top-scored GT: {t3['verdict vs host on top-scored GT']} | "
        + word[t3["met"]] + " |"])


def report(meta: dict, prior: dict, families: dict) -> str:
    """The markdown: setup, prior, per host family the systems table, the four targets and the ablations."""
    it = meta["iters"]
    held_out = meta.get("split", "heldout") == "heldout"
    evaluated = (f"held out: {meta['n_heldout']} pristine images, degraded once (seed 0)" if held_out else
                 f"**development split** (for choices, not for claims): the pristine copies of {meta['n_evaluated']} "
                 f"contaminated training images, degraded once (seed {SPLIT_SEEDS['development']})")
    lines = [f"# Beyond ground truth (budget {meta['budget']}, {meta['device']}, {meta['wall_s'] / 60:.0f} min)", "",
             f"Training GT: {meta['n_train']} images of `{meta['data']}`, {meta['n_contaminated']} of them "
             f"contaminated ({meta['contamination']}); training inputs degraded from "
             + {"target": "their targets", "pristine": "the targets' pristine copies"}[meta["lq_from"]]
             + f"; the plug-ins' codes: one per {meta['codes']}, W_o {meta['inject_kernel']}x{meta['inject_kernel']}"
             + ("" if meta["inject_depth"] == 1 else f", {meta['inject_depth']} layers (GELU between)")
             + ("" if meta["patch"] is None else f", {meta['patch']}x{meta['patch']} pixels per token")
             + ("; conditioned on rank-normalised scores" if meta["norm"] == "rank" else "")
             + (f"; each top-scored target {meta['top_copies']} times in stages 2-3" if meta.get("top_copies", 1) > 1 else "")
             + (f"; stage 2 at learning rate {meta['predictor_lr']:g}" if meta.get("predictor_lr") else "")
             + (f"; stage 2's L1 image loss at weight {meta['predictor_pixel_weight']:g}"
                if meta.get("predictor_pixel_weight") else "")
             + ("; similarity index heads" if meta.get("index_head") == "similarity" else "")
             + "; " + evaluated + " with each host's training "
             f"degradations. Hosts {it['host']} iterations; plug-in stages {it['codebook']} + {meta['predictor_iters']} + "
             f"{meta['quality_iters']}; the host trained further and the filtering host +{meta['control_iters']} "
             "iterations (as many). Mean ± standard error over "
             + ("the held-out images." if held_out else "the development images."), "",
             "Prior AUC (pristine vs contaminated training GT): "
             + ", ".join(f"{k} {v:.3f}" for k, v in prior["auc"].items()) + ".", ""]
    digits = {"psnr": 2, "ssim": 4, "sharpness": 3, PRIOR: 3, HELDOUT_NR: 2}
    for family, fam in families.items():
        res, tg = fam["results"], fam["targets"]
        header = ["system", "PSNR ↑", "SSIM ↑", "sharpness →1", "NIQE ↓ (prior)", "PIQE ↓ (held out)"]
        rows = [[name] + [fmt(stats[m], digits[m]) for m in ("psnr", "ssim", "sharpness", PRIOR, HELDOUT_NR)]
                for name, stats in res.items()]
        lines += [f"## {family}", "", markdown_table(header, rows), "", f"![grid]({fam['grid']}) ", ""]
        for system, rows_of in (("host + IQP", tg), (TEACHER, tg.get("teacher-forced")), *tg.get("mixture", {}).items()):
            if rows_of is None:
                continue
            lines += [f"Targets for {system}:", "", target_table(rows_of), "",
                      f"Paired differences of {system} @{TARGET} (mean ± s.e.; better/worse beyond {NOISE_SE:g} s.e.):", ""]
            rows = [[base] + [f"{d['mean']:+.3f} ± {d['sem']:.3f} ({d['verdict']})" for d in ms.values()]
                    for base, ms in rows_of["paired"].items()]
            if system == "host + IQP":
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
    if args.inject_kernel < 1 or args.inject_kernel % 2 == 0:
        raise SystemExit(f"--inject-kernel must be an odd positive integer, got {args.inject_kernel}")
    if args.inject_depth < 1:
        raise SystemExit(f"--inject-depth must be a positive integer, got {args.inject_depth}")
    for flag, value in (("--patch", args.patch), ("--quality-iters", args.quality_iters), ("--top-copies", args.top_copies),
                        ("--predictor-iters", args.predictor_iters)):
        if value is not None and value < 1:
            raise SystemExit(f"{flag} must be a positive integer, got {value}")
    if args.predictor_lr is not None and not 0 < args.predictor_lr < 1:
        raise SystemExit(f"--predictor-lr must be strictly between 0 and 1, got {args.predictor_lr}")
    if args.code_temperature < 0:
        raise SystemExit(f"--code-temperature must be >= 0 (0: the most likely codes only), got {args.code_temperature}")
    if args.predictor_pixel_weight is not None and not args.predictor_pixel_weight > 0:
        raise SystemExit(f"--predictor-pixel-weight must be positive, got {args.predictor_pixel_weight}")
    choice = PluginChoice(args.codes, args.inject_kernel, args.inject_depth, args.patch, args.norm, args.quality_iters,
                          args.top_copies, args.predictor_iters, args.predictor_lr, args.predictor_pixel_weight,
                          args.index_head)
    start = time.perf_counter()
    device = resolve_device(args.device)
    budget = BUDGETS[args.budget]
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
    prior = step("score", lambda: score_training_gt(work, manifest, args.norm))
    _, threshold = beyond_gt_data.top_scored(work, prior["scores"], budget["top_percent"])
    top = [n for n, s in prior["scores"].items() if s >= threshold]
    if args.split == "development":
        beyond_gt_data.development(work, manifest)
    suffix = "" if args.split == "heldout" else f"_{args.split}"
    jobs = {(family, key): job for family in families
            for key, job in trainings(HOSTS[family], budget["iters"], args.lq_from, args.ablations, choice,
                                      budget["top_percent"]).items()
            if not args.precondition or key in PRECONDITION}
    times.update(train_all(work, jobs, device, args.jobs))
    top_contaminated = sum(n in manifest["contaminated"] for n in top) / max(1, len(top))
    if args.precondition:
        return precondition(out, work, families, budget, device, args.split, prior, top_contaminated)
    fam_out = {}
    for family in families:
        prefix = HOSTS[family]
        per_image, images = step(f"{family} evaluate",
                                 lambda p=prefix: evaluate(work, p, device, budget["iters"], args.ablations, choice,
                                                           args.split, args.code_temperature))
        results = {name: {m: summary(v) for m, v in values.items()} for name, values in per_image.items()}
        grid = f"grid_{family}{suffix}.png"
        out.mkdir(parents=True, exist_ok=True)
        save_grid(out / grid, images)
        fam_out[family] = {"results": results, "targets": targets(per_image, results), "grid": grid}
    save_sweep(out / f"sweep{suffix}.png", {f: v["results"] for f, v in fam_out.items()})
    meta = {"budget": args.budget, "device": str(device), "wall_s": round(time.perf_counter() - start, 1),
            "steps_s": times, "iters": budget["iters"], "data": Path(args.data).name, "n_train": len(manifest["train"]),
            "n_contaminated": len(manifest["contaminated"]), "n_heldout": len(manifest["heldout"]),
            "split": args.split, "n_evaluated": len(beyond_gt_data.list_images(work / "data" / args.split)),
            "contamination": manifest["contamination"], "contaminate": args.contaminate,
            "contamination_level": args.contamination, "lq_from": args.lq_from,
            "codes": args.codes, "inject_kernel": args.inject_kernel, "inject_depth": args.inject_depth,
            "patch": args.patch, "norm": args.norm, "quality_iters": args.quality_iters or budget["iters"]["quality"],
            "predictor_iters": args.predictor_iters or budget["iters"]["predictor"], "predictor_lr": args.predictor_lr,
            "predictor_pixel_weight": args.predictor_pixel_weight, "index_head": args.index_head,
            "code_temperature": args.code_temperature,
            "control_iters": sum(choice.stage_iters(budget["iters"]).values()),
            "top_copies": args.top_copies,
            "ablations": args.ablations, "scores": list(SCORES),
            "top_percent": budget["top_percent"], "top_threshold": threshold,
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
