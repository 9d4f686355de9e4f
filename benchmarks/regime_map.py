"""Where the prior wins: ``beyond_gt.py`` over a grid of contaminated fractions and both input sources.

For every contaminated fraction of ``--fractions`` and every ``--lq-from`` (target, pristine), in
OUT/c<fraction>_<lq-from>/: first ``beyond_gt.py --precondition`` (the host and the oracle only); where the setup
is valid for no host family (the host less than 1 dB above its input, or the oracle less than 0.5 dB above the
host) the point stops there, since no system can be ranked on it; otherwise the whole beyond_gt.py run of the
recipe (``--no-ablations``). Then one table and one figure of every point in OUT (this grid's and earlier ones' of
the same recipe and budget): PSNR against the pristine images (± s.e.) beside the sharpness ratio, a panel per
input source, invalid points shaded.

What does not depend on the fraction is made once: the pristine training copies are the same images at every
fraction, so the oracle (trained on them alone, its inputs degraded from them either way) is trained once, by an
earlier point in OUT or by this grid's first, and linked into the other work folders. Every point resumes as
beyond_gt.py does, so a stopped map goes on where it stopped.

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


def finished_oracles(work: Path) -> list[Path]:
    """The oracle's trainings of a work folder that have finished (their net_g_latest.pth exists)."""
    return [run for run in sorted((work / "experiments").glob("bgt_*_oracle*"))
            if (run / "models" / "net_g_latest.pth").exists()]


def oracle_source(out: Path, budget: str) -> Path | None:
    """A work folder of an earlier point in OUT whose oracle has finished, or None."""
    works = sorted(out.glob(f"c*_*/work_{budget}*"))
    return next((work for work in works if finished_oracles(work)), None)


def share_oracle(source: Path, target: Path) -> None:
    """Link the finished oracle trainings of work folder ``source`` into ``target`` (same pristine data, same
    oracle)."""
    for run in finished_oracles(source):
        link = target / "experiments" / run.name
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(run.resolve())


def setup_valid(precondition: dict) -> bool:
    """Whether ``beyond_gt.py --precondition``'s JSON finds the setup valid for at least one host family."""
    return any(family["setup valid"] for family in precondition["families"].values())


def run_point(args: argparse.Namespace, fraction: float, lq_from: str, source: Path | None) -> Path:
    """One point: its precondition, then (valid setups only) the whole beyond_gt.py run, each reused when its JSON
    exists. Returns the point's work folder."""
    out = point_dir(Path(args.out), fraction, lq_from)
    work = beyond_gt.work_dir(out, args.budget, lq_from, fraction)
    if source is not None and source != work:
        share_oracle(source, work)
    argv = ["--data", args.data, "--budget", args.budget, "--recipe", args.recipe, "--hosts", args.hosts,
            "--contaminate", f"{fraction:g}", "--lq-from", lq_from, "--no-ablations", "--jobs", str(args.jobs),
            "--device", args.device, "--out", str(out)]
    if (out / "beyond_gt.json").exists():
        return work
    if not (out / "precondition.json").exists():
        beyond_gt.main([*argv, "--precondition"])
    if setup_valid(json.loads((out / "precondition.json").read_text())):
        beyond_gt.main(argv)
    else:
        beyond_gt.log(f"== c{fraction:g} {lq_from}: the setup is not valid (precondition.md); no plug-in trained")
    return work


def collect(out: Path, recipe: str, budget: str) -> dict[tuple[str, float], dict]:
    """Every point in OUT of this recipe and budget: (lq_from, fraction) -> its beyond_gt.py JSON, or its
    precondition JSON (marked ``"precondition only"``) where the point stopped there (not valid, or stopped before
    its plug-in's trainings)."""
    points = {}
    for folder in sorted(out.glob("c*_*")):
        fraction, _, lq_from = folder.name[1:].partition("_")
        if lq_from not in beyond_gt.LQ_FROM:
            continue
        full, pre = folder / "beyond_gt.json", folder / "precondition.json"
        if full.exists():
            data = json.loads(full.read_text())
            if data["meta"]["recipe"] == recipe and data["meta"]["budget"] == budget:
                points[lq_from, float(fraction)] = data
        elif pre.exists():
            data = json.loads(pre.read_text())
            if data["work"].startswith(f"work_{budget}"):
                points[lq_from, float(fraction)] = {**data, "precondition only": True}
    return points


def precondition_row(lq_from: str, fraction: float, family: str, fam: dict, top_contaminated: float) -> dict:
    """The row of a point that stopped at its precondition (not valid, or its plug-in not trained yet): the input's,
    the host's and the oracle's PSNR only."""
    psnr = {"input (LQ)": fam["psnr"]["input (LQ)"], "host": fam["psnr"]["host"],
            beyond_gt.ORACLE: fam["psnr"]["oracle"]}
    return {"lq_from": lq_from, "fraction": fraction, "family": family,
            "psnr": {s: {"mean": v, "sem": None} for s, v in psnr.items()}, "sharpness": {},
            "valid": fam["setup valid"], "top contaminated": top_contaminated, "precondition only": True}


def rows_of(points: dict) -> list[dict]:
    """One row per (input source, fraction, host family): each system's PSNR and sharpness (mean, s.e.), host + IQP's
    paired PSNR verdicts against the filtering baselines, the setup's validity, the top-scored set's contaminated
    share and the point's wall time; a point that stopped at its precondition has the input, host and oracle only."""
    rows = []
    for (lq_from, fraction), data in sorted(points.items()):
        if data.get("precondition only"):
            rows += [precondition_row(lq_from, fraction, family, fam, data["top_contaminated_fraction"])
                     for family, fam in data["families"].items()]
            continue
        for family, fam in data["families"].items():
            res, tg = fam["results"], fam["targets"]
            t2, t3 = tg["2 the prior beats more training"], tg["3 it holds up against filtering"]
            rows.append({"lq_from": lq_from, "fraction": fraction, "family": family,
                         "psnr": {s: res[s]["psnr"] for s in ("input (LQ)", *SYSTEMS)},
                         "sharpness": {s: res[s]["sharpness"] for s in SYSTEMS},
                         "rho": tg["1 the score steers"]["spearman"]["psnr"], "valid": t2["setup valid"],
                         "gap closed": t2["gap closed"],
                         "vs host filtering": tg["paired"][beyond_gt.HOST_FILTERING]["psnr"],
                         "vs plug-in filtering": tg["paired"][beyond_gt.PLUGIN_FILTERING]["psnr"],
                         "verdict vs host filtering": t3["verdict vs host filtering"],
                         "verdict vs plug-in filtering": t3["verdict vs plug-in filtering"],
                         "top contaminated": data["meta"]["top_contaminated_fraction"],
                         "wall_s": data["meta"]["wall_s"]})
    return rows


def save_figure(path: Path, rows: list[dict]) -> None:
    """PSNR (± s.e.) and sharpness against the contaminated fraction, a line per system (at the points that have
    it), a row of panels per input source; points whose setup is not valid are shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = sorted({r["lq_from"] for r in rows})
    fig, axes = plt.subplots(len(sources), 2, figsize=(11, 3.8 * len(sources)), squeeze=False)
    for axes_row, lq_from in zip(axes, sources, strict=False):
        mine = [r for r in rows if r["lq_from"] == lq_from]
        for ax, metric in zip(axes_row, ("psnr", "sharpness"), strict=False):
            for r in mine:
                if not r["valid"]:
                    ax.axvspan(r["fraction"] - 0.02, r["fraction"] + 0.02, color="0.9", zorder=0)
            # the input's sharpness (noise, JPEG edges) would squash the outputs' scale: its PSNR only
            drawn = {**({"input (LQ)": "0.5"} if metric == "psnr" else {}),
                     **{system: f"C{k}" for k, system in enumerate(SYSTEMS)}}
            for system, color in drawn.items():
                have = [r for r in mine if system in r[metric]]
                ax.errorbar([r["fraction"] for r in have], [r[metric][system]["mean"] for r in have],
                            yerr=[r[metric][system]["sem"] or 0 for r in have], color=color, label=system,
                            fmt="-o" if system.startswith("host + IQP") else "--.", capsize=2)
            ax.set_xlim(0, 1)  # the same axis in every panel, however few points a source has
            ax.set_xlabel("contaminated fraction of the training GT (shaded: setup not valid)")
            ax.set_ylabel({"psnr": "PSNR vs pristine (dB)", "sharpness": "sharpness ratio (1 = pristine)"}[metric])
            ax.set_title(f"inputs degraded from the {'targets' if lq_from == 'target' else 'pristine copies'}")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _stat(stat: dict | None, digits: int, sign: str = "") -> str:
    if stat is None:
        return "-"
    mean = f"{stat['mean']:{sign}.{digits}f}"
    return mean if stat["sem"] is None else f"{mean} ± {stat['sem']:.{digits}f}"


def markdown(rows: list[dict], meta: dict) -> str:
    header = ["inputs from", "fraction", "input (LQ)", *SYSTEMS, "top set contaminated", "IQP - host filtering",
              "IQP - plug-in filtering", "ρ", "valid", "point (min)"]
    table = []
    for r in rows:
        full = not r.get("precondition only")
        verdicts = [f"{_stat(r[f'vs {b}'], 3, '+')} ({r[f'verdict vs {b}']})" if full else "-"
                    for b in ("host filtering", "plug-in filtering")]
        psnr = (_stat(r["psnr"].get(s), 2) for s in ("input (LQ)", *SYSTEMS))
        table.append([r["lq_from"], f"{r['fraction']:g}", *psnr,
                      f"{100 * r['top contaminated']:.1f}%", *verdicts, f"{r['rho']:+.2f}" if full else "-",
                      "yes" if r["valid"] else "no", f"{r['wall_s'] / 60:.0f}" if full else "precondition only"])
    return "\n".join([f"# Regime map: recipe `{meta['recipe']}`, budget {meta['budget']}", "",
                      "PSNR against the pristine held-out images (mean ± s.e.); host + IQP at the target score; paired "
                      "differences of host + IQP with their verdicts (better / worse beyond 2 s.e.). Valid: host ≥ "
                      "input + 1 dB and oracle ≥ host + 0.5 dB; a point that is not valid stops after its host and "
                      "oracle. Top set contaminated: the share of contaminated targets among the top-scored ones "
                      "that filtering trains on. Point: the wall time of its beyond_gt.py run (what a rerun reused "
                      f"is not counted). This grid took {meta['wall_s'] / 60:.0f} min.", "",
                      markdown_table(header, table), "", f"![map]({meta['figure']})"])


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
    out = Path(args.out)
    source = oracle_source(out, args.budget)
    for lq_from in sources:
        for fraction in fractions:
            work = run_point(args, fraction, lq_from, source)
            source = source or (work if finished_oracles(work) else None)
    rows = rows_of(collect(out, args.recipe, args.budget))
    save_figure(out / "regime_map.png", rows)
    meta = {"recipe": args.recipe, "budget": args.budget, "fractions": fractions, "lq_from": sources,
            "wall_s": round(time.perf_counter() - start, 1), "figure": "regime_map.png", "cpus": os.cpu_count()}
    data = {"meta": meta, "rows": rows}
    write_results(out, "regime_map", data, markdown(rows, meta))
    return data


if __name__ == "__main__":
    main()
