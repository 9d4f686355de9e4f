"""``iqp compare``: host alone vs host + IQP plug-in on the same inputs, as a report folder.

    iqp compare -i IN -o REPORT_DIR (--config wrapper.yml | --host ... --plugin F) [--allow-host-mismatch]
                [--gt GT_DIR]
                [--metrics niqe,...] [--heldout piqe,...] [--score S] [--scores 0.5,0.7,0.9] [--device]
                [--tile T] [--tile-overlap O] [--tile-above PIXELS]   (as in ``iqp restore``)

REPORT_DIR gets ``images/{input,host,iqp,score_<s>}/`` (8-bit PNGs), ``grids/`` (input | host | host+IQP
[| GT] per image, labelled), ``metrics.csv`` and ``metrics.md`` (per image and mean: every NR metric of
the prior and the held-out ones; PSNR, SSIM and the sharpness ratio against GT), ``sweep.csv`` and
``sweep.png`` (mean metrics vs the conditioning score) and ``index.html`` showing it all (relative links).
Every number is computed on the saved files, reloaded, so it matches what a viewer sees. One verdict line per metric is printed:
'better' / 'worse' when the mean paired per-image difference (host+IQP minus host) is at least two
standard errors from zero, else 'same' (within noise), with the difference and its standard error.

GT files are matched by relative path, else by name with LR/HR/LQ/GT/x<scale> tokens removed
(``img_001_SRF_4_LR.png`` <-> ``img_001_SRF_4_HR.png``). Every GT's size is checked against its output's
(input size times the model's scale, measured on the first image) before anything is written; REPORT_DIR
is checked before the model loads.
"""
from __future__ import annotations

import argparse
import csv
import html
import io
import re
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from basicsr.metrics import calculate_psnr, calculate_ssim
from tqdm import tqdm

from iqp_plugin.inference import (
    add_model_args,
    add_tile_args,
    check_tile_args,
    find_images,
    load_from_args,
    read_picture,
    run_batch,
)
from iqp_plugin.cli import writing
from iqp_plugin.files import check_writable, write_atomic
from iqp_plugin.quality import create_prior

#: A verdict is 'same' when the mean paired difference is under this many standard errors (or under
#: SAME_RTOL of the host's mean, for differences a single image cannot resolve).
NOISE_SE = 2.0
SAME_RTOL = 1e-4
FULL_REF = {"psnr": False, "ssim": False, "sharpness": False}  # metric -> lower_better (against the GT)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="iqp compare", description=__doc__.split("\n")[0])
    p.add_argument("-i", "--input", required=True, help="image file or folder (searched recursively)")
    p.add_argument("-o", "--output", required=True, help="report folder")
    add_model_args(p)
    p.add_argument("--gt", help="folder of ground-truth images (adds PSNR/SSIM and a GT column)")
    p.add_argument("--metrics", default="offline", help="the prior's NR metrics: a prior name or 'niqe,piqe'")
    p.add_argument("--heldout", default="piqe", help="NR metrics not in the prior, comma-separated ('' for none)")
    p.add_argument("--score", type=float, help="score asked of the plug-in in the table (default: its target)")
    p.add_argument("--scores", default="0.5,0.7,0.9", help="conditioning scores of the sweep plot")
    add_tile_args(p)
    return p.parse_args(argv)


def parse_scores(text: str) -> list[float]:
    """'0.5,0.9' -> [0.5, 0.9]; every score must lie in [0, 1]."""
    try:
        scores = [float(s) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise ValueError(f"--scores must be comma-separated numbers, got {text!r}") from err
    if not scores or not all(0.0 <= s <= 1.0 for s in scores):
        raise ValueError(f"scores must lie in [0, 1] (normalised quality scores), got {text!r}")
    return scores


def _key(name: str) -> str:
    tokens = re.split(r"[_\-.]", Path(name).with_suffix("").as_posix().lower())
    return "_".join(t for t in tokens if t not in ("lr", "hr", "lq", "gt") and not re.fullmatch(r"x\d+", t))


def match_gt(names: list[str], gt_dir: str) -> dict[str, Path]:
    """GT file of every input name (same relative path, else same name without LR/HR tokens)."""
    gts = dict(find_images(gt_dir))
    by_key = {_key(n): p for n, p in gts.items()}
    found = {n: gts.get(n) or by_key.get(_key(n)) for n in names}
    missing = [n for n, p in found.items() if p is None]
    if missing:
        raise ValueError(f"no GT in {gt_dir} for {len(missing)} input(s), e.g. {', '.join(missing[:3])}")
    return found


def check_gt_sizes(items: list[tuple[str, Path]], gts: dict[str, Path], scale: tuple[float, float]) -> None:
    """ValueError naming the first GT whose size is not its input's times ``scale`` (output / input size per side,
    measured on one image), so that a wrong GT stops the run before anything is written."""
    for name, path in items:
        h, w = read_picture(path).rgb.shape[:2]
        out_h, out_w = round(h * scale[0]), round(w * scale[1])
        gt_h, gt_w = read_picture(gts[name]).rgb.shape[:2]
        if (gt_h, gt_w) != (out_h, out_w):
            factor = f"{scale[1]:g}x" if scale[0] == scale[1] else f"{scale[1]:g}x{scale[0]:g} times"
            raise ValueError(f"GT {gts[name]} is {gt_w}x{gt_h}, but the output of {name} will be {out_w}x{out_h} "
                             f"({factor} its {w}x{h} input): give GT images of the output's size")


def to_u8(rgb: np.ndarray) -> np.ndarray:
    """RGB [0, 1] float -> uint8."""
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def save_png(path: Path, rgb: np.ndarray) -> None:
    """8-bit RGB PNG, written atomically."""
    write_atomic(path, cv2.imencode(".png", cv2.cvtColor(to_u8(rgb), cv2.COLOR_RGB2BGR))[1].tobytes())


def load_u8(path: Path) -> np.ndarray:
    """A saved image back as uint8 RGB."""
    return to_u8(read_picture(path).rgb)


def high_frequency_energy(rgb: np.ndarray) -> float:
    """Mean squared Laplacian of the luma of an HWC RGB image (uint8 or [0, 1] float), on the [0, 1] scale."""
    img = rgb.astype(np.float32) / (255.0 if rgb.dtype == np.uint8 else 1.0)
    luma = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return float(np.mean(cv2.Laplacian(luma, cv2.CV_32F, borderType=cv2.BORDER_REFLECT) ** 2))


def sharpness_ratio(img: np.ndarray, gt: np.ndarray) -> float:
    """High-frequency energy of ``img`` over that of ``gt``: 1 is as sharp as the GT, under 1 softer."""
    return high_frequency_energy(img) / max(high_frequency_energy(gt), 1e-12)


def make_grid(panels: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Panels (uint8 RGB, same size) side by side under a label bar."""
    h, w = panels[0][1].shape[:2]
    scale = max(0.4, min(1.0, w / 300))
    bar = int(28 * scale) + 6
    tiles = []
    for label, img in panels:
        head = np.full((bar, w, 3), 255, np.uint8)
        cv2.putText(head, label, (4, bar - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(np.vstack([head, img]))
        tiles.append(np.full((h + bar, 4, 3), 255, np.uint8))
    return np.hstack(tiles[:-1])


def full_reference(img: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """PSNR, SSIM and sharpness ratio of a uint8 RGB image against its GT."""
    return {"psnr": float(calculate_psnr(img, gt, crop_border=0)), "ssim": float(calculate_ssim(img, gt, crop_border=0)),
            "sharpness": sharpness_ratio(img, gt)}


def verdict(metric: str, host: list[float], iqp: list[float], lower_better: bool) -> str:
    """'better' / 'worse' / 'same' (within noise) for host+IQP against the host, from per-image values:
    the mean paired difference and its standard error (images the metric could not score left out)."""
    host, iqp = np.asarray(host, dtype=np.float64), np.asarray(iqp, dtype=np.float64)
    scored = np.isfinite(host) & np.isfinite(iqp)
    if not scored.any():
        return f"{metric}: not scored (the metric failed on every image)"
    host, iqp = host[scored], iqp[scored]
    diffs = iqp - host
    diff, host_mean = float(diffs.mean()), float(np.mean(host))
    sem = float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else 0.0
    if abs(diff) <= max(NOISE_SE * sem, SAME_RTOL * max(abs(host_mean), 1e-8)):
        word = "same (within noise)"
    else:
        word = "better" if (diff < 0) == lower_better else "worse"
    direction = "lower" if lower_better else "higher"
    return (f"{metric} ({direction} is better): {word}, mean {host_mean:.4f} -> {float(np.mean(iqp)):.4f} "
            f"({diff:+.4f} ± {sem:.4f} s.e., {len(diffs)} images)")


def write_table(out: Path, rows: list[dict], metrics: list[str]) -> None:
    """metrics.csv (full precision) and metrics.md (4 decimals); the first row is the mean."""
    cols = ["image"] + [f"{m}_{k}" for m in metrics for k in ("host", "iqp", "diff")]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, cols, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(out / "metrics.csv", buf.getvalue().encode())
    head = ["image"] + [f"{m} {k}" for m in metrics for k in ("host", "host+IQP", "diff")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([r["image"]] + [f"{r[c]:.4f}" for c in cols[1:]]) + " |")
    write_atomic(out / "metrics.md", ("\n".join(lines) + "\n").encode())


def plot_sweep(path: Path, scores: list[float], sweep: dict[str, list[float]], host: dict[str, float],
               lower: dict[str, bool]) -> None:
    """Mean NR metric vs conditioning score, the host alone as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sweep), figsize=(4 * len(sweep), 3.2), squeeze=False)
    for ax, (m, ys) in zip(axes[0], sweep.items()):
        ax.plot(scores, ys, "o-", label="host + IQP")
        ax.axhline(host[m], color="gray", ls="--", label="host alone")
        ax.set(xlabel="conditioning score", ylabel=m, title=f"{m} ({'lower' if lower[m] else 'higher'} is better)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def write_html(out: Path, verdicts: list[str], rows: list[dict], metrics: list[str], grids: list[tuple[str, str]],
               seconds: float) -> None:
    """index.html: verdicts, the table, the sweep plot and every grid (relative links)."""
    esc = html.escape
    cols = [f"{m}_{k}" for m in metrics for k in ("host", "iqp", "diff")]
    head = "".join(f"<th>{esc(c)}</th>" for c in ["image"] + cols)
    body = "".join("<tr><td>" + esc(r["image"]) + "</td>" + "".join(f"<td>{r[c]:.4f}</td>" for c in cols) + "</tr>"
                   for r in rows)
    figures = "".join(f"<h3>{esc(n)}</h3><img src='{esc(src)}' alt='{esc(n)}'>" for n, src in grids)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>IQP compare</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>Host alone vs host + IQP</h1><p>{len(grids)} images, {seconds:.1f} s.
Tables: <a href="metrics.csv">metrics.csv</a>, <a href="metrics.md">metrics.md</a>.</p>
<ul>{''.join(f'<li>{esc(v)}</li>' for v in verdicts)}</ul>
<table><tr>{head}</tr>{body}</table>
<h2>Metrics vs conditioning score</h2><img src="sweep.png" alt="sweep">
<h2>Images (input | host | host + IQP [| GT])</h2>{figures}</body></html>
"""
    write_atomic(out / "index.html", page.encode())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    sweep_scores = parse_scores(args.scores)
    if args.score is not None and not 0.0 <= args.score <= 1.0:
        raise ValueError(f"--score must lie in [0, 1] (a normalised quality score), got {args.score}")
    check_tile_args(args)
    items = find_images(args.input)
    check_writable(args.output, folder=True)
    gts = match_gt([n for n, _ in items], args.gt) if args.gt else {}
    heldout = [m.strip() for m in args.heldout.split(",") if m.strip()]
    prior = create_prior(args.metrics)
    nr = create_prior(list(dict.fromkeys([*prior.metrics, *heldout])))
    wrapper = load_from_args(args)
    if wrapper.plugin is None:
        raise ValueError("compare needs a plug-in: --plugin F, or a plugin block plus plugin_checkpoint in the config")
    device = next(wrapper.parameters()).device
    modules = nr.create_metrics(device)
    lower = {**dict(zip(nr.metrics, nr.lower_better)), **FULL_REF}
    out = Path(args.output)
    stems = [Path(n).with_suffix(".png").as_posix() for n, _ in items]
    if len(set(stems)) != len(stems):
        raise ValueError("two inputs differ only in their extension; compare them in separate runs")

    def nr_scores(path: Path) -> dict[str, float]:
        """NR scores of a saved image; NaN (with a warning) where a metric cannot score it (e.g. NIQE on
        images under 96 px or flat ones)."""
        x = torch.from_numpy(load_u8(path)).permute(2, 0, 1)[None].float().div(255).to(device)
        values = {}
        for m, module in modules.items():
            try:
                with torch.no_grad():
                    values[m] = float(module(x))
            except (RuntimeError, ValueError, np.linalg.LinAlgError) as err:
                warnings.warn(f"{m} cannot score {path}: {err}; left out of its means")
                values[m] = float("nan")
        return values

    writing(out)
    rows, grids = [], []
    sweep = {m: [[] for _ in sweep_scores] for m in nr.metrics}
    for (name, path), stem in zip(tqdm(items, desc="compare", unit="img"), stems):
        rgb = read_picture(path).rgb[None]
        tiling = {"tile": args.tile, "overlap": args.tile_overlap, "tile_above": args.tile_above}
        outputs = {"host": run_batch(wrapper, rgb, plugin=False, **tiling),
                   "iqp": run_batch(wrapper, rgb, args.score, **tiling)}
        outputs.update({f"score_{s:.2f}": run_batch(wrapper, rgb, s, **tiling) for s in sweep_scores})
        if gts and not rows:  # the first image gives the model's scale
            size = outputs["host"].shape[1:3]
            check_gt_sizes(items, gts, (size[0] / rgb.shape[1], size[1] / rgb.shape[2]))
        save_png(out / "images" / "input" / stem, rgb[0])
        for kind, img in outputs.items():
            save_png(out / "images" / kind / stem, img[0])
        values = {kind: nr_scores(out / "images" / kind / stem) for kind in ("host", "iqp")}
        for i, s in enumerate(sweep_scores):
            for m, v in nr_scores(out / "images" / f"score_{s:.2f}" / stem).items():
                sweep[m][i].append(v)
        saved = {kind: load_u8(out / "images" / kind / stem) for kind in ("input", "host", "iqp")}
        h, w = saved["host"].shape[:2]
        panels = [(f"input ({saved['input'].shape[1]}x{saved['input'].shape[0]})",
                   cv2.resize(saved["input"], (w, h), interpolation=cv2.INTER_NEAREST)),
                  ("host", saved["host"]), ("host + IQP", saved["iqp"])]
        if gts:
            gt = load_u8(gts[name])
            for kind in ("host", "iqp"):
                values[kind].update(full_reference(saved[kind], gt))
            for i, s in enumerate(sweep_scores):
                for m, v in full_reference(load_u8(out / "images" / f"score_{s:.2f}" / stem), gt).items():
                    sweep.setdefault(m, [[] for _ in sweep_scores])[i].append(v)
            panels.append(("GT", gt))
        write_atomic(out / "grids" / stem, cv2.imencode(".png", cv2.cvtColor(make_grid(panels), cv2.COLOR_RGB2BGR))[1]
                     .tobytes())
        grids.append((name, f"grids/{stem}"))
        row = {"image": name}
        for m in values["host"]:
            row.update({f"{m}_host": values["host"][m], f"{m}_iqp": values["iqp"][m],
                        f"{m}_diff": values["iqp"][m] - values["host"][m]})
        rows.append(row)

    metrics = [k[:-5] for k in rows[0] if k.endswith("_host")]
    with warnings.catch_warnings():  # a metric that scored no image: its mean is NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = {"image": "mean", **{k: float(np.nanmean([r[k] for r in rows])) for k in rows[0] if k != "image"}}
        curves = {m: [float(np.nanmean(v)) for v in values] for m, values in sweep.items()}
    rows.insert(0, mean)
    write_table(out, rows, metrics)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(
        [["score", *curves], *[[s, *(curve[i] for curve in curves.values())] for i, s in enumerate(sweep_scores)],
         ["host", *(mean[f"{m}_host"] for m in curves)]])
    write_atomic(out / "sweep.csv", buf.getvalue().encode())
    plot_sweep(out / "sweep.png", sweep_scores, curves, {m: mean[f"{m}_host"] for m in curves}, lower)
    verdicts = [verdict(m, [r[f"{m}_host"] for r in rows[1:]], [r[f"{m}_iqp"] for r in rows[1:]], lower[m])
                for m in metrics]
    seconds = time.perf_counter() - start
    write_html(out, verdicts, rows, metrics, grids, seconds)
    for line in verdicts:
        print(line)
    print(f"iqp compare: {len(items)} images in {seconds:.1f} s -> {out / 'index.html'}")


if __name__ == "__main__":
    from iqp_plugin.cli import run

    run(main)
