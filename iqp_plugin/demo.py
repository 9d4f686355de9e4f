"""``make demo``: the whole IQP flow end to end on CPU, from nothing (no weights, no download).

    python -m iqp_plugin.demo [--out demo_out] [--host-checkpoint F [--host-opt YAML|JSON]] [--images DIR]
                              [--contaminate F] [--lq-from pristine|target] [--recipe NAME] [--fast]

1. data       crops of scikit-image's bundled photos -> OUT/data/hq (training GT) and OUT/data/heldout_hq
              (crops of two other photos, for evaluation); ``--images DIR`` uses your folder instead
              (every 8th image held out). Mixed-quality GT is simulated: a seeded ``--contaminate`` fraction
              (0.5) of the training GT is replaced by blurred, resampled, JPEG-compressed copies; the pristine
              copies (OUT/data/hq_pristine) and the held-out images are never trained on as targets. With
              ``--lq-from pristine`` (the default) each training input is degraded from its target's pristine
              copy, so that a soft target does not come with a softer input: only the score tells them apart
2. score      ``iqp score`` with the offline NIQE prior, normalised as the recipe says (``--norm rank``: each
              image's rank among the scored ones) -> OUT/data/hq_scores.csv (and heldout_hq_scores.csv); images
              the prior cannot score (flat crops) are set aside in OUT/data/unscored
3. host       ``iqp train -opt configs/demo/host_swinir.yml``: a small SwinIR x1 (noise and JPEG removal)
              trained from scratch by BasicSR's SRModel on the mixed GT (skipped with ``--host-checkpoint``)
4-6. codebook, predictor, quality: the three plug-in stages (configs/demo/{codebook,predictor,quality}.yml) with
              the named recipe's plug-in, data and stage-2 options (``--recipe``, iqp_plugin/archs/recipes.py: the ones
              the benchmark measured and ``plugin: {}`` gives a SwinIR host)
7. compare    the held-out split's seeded degraded inputs and pristine GT -> OUT/data/heldout_{lq,gt}; then
              ``iqp compare`` with OUT/wrapper.yml (host + plug-in), the plug-in asked for scores 0.1 to 0.95
              -> OUT/report/index.html (grids input | host | host + IQP | pristine GT, the metrics against the
              pristine GT vs the score) and verdict lines

Every step runs the ``iqp`` command a user would, in OUT; training steps on the option file written to
OUT/configs/ (the config of configs/demo/ with the run's overrides: iterations, the host and its
checkpoint), so each step can be rerun by hand. A rerun reuses what exists (data, scores,
``net_g_latest.pth``, the report; delete one to redo its step) and resumes an interrupted training.
OUT/demo.json records the options, and a rerun with other options is refused. ``--fast``: a minimal
budget for tests.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml
from tqdm import tqdm

from iqp_plugin.archs.recipes import RECIPES
from iqp_plugin.data.contamination import write_mixed
from iqp_plugin.data.datasets import IQPDegradedDataset, read_image
from iqp_plugin.data.sample_data import write_crops
from iqp_plugin.errors import InvalidInputError
from iqp_plugin.io.images import Picture, list_images, write_picture
from iqp_plugin.io.options import read_options
from iqp_plugin.prior.score_files import sidecar_path

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "demo"
STAGES = ("codebook", "predictor", "quality")
#: Conditioning scores of the report's sweep.
SWEEP = (0.1, 0.3, 0.5, 0.7, 0.95)
#: Side of the crops (NIQE compares 96 px blocks: one block per 96 px crop gives unsteady scores).
CROP = 192
#: Photos whose crops are kept for evaluation only: the held-out images show scenes never trained on.
HELDOUT_PHOTOS = ("chelsea", "coffee")
#: Photos whose crops are the training targets: those whose pristine crops NIQE ranks above their contaminated
#: ones. On rocket, hubble_deep_field and retina the prior's level follows the content (their pristine crops rank
#: as low as other photos' contaminated ones), so that a score there asks for a content as much as for a quality.
TRAINING_PHOTOS = ("astronaut", "motorcycle_left", "immunohistochemistry")
#: Training crops (of the other photos), held-out crops (of HELDOUT_PHOTOS) and iterations per config
#: (None: as in the config) of each budget.
BUDGETS = {
    "default": {"crops": 72, "heldout": 16, "iters": {}},
    "fast": {"crops": 16, "heldout": 3, "iters": {"host_swinir": 12, "codebook": 3, "predictor": 6, "quality": 2}},
}
#: --lq-from: the folder (in OUT) each training input is degraded from (None: the training target itself)
LQ_FROM = {"pristine": "data/hq_pristine", "target": None}
ITER = re.compile(r"\[epoch:\s*\d+, iter:\s*([\d,]+)")
LOSS = re.compile(r"\b(l_\w+): (\S+)")
IQP = str(Path(sys.executable).with_name("iqp"))  # the console script installed beside this interpreter
#: Idle OpenMP threads sleep instead of spinning: as fast on an idle CPU, about 3x faster on a shared one.
ENV = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "PYTHONWARNINGS": "ignore::FutureWarning,ignore:torch.meshgrid"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m iqp_plugin.demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="demo_out", help="output folder (reused by a rerun)")
    p.add_argument("--host-checkpoint", help="your trained host's weights: skips training the demo host")
    p.add_argument("--host-opt", help="its arch options: a YAML/JSON file (bare or with network_g) or inline JSON "
                                      "(default: the demo host of configs/demo/host_swinir.yml)")
    p.add_argument("--images", help="your HQ image folder instead of the bundled photos")
    p.add_argument("--contaminate", type=float, default=0.5,
                   help="fraction of the training images replaced by lower-quality copies "
                        "(0: train on them as they are)")
    p.add_argument("--lq-from", choices=LQ_FROM, default="pristine",
                   help="what each training input is degraded from: the pristine copy of its target (the input then "
                        "does not show the target's quality; only the score does) or the target itself")
    p.add_argument("--recipe", choices=RECIPES, default="pixel",
                   help="the plug-in's named recipe (iqp_plugin/archs/recipes.py; default: pixel, the benchmark's)")
    p.add_argument("--fast", action="store_true", help="minimal budget (tests)")
    args = p.parse_args(argv)
    if args.host_opt and not args.host_checkpoint:
        p.error("--host-opt needs --host-checkpoint")
    if not 0 <= args.contaminate < 1:
        p.error(f"--contaminate must lie in [0, 1), got {args.contaminate}")
    return args


def load_host_opt(text: str) -> dict:
    """Host arch options from a YAML/JSON file (a bare dict or an option file's network_g) or inline JSON."""
    opt = yaml.safe_load(Path(text).read_text() if Path(text).is_file() else text)
    opt = opt.get("network_g", opt) if isinstance(opt, dict) else opt
    if not isinstance(opt, dict) or "type" not in opt:
        raise InvalidInputError(f"--host-opt must give the host's arch options with a 'type', got {text!r}")
    return opt


def set_option(opt: dict, key: str, value) -> None:
    """Set ``opt['a']['b'] = value`` for ``key`` 'a:b' (as BasicSR's --force_yml)."""
    *parents, last = key.split(":")
    for k in parents:
        opt = opt[k]
    opt[last] = value


def check_stamp(out: Path, stamp: dict) -> None:
    """Refuse to mix runs: OUT/demo.json records the options the folder was made with."""
    path = out / "demo.json"
    if path.exists() and json.loads(path.read_text()) != stamp:
        raise SystemExit(f"demo: {out} was made with other options ({path.read_text().strip()}); "
                         "use another --out or delete it")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stamp))


def make_data(out: Path, images: str | None, budget: dict, contaminate: float) -> str:
    """Step 1: training and held-out HQ folders; 'reused' when nothing new was written.

    The held-out images stay pristine. Of the training images, a seeded fraction ``contaminate`` is replaced by
    lower-quality copies (``iqp_plugin.data.contamination``): mixed-quality GT, as restoration datasets have.
    """
    hq, pristine, held = out / "data" / "hq", out / "data" / "hq_pristine", out / "data" / "heldout_hq"
    before = [len(list_images(d)) if d.is_dir() else 0 for d in (hq, held)]
    if images:
        src = Path(images).resolve()
        names = list_images(src)
        if len(names) < 8:
            raise InvalidInputError(f"--images needs at least 8 images (every 8th is held out), {src} has {len(names)}")
        train = [n for i, n in enumerate(names) if i % 8 != 7]
        for name in names[7::8]:
            link = held / name
            if not os.path.lexists(link):
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(src / name)
    else:
        src = out / "data" / "bundled"
        train = [p.name for p in write_crops(src, budget["crops"], CROP, seed=0,
                                             photos=TRAINING_PHOTOS)]
        write_crops(held, budget["heldout"], CROP, seed=1, photos=HELDOUT_PHOTOS)
    targets = {Path(n).with_suffix(".png").as_posix(): n for n in train}
    if len(targets) < len(train):
        raise InvalidInputError(f"two training images in {src} differ only in their extension; rename one")
    if not all((hq / name).exists() for name in targets):
        write_mixed({name: (read_image(src / n) * 255).round().astype("uint8") for name, n in targets.items()},
                    hq, pristine, contaminate, seed=0)
    unscored = out / "data" / "unscored"
    for path in unscored.rglob("*.*"):  # set aside by step 2 earlier: keep them out
        (out / "data" / path.relative_to(unscored)).unlink(missing_ok=True)
    after = [len(list_images(d)) for d in (hq, held)]
    print(f"{after[0]} training images in {hq} ({round(contaminate * len(targets))} contaminated; pristine copies, "
          f"never trained on, in {pristine}), {after[1]} held-out in {held}")
    return "reused" if after == before else "ran"


def iqp(args: list[str], cwd: Path) -> list[str]:
    """The ``iqp`` command line for ``args``, printed as it would be typed."""
    print(f"$ cd {shlex.quote(str(cwd))} && iqp {shlex.join(args)}", flush=True)
    return [IQP, *args]


def run_iqp(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    """Run ``iqp ARGS`` in ``cwd``; stop the demo if it fails."""
    done = subprocess.run(iqp(args, cwd), cwd=cwd, env=ENV, text=True, **kwargs)
    if done.returncode:
        raise SystemExit(f"demo: 'iqp {args[0]}' failed with exit code {done.returncode}")
    return done


def score(out: Path, norm: str) -> str:
    """Step 2: offline-prior scores of the training and held-out images, normalised by ``norm`` (``iqp score
    --norm``) -> OUT/data/<folder>_scores.csv.

    Images the prior cannot score (flat crops, e.g. the black border of the retina photo) are moved to
    OUT/data/unscored, so that every training target has a score.
    """
    status = "reused"
    for folder in ("hq", "heldout_hq"):
        csv = f"data/{folder}_scores.csv"
        if not (out / csv).exists():
            run_iqp(["score", "-i", f"data/{folder}", "-o", csv, "--metrics", "niqe", "--norm", norm], out)
            status = "ran"
        for failed in json.loads(sidecar_path(out / csv).read_text())["failed"]:
            path, aside = (out / "data" / sub / folder / failed["imagename"] for sub in ("", "unscored"))
            if os.path.lexists(path):
                aside.parent.mkdir(parents=True, exist_ok=True)
                path.rename(aside)
                print(f"set aside {path.name}: {failed['error']}")
    return status


def stage_options(config: str, overrides: dict) -> dict:
    """The options of configs/demo/<config>.yml with ``overrides`` ({'a:b': value}) applied."""
    opt = read_options(str(CONFIGS / f"{config}.yml"))
    for key, value in overrides.items():
        set_option(opt, key, value)
    return opt


def checkpoint(out: Path, opt: dict) -> Path:
    """The ``net_g_latest.pth`` a training with options ``opt`` writes under ``out``."""
    return out / "experiments" / opt["name"] / "models" / "net_g_latest.pth"


def train(out: Path, config: str, opt: dict) -> str:
    """Steps 3-6: write OUT/configs/<config>.yml and train it in OUT (resuming), with a progress bar."""
    if checkpoint(out, opt).exists():
        return "reused"
    path = out / "configs" / f"{config}.yml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"# configs/demo/{config}.yml as run by iqp_plugin.demo\n" + yaml.safe_dump(opt, sort_keys=False))
    cmd = iqp(["train", "-opt", f"configs/{config}.yml", "--auto_resume"], out)
    proc = subprocess.Popen(cmd, cwd=out, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []
    with tqdm(total=opt["train"]["total_iter"], desc=config, unit="it") as bar:
        for line in proc.stdout:
            lines.append(line)
            match = ITER.search(line)
            if match:
                bar.update(int(match[1].replace(",", "")) - bar.n)
                bar.set_postfix_str(" ".join(f"{k}={v}" for k, v in LOSS.findall(line)))
            elif "Validation" in line or "\t # " in line or "HQ codebook threshold" in line:
                bar.write(line.rstrip())
        if proc.wait() == 0:
            bar.total = bar.n  # BasicSR drops incomplete batches: an epoch may end a few iterations short
    if proc.returncode:
        raise SystemExit(f"{''.join(lines[-40:])}\ndemo: training {config} failed (exit code {proc.returncode}); "
                         f"full log under {out / 'experiments' / opt['name']}")
    return "ran"


def write_heldout(out: Path, val_opt: dict, scale: int) -> None:
    """The held-out split's seeded degraded inputs and their GT as PNGs in OUT/data/heldout_{lq,gt}."""
    ds = IQPDegradedDataset({**val_opt, "dataroot_gt": str(out / "data" / "heldout_hq"), "scale": scale,
                             "phase": "val"})
    for i, name in enumerate(ds.gt_names):
        sample = ds[i]
        for key in ("lq", "gt"):
            path = out / "data" / f"heldout_{key}" / Path(name).with_suffix(".png")
            write_picture(path, Picture(sample[key].permute(1, 2, 0).numpy()))


def compare(out: Path, opt: dict, host_checkpoint: Path) -> str:
    """Step 7: held-out LQ/GT, OUT/wrapper.yml and ``iqp compare`` into OUT/report (verdicts kept in verdicts.txt)."""
    verdicts = out / "report" / "verdicts.txt"
    if verdicts.exists():
        print(verdicts.read_text(), end="")
        return "reused"
    write_heldout(out, opt["datasets"]["val"], opt["scale"])
    net = {**opt["network_g"], "host_checkpoint": str(host_checkpoint)}
    wrapper = {"network_g": net, "plugin_checkpoint": str(checkpoint(out, opt))}
    (out / "wrapper.yml").write_text(yaml.safe_dump(wrapper, sort_keys=False))
    done = run_iqp(["compare", "-i", "data/heldout_lq", "--gt", "data/heldout_gt", "-o", "report",
                    "--config", "wrapper.yml", "--scores", ",".join(map(str, SWEEP))], out, stdout=subprocess.PIPE)
    print(done.stdout, end="")
    verdicts.write_text("".join(line for line in done.stdout.splitlines(True) if " is better): " in line))
    return "ran"


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished subprocesses."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    out = Path(args.out).resolve()
    budget = BUDGETS["fast" if args.fast else "default"]
    host_ckpt = Path(args.host_checkpoint).resolve() if args.host_checkpoint else None
    if host_ckpt and not host_ckpt.is_file():
        raise FileNotFoundError(f"--host-checkpoint not found: {host_ckpt}")
    host_opt = load_host_opt(args.host_opt) if args.host_opt else None
    check_stamp(out, {"fast": args.fast, "contaminate": args.contaminate, "lq_from": args.lq_from,
                      "recipe": args.recipe,
                      "images": args.images and str(Path(args.images).resolve()),
                      "host_checkpoint": host_ckpt and str(host_ckpt), "host_opt": host_opt})

    source = LQ_FROM[args.lq_from] if args.contaminate else None

    def overrides(config: str) -> dict:
        """The budget's iterations and the inputs' source, over the config's."""
        n = budget["iters"].get(config)
        return {**({"train:total_iter": n, "logger:print_freq": 1} if n else {}),
                **({"datasets:train:dataroot_source": source} if source else {})}

    recipe = RECIPES[args.recipe]
    data = {"datasets:train:top_copies": recipe.top_copies, "datasets:train:top_percent": recipe.top_percent}
    sides = {"codebook": {"train:hq_top_percent": recipe.top_percent},
             "predictor": {**data, "train:optim_g:lr": recipe.predictor_lr}, "quality": data}
    opts = {"host_swinir": stage_options("host_swinir", overrides("host_swinir"))}
    host_ckpt = host_ckpt or checkpoint(out, opts["host_swinir"])
    arch = host_opt or opts["host_swinir"]["network_g"]  # the stages wrap exactly the host that was trained
    for c in STAGES:
        opts[c] = stage_options(c, {**overrides(c), **sides[c], "network_g:plugin:preset": args.recipe,
                                    "network_g:host": arch, "network_g:host_checkpoint": str(host_ckpt),
                                    "scale": int(arch.get("upscale", arch.get("scale", 1)))})
    steps = [("data", "HQ targets and held-out images", lambda: make_data(out, args.images, budget, args.contaminate)),
             ("score", "offline prior (NIQE) scores of the HQ targets", lambda: score(out, recipe.norm)),
             ("host", "train the demo host (small SwinIR x1, BasicSR SRModel)",
              lambda: "given" if args.host_checkpoint else train(out, "host_swinir", opts["host_swinir"])),
             *[(c, f"plug-in stage {i + 1}/3", lambda c=c: train(out, c, opts[c])) for i, c in enumerate(STAGES)],
             ("compare", "host alone vs host + IQP on the held-out degraded images",
              lambda: compare(out, opts["quality"], host_ckpt))]
    times = []
    for i, (name, what, fn) in enumerate(steps):
        print(f"\n== step {i + 1}/{len(steps)} {name}: {what}", flush=True)
        t, cpu = time.perf_counter(), cpu_seconds()
        status = fn()
        times.append((name, status, time.perf_counter() - t, cpu_seconds() - cpu))
    print(f"\n== summary ({out})\nstep       status      wall s    cpu s")
    for name, status, seconds, cpu in times:
        print(f"{name:<10} {status:<7} {seconds:9.1f} {cpu:8.1f}")
    print(f"{'total':<18} {time.perf_counter() - start:9.1f} {cpu_seconds():8.1f}")
    print("".join((out / "report" / "metrics.md").read_text().splitlines(True)[:3]), end="")
    print((out / "report" / "verdicts.txt").read_text(), end="")
    print(f"report: {out / 'report' / 'index.html'}")


if __name__ == "__main__":
    from iqp_plugin.cli import run

    run(main)
