"""Discrete vs continuous quality optimisation: does optimising NIQE through the codebook avoid over-optimisation?

The paper's claim (IQPIR, component 3): an NR-IQA loss back-propagated into a *continuous* latent
over-optimises (the trained metric improves while the image, judged otherwise, gets worse); through
*discrete* codes (straight-through over the code choice) it does not. Here the quality stage of
benchmarks/configs/quality/face_quality.yml runs twice from the same stage-2 plug-in, ``quality_mode: discrete`` and
``quality_mode: continuous`` (the plug-in decodes a softmax mixture of codes), with everything else equal;
both runs use ``--quality-weight`` (default 1.0; the config's 0.15 barely moves NIQE in a short run, and
over-optimisation needs pressure to show) and ``--lr`` (default 3e-4: NIQE as a loss is noisy).
Every ``every`` iterations the saved plug-in (EMA weights, as inference loads them) is evaluated on the
held-out degraded faces of benchmarks/quality.py: NIQE (the trained metric), PIQE (held out) and PSNR.

The claim holds here if the continuous run lowers NIQE while PIQE or PSNR degrades more than in the
discrete run (changes from iteration 0, the shared stage-2 plug-in); the script says which, either way.

The data, scores, host and stages 1-2 are those of benchmarks/quality.py in its work folder
(``--work``, default benchmarks/out/quality/work_<budget>), reused when present and built otherwise.

    python benchmarks/overoptimization.py --budget small --data DATA --out benchmarks/out/overoptimization       # CPU
    python benchmarks/overoptimization.py --budget full --device cuda --data DATA --out $OUT/overoptimization   # GPU
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle OpenMP threads must not spin (shared CPUs)

import torch  # noqa: E402

from benchmarks import quality as q  # noqa: E402
from benchmarks.common import markdown_table, write_results  # noqa: E402
from iqp_plugin.inference.devices import resolve_device  # noqa: E402
from iqp_plugin.inference.loading import load_wrapper  # noqa: E402
from iqp_plugin.report.metrics import summary  # noqa: E402

MODES = ("discrete", "continuous")
#: quality-stage iterations of each run and the evaluation interval (held-out images: quality.py's budget)
BUDGETS = {"tiny": {"iters": 4, "every": 2}, "small": {"iters": 100, "every": 20},
           "full": {"iters": 10000, "every": 1000}}
CURVE_METRICS = ("niqe", "piqe", "psnr")


def evaluate(work: Path, plugin_file: Path, mode: str, samples, nr, device) -> dict[str, list[float]]:
    """Per-image NIQE, PIQE, PSNR and SSIM of host + the plug-in in ``plugin_file`` on the held-out faces,
    decoding codes as the run trains them (``continuous``: the softmax mixture; ``discrete``: top-1)."""
    lqs, gts = samples
    net = load_wrapper(q.wrapper_net(q.checkpoint(work, "bench_face_host"), plugin=True), str(plugin_file), device)
    net.plugin.mode = "continuous" if mode == "continuous" else "hard"
    return q.image_metrics(q.restore(net, lqs, device), gts, nr, device)


def claim(first: dict, last: dict) -> dict:
    """Whether the paper's claim holds on the per-image changes from iteration 0 (``first``: mode -> per-image
    metrics of the shared stage-2 plug-in, decoded as that mode decodes) to the end of each run (``last``: mode ->
    per-image metrics). A change counts only when it exceeds two standard errors of its paired per-image
    differences."""
    change = {mode: {m: q.paired_delta(last[mode][m], first[mode][m]) for m in CURVE_METRICS} for mode in MODES}
    gap = {m: q.paired_delta(last["continuous"][m], last["discrete"][m]) for m in CURVE_METRICS}

    def beyond_noise(stat: dict, sign: float) -> bool:
        return sign * stat["mean"] > 2 * stat["sem"]

    niqe_improves = beyond_noise(change["continuous"]["niqe"], -1)
    worse = [w for w, m, sign in (("PIQE", "piqe", 1), ("PSNR", "psnr", -1)) if beyond_noise(gap[m], sign)]
    holds = niqe_improves and bool(worse)
    if holds:
        text = (f"holds here: continuous optimisation lowers NIQE while {' and '.join(worse)} degrade more than in the "
                "discrete run")
    elif not niqe_improves:
        text = "is not shown here: continuous optimisation does not lower the held-out faces' NIQE beyond noise"
    else:
        text = ("does not hold here: continuous optimisation lowers NIQE, but PIQE and PSNR do not degrade more "
                "than in the discrete run")

    def pm(stat: dict, digits: int) -> str:
        return f"{stat['mean']:+.{digits}f} ± {stat['sem']:.{digits}f}"

    why = "; ".join(f"{m.upper()} continuous {pm(change['continuous'][m], d)}, "
                    f"discrete {pm(change['discrete'][m], d)}, "
                    f"continuous - discrete {pm(gap[m], d)}" for m, d in (("niqe", 3), ("piqe", 2), ("psnr", 3)))
    return {"holds": holds, "change": change, "continuous_minus_discrete": gap,
            "text": f"The paper's claim {text} (changes from iteration 0, mean ± standard error over images: {why})."}


def plot(curves: dict, path: Path) -> None:
    """NIQE, PIQE and PSNR against iterations, one line per mode (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    labels = {"niqe": "NIQE ↓ (trained)", "piqe": "PIQE ↓ (held out)", "psnr": "PSNR ↑ (dB)"}
    for ax, metric in zip(axes, CURVE_METRICS, strict=False):
        for mode, points in curves.items():
            ax.plot([p["iter"] for p in points], [p[metric] for p in points], marker="o", label=mode)
        ax.set_title(labels[metric])
        ax.set_xlabel("quality-stage iteration")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(curves: dict, verdict: dict, meta: dict) -> str:
    """Markdown: the curves as one table, the claim's verdict and the wall time."""
    header = ["iter"] + [f"{mode} {label}" for mode in MODES for label in ("NIQE ↓", "PIQE ↓", "PSNR ↑")]
    rows = [[a["iter"]] + [f"{p['niqe']:.3f}" if m == "niqe" else f"{p[m]:.2f}"
                           for p in (a, b) for m in CURVE_METRICS]
            for a, b in zip(curves["discrete"], curves["continuous"], strict=False)]
    return "\n".join([
        f"# Over-optimisation: discrete vs continuous quality optimisation (budget {meta['budget']}, {meta['device']})",
        "", f"Quality stage (NIQE loss weight {meta['quality_loss_weight']}, lr {meta['lr']}) from the same stage-2 "
            f"plug-in; evaluated on {meta['n_heldout']} held-out degraded faces every {meta['every']} iterations "
            "(iteration 0: the stage-2 plug-in). NIQE is the trained metric, PIQE is held out.", "",
        markdown_table(header, rows), "", verdict["text"], "", f"Plot: {meta['plot']}", "",
        f"Wall time: {meta['wall_s']:.0f} s."])


def main(argv: list[str] | None = None) -> dict:
    """Run the ablation; returns the JSON it writes (OUT/overoptimization.{json,md,png})."""
    p = q.arg_parser(__doc__, "benchmarks/out/overoptimization")
    p.add_argument("--work", help="benchmarks/quality.py's work folder to reuse (default: "
                                  "benchmarks/out/quality/work_<budget>)")
    p.add_argument("--quality-weight", type=float, default=1.0,
                   help="NIQE loss weight of both runs (face_quality.yml has 0.15; stronger pressure exposes "
                        "over-optimisation)")
    p.add_argument("--lr", type=float, default=3e-4,
                   help="Adam lr of both runs (NIQE as a loss is noisy: keep it modest)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    device = resolve_device(args.device)
    budget = BUDGETS[args.budget]
    work = Path(args.work or q.arg_parser().get_default("out") + f"/work_{args.budget}").resolve()
    times = q.build_plugin_chain(work, Path(args.data), q.BUDGETS[args.budget], device, last="predictor")
    runs = {}
    for mode in MODES:
        t = time.perf_counter()
        runs[mode] = q.train(work, "face_quality", device,
                             name=f"bench_face_quality_{mode}_w{args.quality_weight:g}_lr{args.lr:g}_it{budget['iters']}",
                             **{"train:total_iter": budget["iters"], "train:quality_mode": mode,
                                "train:quality_opt:loss_weight": args.quality_weight, "train:optim_g:lr": args.lr,
                                "logger:save_checkpoint_freq": budget["every"]})
        times[f"quality {mode}"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    samples, nr = q.heldout_samples(work), q.nr_modules(device)
    stage2 = q.checkpoint(work, "bench_face_predictor")
    first = {mode: evaluate(work, stage2, mode, samples, nr, device) for mode in MODES}
    curves, last = {}, {}
    for mode, latest in runs.items():
        curves[mode] = [{"iter": 0, **{m: summary(v)["mean"] for m, v in first[mode].items()}}]
        for it in range(budget["every"], budget["iters"] + 1, budget["every"]):
            q.log(f"evaluating {mode} @ {it}")
            last[mode] = evaluate(work, latest.with_name(f"net_g_{it}.pth"), mode, samples, nr, device)
            curves[mode].append({"iter": it, **{m: summary(v)["mean"] for m, v in last[mode].items()}})
    times["evaluate"] = round(time.perf_counter() - t, 1)

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(curves, out_dir / "overoptimization.png")
    verdict = claim(first, last)
    meta = {"budget": args.budget, "device": str(device), "wall_s": round(time.perf_counter() - start, 1),
            "steps_s": times, "iters": budget["iters"], "every": budget["every"], "n_heldout": len(samples[0]),
            "quality_loss_weight": args.quality_weight, "lr": args.lr,
            "config": "benchmarks/configs/quality/face_quality.yml", "work": work.name,
            "start": str(stage2.relative_to(work)),
            "plot": "overoptimization.png",
            "torch": torch.__version__}
    result = {"meta": meta, "curves": curves, "claim": verdict}
    markdown = report(curves, verdict, meta)
    paths = write_results(out_dir, "overoptimization", result, markdown)
    q.log("\n" + markdown + f"\n\nwrote {paths[0]}, {paths[1]} and {out_dir / 'overoptimization.png'}")
    return result


if __name__ == "__main__":
    main()
