"""Host curve: how long must a beyond_gt.py host train before it restores?

beyond_gt.py counts a setup only where the host restores (1 dB above its input) and leaves room (the oracle 0.5 dB
above the host). This script trains one host family's beyond_gt host on the mixed GT for ``--iters`` iterations
from scratch, with the host's schedule stretched to that length (milestones at 1/2 and 3/4), saves it every
``--every`` iterations and evaluates every saved host: PSNR against the pristine images, of the input and of the
host, and whether the host is 1 dB above its input. One figure (PSNR against iterations, with the input and the
input + 1 dB line) and one table. The oracle's gap is then checked at the chosen length by ``beyond_gt.py
--precondition`` (an oracle curve would double the cost).

The length is an option chosen from this curve, so it is evaluated on the development split (the pristine copies of
the first 50 contaminated training images, degraded once with seed 1), never on the held-out images. The data and
the trainings are beyond_gt.py's (its work folder layout, ``--contaminate``, ``--lq-from``, ``--contamination``), in
OUT/work_curve_<family>_<budget>[_<setup>]; a rerun reuses the training when it has finished and goes on from its
newest saved state when it was stopped; ``--saved`` evaluates the hosts saved so far and trains nothing (a curve
still training, or one stopped early).

    python benchmarks/host_curve.py --data DIR --host restoreformer --iters 4000 --every 500 --out OUT   # CPU
    python benchmarks/host_curve.py --data DIR --host restoreformer --iters 20000 --every 2000 --device cuda  # GPU
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle OpenMP threads must not spin

import torch  # noqa: E402

from benchmarks import beyond_gt, beyond_gt_data  # noqa: E402
from benchmarks.common import markdown_table, write_results  # noqa: E402
from benchmarks.quality import checkpoint  # noqa: E402
from iqp_plugin.data.contamination import CONTAMINATION  # noqa: E402
from iqp_plugin.inference.devices import resolve_device  # noqa: E402
from iqp_plugin.inference.loading import load_wrapper  # noqa: E402
from iqp_plugin.report.metrics import summary  # noqa: E402

SPLIT = "development"


def curve_job(prefix: str, iters: int, every: int, lq_from: str) -> tuple[str, dict]:
    """The host of beyond_gt.py, trained ``iters`` iterations and saved every ``every``: (config, overrides)."""
    config, opt = beyond_gt.trainings(prefix, {"host": iters, **{s: 0 for s in beyond_gt.STAGES}}, lq_from,
                                      False)["host"]
    return config, {**opt, "logger:save_checkpoint_freq": every}


def saved_iterations(work: Path, name: str, iters: int, every: int) -> list[int]:
    """The iterations at which training ``name`` saved its network: net_g_<iter>.pth every ``every`` iterations
    before the end, and net_g_latest.pth at ``iters``."""
    saved = [i for i in range(every, iters, every) if checkpoint(work, name, str(i)).exists()]
    return saved + ([iters] if checkpoint(work, name).exists() else [])


def evaluate(work: Path, prefix: str, name: str, points: list[int], iters: int, device: torch.device) -> list[dict]:
    """PSNR (mean ± s.e.) of the input and of the host at every saved iteration, on the development split; and the
    host's ceiling: its PSNR when given the pristine images themselves (what its bottleneck lets through)."""
    lq, gt = beyond_gt.split_pairs(work, prefix, SPLIT)
    rows, input_psnr = [], None
    for it in points:
        ckpt = checkpoint(work, name, "latest" if it == iters else str(it))
        net = load_wrapper(beyond_gt.wrapper_net(prefix, ckpt, None), device=device)
        pristine = beyond_gt.as_8bit(gt, net.adapter.image_range)
        if input_psnr is None:
            input_psnr = summary(beyond_gt.metrics_of(beyond_gt.as_8bit(lq, net.adapter.image_range), pristine, {},
                                                      device)["psnr"])
        host, ceiling = (summary(beyond_gt.metrics_of(beyond_gt.restored(net, x, device), pristine, {}, device)["psnr"])
                         for x in (lq, gt))
        gain = host["mean"] - input_psnr["mean"]
        rows.append({"iter": it, "input": input_psnr, "host": host, "ceiling": ceiling,
                     "host gain over input (dB)": gain, "restores": gain >= 1})
        beyond_gt.log(f"iteration {it}: input {input_psnr['mean']:.2f}, host {host['mean']:.2f}, ceiling "
                      f"{ceiling['mean']:.2f} dB")
    return rows


def save_figure(path: Path, rows: list[dict], family: str) -> None:
    """PSNR of the host against iterations, with the input and the input + 1 dB line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["iter"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for key, label in (("host", "host (mixed GT)"), ("ceiling", "host given the pristine images")):
        ax.errorbar(x, [r[key]["mean"] for r in rows], yerr=[r[key]["sem"] for r in rows], fmt="-o", capsize=2,
                    label=label)
    level = rows[0]["input"]["mean"]
    ax.axhline(level, color="gray", label="input")
    ax.axhline(level + 1, color="gray", ls="--", label="input + 1 dB (the host restores)")
    ax.set_xlabel("training iterations")
    ax.set_ylabel("PSNR vs pristine, development split (dB)")
    ax.set_title(f"{family} host of beyond_gt.py")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(rows: list[dict], meta: dict) -> str:
    table = [[r["iter"], *(f"{r[k]['mean']:.2f} ± {r[k]['sem']:.2f}" for k in ("input", "host", "ceiling")),
              f"{r['host gain over input (dB)']:+.2f}", "yes" if r["restores"] else "no"] for r in rows]
    return "\n".join([
        f"# Host curve: {meta['host']}, {meta['contaminate']:g} contaminated, inputs degraded from the "
        f"{'targets' if meta['lq_from'] == 'target' else 'pristine copies'} "
        f"({meta['device']}, {meta['wall_s'] / 60:.0f} min)", "",
        f"Host trained {meta['trained_to']} of {meta['iters']} iterations on the mixed GT (its learning-rate "
        f"milestones at {meta['iters'] // 2} and {3 * meta['iters'] // 4}), saved every {meta['every']}; PSNR "
        f"against the pristine images of the development split ({meta['n_images']} images; mean ± s.e.). Restores: "
        "host ≥ input + 1 dB (the first half of beyond_gt.py's target 2a; the oracle's gap is checked by "
        "--precondition). Ceiling: the host given the pristine images themselves, the most its bottleneck lets "
        "through.", "",
        markdown_table(["iteration", "input", "host", "ceiling", "host - input", "restores"], table), "",
        f"![curve]({meta['figure']})", "", "Training (s): " + (", ".join(f"{k} {v}" for k, v in meta["steps_s"].items())
                                                             or "none (--saved)") + "."])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder of HQ images (beyond_gt.py --data)")
    p.add_argument("--host", default="restoreformer", choices=beyond_gt.HOSTS)
    p.add_argument("--iters", type=int, default=4000, help="the host's training length")
    p.add_argument("--every", type=int, default=500, help="save and evaluate every this many iterations")
    p.add_argument("--budget", choices=("tiny", "small"), default="small",
                   help="the images of beyond_gt.py's budget: small (800 training, 100 held out), tiny (plumbing)")
    p.add_argument("--contaminate", type=float, default=0.35)
    p.add_argument("--contamination", choices=CONTAMINATION, default="standard")
    p.add_argument("--lq-from", choices=beyond_gt.LQ_FROM, default="target")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--saved", action="store_true", help="evaluate the hosts saved so far; train nothing")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "host_curve"))
    args = p.parse_args(argv)
    if not 0 < args.every <= args.iters:
        raise SystemExit(f"--every must lie in 1..--iters ({args.iters}), got {args.every}")
    if not 0 < args.contaminate < 1:
        raise SystemExit(f"--contaminate must lie strictly between 0 and 1, got {args.contaminate}")
    start = time.perf_counter()
    device = resolve_device(args.device)
    prefix = beyond_gt.HOSTS[args.host]
    out = Path(args.out).resolve()
    work = beyond_gt.work_dir(out, f"curve_{prefix}_{args.budget}", args.lq_from, args.contaminate, args.contamination)
    budget = beyond_gt.BUDGETS[args.budget]
    manifest = beyond_gt_data.prepare(args.data, work, train=budget["train"], heldout=budget["heldout"],
                                      fraction=args.contaminate, size=beyond_gt.SIZE, level=args.contamination)
    beyond_gt_data.development(work, manifest)
    config, opt = curve_job(prefix, args.iters, args.every, args.lq_from)
    seconds = {}
    if not args.saved:
        t = time.perf_counter()
        beyond_gt.train(work, config, device, resume=True, **opt)
        seconds["host"] = round(time.perf_counter() - t, 1)
    points = saved_iterations(work, opt["name"], args.iters, args.every)
    if not points:
        raise SystemExit(f"--saved: no host saved yet in {work}; let the curve train to --every iterations first")
    rows = evaluate(work, prefix, opt["name"], points, args.iters, device)
    meta = {"host": args.host, "iters": args.iters, "every": args.every, "contaminate": args.contaminate,
            "contamination_level": args.contamination, "lq_from": args.lq_from, "device": str(device),
            "split": SPLIT, "n_images": len(beyond_gt_data.list_images(work / "data" / SPLIT)),
            "trained_to": points[-1], "steps_s": seconds, "wall_s": round(time.perf_counter() - start, 1),
            "figure": "host_curve.png", "work": work.name, "data": Path(args.data).name}
    out.mkdir(parents=True, exist_ok=True)
    save_figure(out / meta["figure"], rows, args.host)
    data = {"meta": meta, "rows": rows}
    paths = write_results(out, "host_curve", data, markdown(rows, meta))
    beyond_gt.log(f"wrote {paths[0]}, {paths[1]}, {out / meta['figure']}")
    return data


if __name__ == "__main__":
    main()
