"""Quality gain of the IQP plug-in on a small face host, against the host alone and against 'more training'.

A small, fully reproducible version of the paper's claim (seeded data, degradations and training):

1. data       DATA/faces_hq_celeba128 (``--data DATA``; 900 aligned 128 px faces): the last ``heldout`` images are
              held out, training uses the first ``train`` of the rest (symlinks in WORK/data/{train,heldout});
2. score      ``iqp score`` with the offline prior (NIQE) on the training faces -> WORK/data/train_scores.csv;
3. host       benchmarks/configs/quality/face_host.yml: a small SwinIR x1 face restorer trained from scratch by
              BasicSR's SRModel on online degradations (blur sigma 0.2-3, downsample 1-6x, noise 0-10, JPEG 40-90);
4-6. plug-in  benchmarks/configs/quality/face_{codebook,predictor,quality}.yml: the three IQP stages, host frozen;
7. control    face_host.yml again, continued from the host checkpoint for as many iterations as the three
              plug-in stages together, without the prior ('host fine-tuned'), so that more training is not
              mistaken for the prior;
8. evaluate   on the held-out faces, degraded once with the training degradations (seed 0): PSNR/SSIM,
              NIQE (the prior's metric, trained on) and PIQE (held out: never used in training); on
              DATA/faces_real_lq (46 real degraded faces, resized to 128 px, no GT): NIQE and PIQE.
              Outputs are rounded to 8 bit before scoring, as saved images would be.

Every training runs the project's entry point (``python -m iqp_plugin.train -opt benchmarks/configs/quality/X.yml
--force_yml ...``) in WORK = OUT/work_<budget>; the budget only changes iteration counts and image counts.
A rerun reuses the data, the scores and every training whose ``net_g_latest.pth`` exists.

    python benchmarks/quality.py --budget small --data DATA --out benchmarks/out/quality      # CPU, ~15 min
    python benchmarks/quality.py --budget full --device cuda --data DATA --out $OUT/quality   # GPU
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle OpenMP threads must not spin (shared CPUs)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import markdown_table, write_results  # noqa: E402
from iqp_plugin.data.datasets import IQPDegradedDataset, fit_square, read_image  # noqa: E402
from iqp_plugin.inference.devices import resolve_device  # noqa: E402
from iqp_plugin.inference.loading import load_wrapper  # noqa: E402
from iqp_plugin.io.images import list_images  # noqa: E402
from iqp_plugin.io.options import read_options  # noqa: E402
from iqp_plugin.prior.metrics import create_prior  # noqa: E402
from iqp_plugin.report.metrics import NOISE_SE, summary  # noqa: E402

CONFIGS = REPO / "benchmarks" / "configs" / "quality"
SIZE = 128
HOLDOUT = 100  # the last HOLDOUT faces are never trained on
#: images and training iterations of each budget (the fine-tuned host gets codebook + predictor + quality)
BUDGETS = {
    "tiny": {"train": 16, "heldout": 4, "real": 2, "iters": {"host": 4, "codebook": 2, "predictor": 3, "quality": 2}},
    "small": {"train": 800, "heldout": 100, "real": 46,
              "iters": {"host": 300, "codebook": 30, "predictor": 150, "quality": 80}},
    "full": {"train": 800, "heldout": 100, "real": 46,
             "iters": {"host": 20000, "codebook": 1000, "predictor": 10000, "quality": 5000}},
}
STAGES = ("codebook", "predictor", "quality")
#: metric -> (lower is better, role)
METRICS = {"psnr": (False, "full-reference"), "ssim": (False, "full-reference"),
           "niqe": (True, "the prior's metric, used in training"), "piqe": (True, "held out, never trained on")}
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def arg_parser(doc: str = __doc__, out: str = str(REPO / "benchmarks" / "out" / "quality")) -> argparse.ArgumentParser:
    """The options shared by the benchmark scripts: budget, device, output folder, data folder."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--budget", choices=BUDGETS, default="small",
                   help="tiny: seconds (tests); small: about 15 minutes on a CPU; full: for a GPU")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--out", default=out, help="output folder (JSON, markdown; trainings under OUT/work_<budget>)")
    p.add_argument("--data", required=True, help="folder holding faces_hq_celeba128 and faces_real_lq")
    return p


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------- data and training
def prepare_data(work: Path, data: Path, budget: dict) -> None:
    """WORK/data/train and WORK/data/heldout: symlinks to the first training faces and the last held-out ones."""
    names = list_images(data / "faces_hq_celeba128")
    splits = {"train": names[:-HOLDOUT][:budget["train"]], "heldout": names[-HOLDOUT:][-budget["heldout"]:]}
    for split, chosen in splits.items():
        folder = work / "data" / split
        folder.mkdir(parents=True, exist_ok=True)
        for name in chosen:
            link = folder / name
            if not link.exists():
                link.symlink_to((data / "faces_hq_celeba128" / name).resolve())


def run(cmd: list[str], work: Path, logfile: Path, threads: int | None = None) -> None:
    """Run a project command in WORK with this interpreter, its output in ``logfile``; stop if it fails.
    ``threads`` sets OMP_NUM_THREADS (for several commands at once)."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    log("$ cd " + str(work) + " && python " + " ".join(cmd))
    env = ENV if threads is None else {**ENV, "OMP_NUM_THREADS": str(threads)}
    with open(logfile, "w") as f:
        done = subprocess.run([sys.executable, *cmd], cwd=work, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = "".join(logfile.read_text().splitlines(True)[-30:])
        raise SystemExit(f"{tail}\nfailed with exit code {done.returncode}: python {' '.join(cmd)} (log: {logfile})")


def score(work: Path) -> None:
    """Offline-prior (NIQE) scores of the training faces, once."""
    if not (work / "data" / "train_scores.csv").exists():
        run(["-m", "iqp_plugin.cli.score", "-i", "data/train", "-o", "data/train_scores.csv", "--metrics", "niqe"],
            work, work / "logs" / "score.log")


def checkpoint(work: Path, name: str, label: str = "latest") -> Path:
    """The plug-in or host file a training called ``name`` writes in WORK."""
    return work / "experiments" / name / "models" / f"net_g_{label}.pth"


def train(work: Path, config: str, device: torch.device, threads: int | None = None, configs: Path = CONFIGS,
          resume: bool = False, **overrides) -> Path:
    """Train ``configs``/<config>.yml (default benchmarks/configs/quality) in WORK with ``--force_yml`` overrides
    ({'a:b': value}, 'name' first) and ``threads`` OpenMP threads; skipped when its ``net_g_latest.pth``
    exists; ``resume``: an interrupted training goes on from its newest saved state (``--auto_resume``) instead of
    starting again. Returns that file."""
    overrides = {"num_gpu": int(device.type == "cuda"), **overrides}
    name = overrides.get("name", read_options(str(configs / f"{config}.yml"))["name"])
    ckpt = checkpoint(work, name)
    if not ckpt.exists():
        forced = [f"{k}=!!float {v}" if isinstance(v, float) else f"{k}={v}" for k, v in overrides.items()]
        run(["-m", "iqp_plugin.train", "-opt", str(configs / f"{config}.yml"), *(["--auto_resume"] if resume else []),
             "--force_yml", *forced],
            work, work / "logs" / f"{name}.log", threads)
    return ckpt


def host_iters(iters: dict) -> dict:
    """SRModel overrides for the host's iterations, with its lr milestones at 1/2 and 3/4 of training."""
    t = iters["host"]
    return {"train:total_iter": t, "train:scheduler:milestones": [max(1, t // 2), max(2, 3 * t // 4)]}


def finetune_overrides(iters: dict) -> dict:
    """The 'host fine-tuned' control: face_host.yml continued from the host checkpoint, at the host's final lr,
    for as many iterations as the three plug-in stages together."""
    opt = read_options(str(CONFIGS / "face_host.yml"))["train"]
    lr = opt["optim_g"]["lr"] * opt["scheduler"]["gamma"] ** len(opt["scheduler"]["milestones"])
    total = sum(iters[s] for s in STAGES)
    return {"name": "bench_face_host_ft", "path:pretrain_network_g": str(checkpoint(Path("."), "bench_face_host")),
            "train:total_iter": total, "train:optim_g:lr": lr, "train:scheduler:milestones": [total + 1]}


def build_plugin_chain(work: Path, data: Path, budget: dict, device: torch.device, last: str = "quality") -> dict:
    """Data, scores, host and the plug-in stages up to ``last``; returns {step: seconds} (0 when reused)."""
    times = {}

    def step(name, fn):
        start = time.perf_counter()
        fn()
        times[name] = round(time.perf_counter() - start, 1)
        log(f"== {name}: {times[name]} s")

    iters = budget["iters"]
    step("data", lambda: prepare_data(work, data, budget))
    step("score", lambda: score(work))
    step("host", lambda: train(work, "face_host", device, **host_iters(iters)))
    for stage in STAGES[:STAGES.index(last) + 1]:
        extra = {"train:scheduler:milestones": [max(1, 3 * iters[stage] // 4)]} if stage == "predictor" else {}
        step(stage, lambda s=stage, e=extra: train(work, f"face_{s}", device, **{"train:total_iter": iters[s], **e}))
    return times


# ---------------------------------------------------------------- evaluation
def heldout_samples(work: Path) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The held-out faces degraded once (seed 0) with the training degradations: (LQ list, GT list)."""
    opt = dict(read_options(str(CONFIGS / "face_quality.yml"))["datasets"]["train"])
    opt.update(phase="val", seed=0, dataroot_gt=str(work / "data" / "heldout"), score_csv=None)
    ds = IQPDegradedDataset(opt)
    samples = [ds[i] for i in range(len(ds))]
    return [s["lq"] for s in samples], [s["gt"] for s in samples]


def real_samples(data: Path, count: int) -> list[torch.Tensor]:
    """The first ``count`` real degraded faces, central square resized to 128 px, RGB in [0, 1]."""
    folder = data / "faces_real_lq"
    out = []
    for name in list_images(folder)[:count]:
        img = fit_square(read_image(folder / name), SIZE, "resize")[..., ::-1]
        out.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float())
    return out


def wrapper_net(host_ckpt: Path, plugin: bool = False) -> dict:
    """IQPWrapper options of the bench face host (with the bench plug-in when ``plugin``)."""
    net = dict(read_options(str(CONFIGS / "face_quality.yml"))["network_g"])
    net.pop("type")
    return {**net, "host_checkpoint": str(host_ckpt), "plugin": net["plugin"] if plugin else None}


def restore(net, images: list[torch.Tensor], device: torch.device, batch: int = 8) -> list[torch.Tensor]:
    """Run ``net`` (None: identity) on the images in batches; outputs rounded to 8 bit, on the CPU."""
    outs = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.stack(images[i:i + batch]).to(device)
            y = x if net is None else net(x)
            outs += list(y.clamp(0, 1).mul(255).round().div(255).cpu())
    return outs


def image_metrics(images: list[torch.Tensor], gts: list[torch.Tensor] | None, nr: dict,
                  device: torch.device, batch: int = 8) -> dict[str, list[float]]:
    """Per-image NR metrics (``nr``: name -> pyiqa module) and, with ``gts``, PSNR and SSIM (8-bit, no crop)."""
    from basicsr.metrics import calculate_psnr, calculate_ssim
    from basicsr.utils import tensor2img

    values = {m: [] for m in nr}
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.stack(images[i:i + batch]).to(device)
            for name, module in nr.items():
                values[name] += module(x).reshape(-1).double().cpu().tolist()
    if gts is not None:
        pairs = [(tensor2img(a), tensor2img(b)) for a, b in zip(images, gts, strict=False)]
        values["psnr"] = [calculate_psnr(a, b, crop_border=0) for a, b in pairs]
        values["ssim"] = [calculate_ssim(a, b, crop_border=0) for a, b in pairs]
    return values


def paired_delta(a: list[float], b: list[float]) -> dict:
    """Mean and standard error of the per-image difference a - b (same images)."""
    return summary([x - y for x, y in zip(a, b, strict=False)])


def nr_modules(device: torch.device) -> dict:
    """The prior's metric (NIQE) and the held-out one (PIQE), created offline on ``device``."""
    return create_prior(["niqe", "piqe"]).create_metrics(device)


# ---------------------------------------------------------------- report
def fmt(stat: dict | None, digits: int) -> str:
    return "-" if not stat or stat["mean"] is None else f"{stat['mean']:.{digits}f}"


def verdict(name: str, delta: dict, metric: str) -> str:
    """'better'/'worse'/'within noise' for a paired delta (noise: |mean| <= 2 standard errors)."""
    d = delta["mean"]
    if d is None:
        return f"{name}: -"
    if abs(d) <= NOISE_SE * delta["sem"]:
        word = "within noise"
    else:
        word = "better" if (d < 0) == METRICS[metric][0] else "worse"
    return f"{name} {d:+.3f} ± {delta['sem']:.3f} ({word})"


def report(results: dict, deltas: dict, meta: dict) -> str:
    """The markdown report: one table of means, the plug-in's paired deltas and the wall time."""
    it = meta["iters"]
    plug = "+".join(str(it[s]) for s in STAGES)
    trained = {"input (LQ)": "-", "host": str(it["host"]), "host + IQP": f"{it['host']} + {plug} (plug-in only)",
               "host fine-tuned": f"{it['host']} + {meta['finetune_iters']}", "GT (reference)": "-"}
    syn, real = results["synthetic"], results["real"]
    rows = [[s, trained[s], fmt(syn[s].get("psnr"), 2), fmt(syn[s].get("ssim"), 4), fmt(syn[s]["niqe"], 3),
             fmt(syn[s]["piqe"], 2), fmt(real.get(s, {}).get("niqe"), 3), fmt(real.get(s, {}).get("piqe"), 2)]
            for s in syn]
    header = ["system", "train iters", "PSNR ↑", "SSIM ↑", "NIQE ↓ (prior)", "PIQE ↓ (held-out)",
              "real NIQE ↓", "real PIQE ↓"]
    lines = [f"# Quality gain: host vs host + IQP vs host fine-tuned (budget {meta['budget']}, {meta['device']})", "",
             f"Synthetic: {meta['n_heldout']} held-out CelebA faces (128 px, seeded degradations); "
             f"real: {meta['n_real']} faces_real_lq images resized to 128 px (no GT). "
             f"Host trained on {meta['n_train']} faces. Means over images; outputs rounded to 8 bit.", "",
             markdown_table(header, rows), "", "Paired per-image deltas of host + IQP (mean ± standard error; "
             "'within noise' when under 2 standard errors):", ""]
    for base, splits in deltas.items():
        parts = [verdict(f"{split} {m}", d, m) for split, ms in splits.items() for m, d in ms.items()]
        lines.append(f"- vs {base}: " + "; ".join(parts))
    lines += ["", f"Wall time: {meta['wall_s']:.0f} s."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the JSON it writes (OUT/quality.json, OUT/quality.md)."""
    args = arg_parser().parse_args(argv)
    start = time.perf_counter()
    device = resolve_device(args.device)
    budget, data = BUDGETS[args.budget], Path(args.data)
    work = (Path(args.out) / f"work_{args.budget}").resolve()
    times = build_plugin_chain(work, data, budget, device)
    ft = finetune_overrides(budget["iters"])
    t = time.perf_counter()
    ft_ckpt = train(work, "face_host", device, **ft)
    times["host fine-tuned"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    host_ckpt = checkpoint(work, "bench_face_host")
    nets = {"input (LQ)": None,
            "host": load_wrapper(wrapper_net(host_ckpt), device=device),
            "host + IQP": load_wrapper(wrapper_net(host_ckpt, plugin=True), str(checkpoint(work, "bench_face_quality")),
                                       device),
            "host fine-tuned": load_wrapper(wrapper_net(ft_ckpt), device=device)}
    nr = nr_modules(device)
    lqs, gts = heldout_samples(work)
    reals = real_samples(data, budget["real"])
    per_image = {"synthetic": {}, "real": {}}
    for system, net in nets.items():
        log(f"evaluating {system}")
        per_image["synthetic"][system] = image_metrics(restore(net, lqs, device), gts, nr, device)
        per_image["real"][system] = image_metrics(restore(net, reals, device), None, nr, device)
    per_image["synthetic"]["GT (reference)"] = image_metrics(gts, gts, nr, device)
    times["evaluate"] = round(time.perf_counter() - t, 1)

    results = {split: {s: {m: summary(v) for m, v in ms.items()} for s, ms in systems.items()}
               for split, systems in per_image.items()}
    deltas = {base: {split: {m: paired_delta(per_image[split]["host + IQP"][m], per_image[split][base][m])
                             for m in per_image[split][base]}
                     for split in per_image}
              for base in ("host", "host fine-tuned")}
    meta = {"budget": args.budget, "device": str(device), "wall_s": round(time.perf_counter() - start, 1),
            "steps_s": times, "iters": budget["iters"], "finetune_iters": ft["train:total_iter"],
            "n_train": budget["train"], "n_heldout": len(lqs), "n_real": len(reals), "image_size": SIZE,
            "metrics": {m: {"lower_better": lb, "role": role} for m, (lb, role) in METRICS.items()},
            "configs": [f"benchmarks/configs/quality/face_{c}.yml" for c in ("host", *STAGES)], "work": str(work),
            "torch": torch.__version__, "python": platform.python_version()}
    out = {"meta": meta, "results": results, "deltas": deltas}
    markdown = report(results, deltas, meta)
    paths = write_results(args.out, "quality", out, markdown)
    log("\n" + markdown + f"\n\nwrote {paths[0]} and {paths[1]}")
    return out


if __name__ == "__main__":
    main()
