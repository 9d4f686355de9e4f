"""Where the prior wins: ``beyond_gt.py`` over a grid of contaminated fractions and both input sources.

For every contaminated fraction of ``--fractions`` and every ``--lq-from`` (target, pristine), one beyond_gt.py run of
the recipe (``--no-ablations``) in OUT/c<fraction>_<lq-from>/; then one table and one figure of every system against
the fraction: PSNR against the pristine images (± s.e.) beside the sharpness ratio, a panel per input source.

What does not depend on the fraction is made once: the pristine training copies are the same images at every
fraction, so the oracle (trained on them alone, its inputs degraded from them either way) is trained by the first
point and linked into the others' work folders. Every point resumes as beyond_gt.py does, so a stopped map goes on
where it stopped.

    python benchmarks/regime_map.py --data DIR --out OUT                          # 10 points, CPU: hours
    python benchmarks/regime_map.py --data DIR --fractions 0.35,0.75 --lq-from pristine --out OUT
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import beyond_gt  # noqa: E402
from benchmarks.common import markdown_table, write_results  # noqa: E402

FRACTIONS = (0.2, 0.35, 0.5, 0.75, 0.9)
#: the systems drawn and tabled, in order (host + IQP at the target score)
SYSTEMS = ("host", beyond_gt.FURTHER, beyond_gt.HOST_FILTERING, beyond_gt.PLUGIN_FILTERING, beyond_gt.ORACLE,
           f"host + IQP @{beyond_gt.TARGET}")


def point_dir(out: Path, fraction: float, lq_from: str) -> Path:
    return out / f"c{fraction:g}_{lq_from}"


def share_oracle(source: Path, target: Path) -> None:
    """Link the oracle's trainings of work folder ``source`` into ``target`` (same pristine data, same oracle)."""
    for run in (source / "experiments").glob("bgt_*_oracle*"):
        link = target / "experiments" / run.name
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(run.resolve())


def run_point(args: argparse.Namespace, fraction: float, lq_from: str, first_work: Path | None) -> tuple[dict, Path]:
    """beyond_gt.py at one point (reused when its beyond_gt.json exists); returns its JSON and its work folder."""
    out = point_dir(Path(args.out), fraction, lq_from)
    work = beyond_gt.work_dir(out, args.budget, lq_from, fraction)
    if first_work is not None:
        share_oracle(first_work, work)
    result = out / "beyond_gt.json"
    if not result.exists():
        beyond_gt.main(["--data", args.data, "--budget", args.budget, "--recipe", args.recipe, "--hosts", args.hosts,
                        "--contaminate", f"{fraction:g}", "--lq-from", lq_from, "--no-ablations",
                        "--jobs", str(args.jobs), "--device", args.device, "--out", str(out)])
    return json.loads(result.read_text()), work


def rows_of(points: dict) -> list[dict]:
    """One row per (input source, fraction, host family): each system's PSNR and sharpness (mean, s.e.), host + IQP's
    paired PSNR verdicts against the filtering baselines, the setup's validity, and the point's wall time."""
    rows = []
    for (lq_from, fraction), data in sorted(points.items()):
        for family, fam in data["families"].items():
            res, tg = fam["results"], fam["targets"]
            t2, t3 = tg["2 the prior beats more training"], tg["3 it holds up against filtering"]
            rows.append({"lq_from": lq_from, "fraction": fraction, "family": family,
                         "psnr": {s: res[s]["psnr"] for s in SYSTEMS},
                         "sharpness": {s: res[s]["sharpness"] for s in SYSTEMS},
                         "rho": tg["1 the score steers"]["spearman"]["psnr"], "valid": t2["setup valid"],
                         "gap closed": t2["gap closed"],
                         "vs host filtering": tg["paired"][beyond_gt.HOST_FILTERING]["psnr"],
                         "vs plug-in filtering": tg["paired"][beyond_gt.PLUGIN_FILTERING]["psnr"],
                         "verdict vs host filtering": t3["verdict vs host filtering"],
                         "verdict vs plug-in filtering": t3["verdict vs plug-in filtering"],
                         "wall_s": data["meta"]["wall_s"]})
    return rows


def save_figure(path: Path, rows: list[dict]) -> None:
    """PSNR (± s.e.) and sharpness against the contaminated fraction, a line per system, a row of panels per input
    source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = sorted({r["lq_from"] for r in rows})
    fig, axes = plt.subplots(len(sources), 2, figsize=(11, 3.8 * len(sources)), squeeze=False)
    for axes_row, lq_from in zip(axes, sources, strict=False):
        mine = [r for r in rows if r["lq_from"] == lq_from]
        x = [r["fraction"] for r in mine]
        for ax, metric in zip(axes_row, ("psnr", "sharpness"), strict=False):
            for k, system in enumerate(SYSTEMS):
                ax.errorbar(x, [r[metric][system]["mean"] for r in mine], yerr=[r[metric][system]["sem"] for r in mine],
                            fmt="-o" if system.startswith("host + IQP") else "--.", color=f"C{k}", label=system,
                            capsize=2)
            ax.set_xlabel("contaminated fraction of the training GT")
            ax.set_ylabel({"psnr": "PSNR vs pristine (dB)", "sharpness": "sharpness ratio (1 = pristine)"}[metric])
            ax.set_title(f"inputs degraded from the {'targets' if lq_from == 'target' else 'pristine copies'}")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(rows: list[dict], meta: dict) -> str:
    header = ["inputs from", "fraction", *SYSTEMS, "IQP - host filtering", "IQP - plug-in filtering", "ρ", "valid",
              "point (min)"]
    table = [[r["lq_from"], f"{r['fraction']:g}",
              *(f"{r['psnr'][s]['mean']:.2f} ± {r['psnr'][s]['sem']:.2f}" for s in SYSTEMS),
              f"{r['vs host filtering']['mean']:+.3f} ± {r['vs host filtering']['sem']:.3f} "
              f"({r['verdict vs host filtering']})",
              f"{r['vs plug-in filtering']['mean']:+.3f} ± {r['vs plug-in filtering']['sem']:.3f} "
              f"({r['verdict vs plug-in filtering']})", f"{r['rho']:+.2f}", "yes" if r["valid"] else "no",
              f"{r['wall_s'] / 60:.0f}"] for r in rows]
    return "\n".join([f"# Regime map: recipe `{meta['recipe']}`, budget {meta['budget']} "
                      f"({meta['wall_s'] / 60:.0f} min)", "",
                      "PSNR against the pristine held-out images (mean ± s.e.); host + IQP at the target score; paired "
                      "differences of host + IQP with their verdicts (better / worse beyond 2 s.e.). Valid: host ≥ "
                      "input + 1 dB and oracle ≥ host + 0.5 dB.", "", markdown_table(header, table), "",
                      f"![map]({meta['figure']})"])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder of HQ images (beyond_gt.py --data)")
    p.add_argument("--fractions", default=",".join(f"{f:g}" for f in FRACTIONS), help="contaminated fractions")
    p.add_argument("--lq-from", default="target,pristine", help="input sources, comma-separated")
    p.add_argument("--recipe", default="pixel", choices=beyond_gt.RECIPES)
    p.add_argument("--hosts", default="swinir")
    p.add_argument("--budget", default="small", choices=beyond_gt.BUDGETS)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "regime_map"))
    args = p.parse_args(argv)
    try:
        fractions = [float(f) for f in args.fractions.split(",")]
    except ValueError:
        raise SystemExit(f"--fractions must be comma-separated numbers, got {args.fractions!r}") from None
    sources = [s.strip() for s in args.lq_from.split(",")]
    bad = [f for f in fractions if not 0 < f < 1] + [s for s in sources if s not in beyond_gt.LQ_FROM]
    if bad:
        raise SystemExit(f"--fractions must lie in (0, 1) and --lq-from be target or pristine; got {bad}")
    start = time.perf_counter()
    points, first_work = {}, None
    for lq_from in sources:
        for fraction in fractions:
            points[lq_from, fraction], work = run_point(args, fraction, lq_from, first_work)
            first_work = first_work or work
    out = Path(args.out)
    rows = rows_of(points)
    save_figure(out / "regime_map.png", rows)
    meta = {"recipe": args.recipe, "budget": args.budget, "fractions": fractions, "lq_from": sources,
            "wall_s": round(time.perf_counter() - start, 1), "figure": "regime_map.png", "cpus": os.cpu_count()}
    data = {"meta": meta, "rows": rows}
    write_results(out, "regime_map", data, markdown(rows, meta))
    return data


if __name__ == "__main__":
    main()
