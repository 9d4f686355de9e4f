"""``iqp compare``: host alone vs host + IQP plug-in on the same inputs, as a report folder.

    iqp compare -i IN -o REPORT_DIR (--config wrapper.yml | --host ... --plugin F) [--allow-host-mismatch]
                [--gt GT_DIR]
                [--metrics niqe,...] [--heldout piqe,...] [--score S] [--scores 0.5,0.7,0.9] [--device]
                [--tile T] [--tile-overlap O] [--tile-above PIXELS]   (as in ``iqp restore``)
                [--faces [--upscale N] [--only-center-face] [--bg-host CONFIG] [--detector-weights PATH]]

REPORT_DIR gets ``images/{input,host,iqp,score_<s>}/`` (8-bit PNGs), ``grids/`` (input | host | host+IQP
[| GT] per image, labelled), ``metrics.csv`` and ``metrics.md`` (per image and mean: every NR metric of
the prior and the held-out ones; PSNR, SSIM and the sharpness ratio against GT), ``sweep.csv`` and
``sweep.png`` (mean metrics vs the conditioning score), ``crops/<image>/`` (the detail crop of every output) and
``index.html`` showing it all (:mod:`iqp_plugin.report.html`). The page opens with one verdict card per metric;
then, per image, a before/after slider (host | host + IQP), the zoomed detail crop where the two outputs differ
most (input, host, host + IQP [, GT]) and the same crop at every score of the sweep; the full tables come last.
It is self-contained, so a copied folder opens anywhere.
With ``--faces`` (face hosts, whole photos; see :mod:`iqp_plugin.inference.faces`) every output is made by the same
face detection and paste-back, and each image's note says what was found.
Every number is computed on the saved files, reloaded, so it matches what a viewer sees. One verdict line per
metric is printed: 'better' / 'worse' when the mean paired per-image difference (host+IQP minus host) is at least
two standard errors from zero, else 'same' (within noise), with the difference and its standard error.

GT files are matched by relative path, else by name with LR/HR/LQ/GT/x<scale> tokens removed
(``img_001_SRF_4_LR.png`` <-> ``img_001_SRF_4_HR.png``). Every GT's size is checked against its output's
(input size times the model's scale, measured on the first image) before anything is written; REPORT_DIR
is checked before the model loads: it may be neither an input or GT folder, nor lie inside one, nor hold one.
Every input (and its GT) is decoded before the model loads; as in ``iqp restore``, the unreadable ones are
named, left out and named again in the summary and on the page, and the exit code is 1.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from iqp_plugin.cli import parsers, writing
from iqp_plugin.cli.restore import unreadable
from iqp_plugin.errors import InvalidInputError
from iqp_plugin.inference.faces import check_face_args, photo_restorer_from_args
from iqp_plugin.inference.loading import load_from_args
from iqp_plugin.inference.tiling import check_tile_args, run_batch
from iqp_plugin.io.files import check_outputs_apart, check_writable
from iqp_plugin.io.images import find_images, read_picture
from iqp_plugin.prior.metrics import create_prior
from iqp_plugin.prior.score_files import check_scores
from iqp_plugin.report.html import write_html
from iqp_plugin.report.matching import check_gt_sizes, match_gt
from iqp_plugin.report.measures import measure
from iqp_plugin.report.metrics import FULL_REF, paired
from iqp_plugin.report.pictures import detail_crops, load_u8, save_grid, save_png
from iqp_plugin.report.plots import plot_sweep
from iqp_plugin.report.tables import image_row, mean_row, sweep_table, verdict, write_sweep_csv, write_table


def parse_scores(text: str) -> list[float]:
    """'0.5,0.9' -> [0.5, 0.9]; at least one score, every score in [0, 1]."""
    try:
        scores = [float(s) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise InvalidInputError(f"--scores must be comma-separated numbers, got {text!r}") from err
    if not scores:
        raise InvalidInputError(f"--scores must name at least one score in [0, 1], got {text!r}")
    check_scores(scores, "--scores")
    return scores


@dataclass
class Report:
    """What every image of one run shares: the report folder, the sweep scores, the GT files, the NR metrics
    (``first`` is shown under the sweep crops), the per-image values at each score (``sweep[metric][i]``) and
    what the page shows of each image."""

    out: Path
    scores: list[float]
    gts: dict[str, Path]
    metrics: dict[str, torch.nn.Module]
    device: torch.device
    first: str | None
    sweep: dict[str, list[list[float]]]
    images: list[dict]
    skipped: list[Path]


def restorer(args, wrapper, photos, scores: list[float]) -> Callable[[np.ndarray], tuple[dict, str | None]]:
    """rgb -> ({kind: output}, note): the host alone, host + IQP at ``--score`` and at every sweep score; through
    the face detection and paste-back with ``--faces`` (the note says what was found)."""
    runs = {"host": {"plugin": False}, "iqp": {"score": args.score},
            **{f"score_{s:.2f}": {"score": s} for s in scores}}
    tiling = {"tile": args.tile, "overlap": args.tile_overlap, "tile_above": args.tile_above}

    def restore(rgb: np.ndarray) -> tuple[dict, str | None]:
        if photos is not None:
            photo = photos(rgb, runs)
            return photo.images, photo.note
        return {kind: run_batch(wrapper, rgb[None], **opts, **tiling)[0] for kind, opts in runs.items()}, None

    return restore


def add_image(report: Report, name: str, stem: str, rgb: np.ndarray, outputs: dict[str, np.ndarray],
              note: str | None) -> None:
    """Save one image's input and outputs, measure them, write its grid and detail crops."""
    images = report.out / "images"
    save_png(images / "input" / stem, rgb)
    for kind, img in outputs.items():
        save_png(images / kind / stem, img)
    gt = load_u8(report.gts[name]) if report.gts else None
    values = {kind: measure(images / kind / stem, report.metrics, report.device, gt) for kind in ("host", "iqp")}
    for i, s in enumerate(report.scores):
        for m, v in measure(images / f"score_{s:.2f}" / stem, report.metrics, report.device, gt).items():
            report.sweep.setdefault(m, [[] for _ in report.scores])[i].append(v)
    saved = {kind: load_u8(images / kind / stem) for kind in ("input", "host", "iqp")}
    save_grid(report.out / "grids" / stem, saved, gt)
    first = report.first
    at_scores = {s: report.sweep[first][i][-1] for i, s in enumerate(report.scores)} if first else {}
    shown = detail_crops(report.out, name, stem, saved, gt, report.scores, at_scores,
                         values["host"].get(first) if first else None, first)
    shown.update(row=image_row(name, values["host"], values["iqp"]), note=note, grid=f"grids/{stem}",
                 anchor=f"image-{len(report.images) + 1}")
    report.images.append(shown)


def finish(report: Report, lower: dict[str, bool], kinds: dict[str, str], title: str, start: float) -> None:
    """The tables, the sweep plot and the page; one verdict line per metric printed, and the summary."""
    rows = [img["row"] for img in report.images]
    metrics = [k[:-5] for k in rows[0] if k.endswith("_host")]
    mean = mean_row(rows)
    rows.insert(0, mean)
    write_table(report.out, rows, metrics)
    sweep = sweep_table(report.scores, report.sweep, mean)
    write_sweep_csv(report.out / "sweep.csv", sweep)
    plot_sweep(report.out / "sweep.png", sweep, lower)
    host = {m: [r[f"{m}_host"] for r in rows[1:]] for m in metrics}
    iqp = {m: [r[f"{m}_iqp"] for r in rows[1:]] for m in metrics}
    cards = [(m, kinds.get(m, ""), lower[m], paired(iqp[m], host[m], lower[m])) for m in metrics]
    seconds = time.perf_counter() - start
    write_html(report.out, cards, rows, metrics, report.images, sweep, lower, seconds, title,
               [str(p) for p in report.skipped])
    for m in metrics:
        print(verdict(m, host[m], iqp[m], lower[m]))
    print(f"iqp compare: {len(report.images)} images in {seconds:.1f} s -> {report.out / 'index.html'}"
          + unreadable(report.skipped))


def readable(items: list[tuple[str, Path]], gts: dict[str, Path]) -> tuple[list[tuple[str, Path]], list[Path]]:
    """The inputs whose file and GT both decode, and the files that do not (each named on stderr, as
    ``iqp restore`` does); an error when no input is left."""
    kept, bad = [], []
    for name, path in items:
        try:
            for file in (path, gts[name]) if gts else (path,):
                read_picture(file)
        except ValueError as err:
            print(f"iqp compare: skipped {path}: {err}", file=sys.stderr)
            bad.append(file)
        else:
            kept.append((name, path))
    if not kept:
        raise InvalidInputError(f"no input could be read{unreadable(bad)}")
    return kept, bad


def check_inputs(args) -> tuple[list[float], Path | None, list[tuple[str, Path]], dict[str, Path], list[Path]]:
    """The checks made before the model loads; returns the sweep scores, the face detector's weights
    (``--faces``), the readable inputs, their GT files and the unreadable files."""
    scores = parse_scores(args.scores)
    if args.score is not None:
        check_scores(args.score, "--score")
    check_tile_args(args)
    detector = check_face_args(args)
    items = find_images(args.input)
    check_outputs_apart([args.input, *([args.gt] if args.gt else [])], folders={"-o": args.output})
    check_writable(args.output, folder=True)
    gts = match_gt([n for n, _ in items], args.gt) if args.gt else {}
    items, skipped = readable(items, gts)
    return scores, detector, items, gts, skipped


def main(argv: list[str] | None = None) -> None:
    """Run ``iqp compare`` (options: :func:`iqp_plugin.cli.parsers.compare`)."""
    args = parsers.compare().parse_args(argv)
    start = time.perf_counter()
    scores, detector, items, gts, skipped = check_inputs(args)
    heldout = [m.strip() for m in args.heldout.split(",") if m.strip()]
    prior = create_prior(args.metrics)
    nr = create_prior(list(dict.fromkeys([*prior.metrics, *heldout])))
    wrapper = load_from_args(args)
    if wrapper.plugin is None:
        raise InvalidInputError("compare needs a plug-in: --plugin F, or a plugin block plus plugin_checkpoint in the "
                                "config")
    photos = photo_restorer_from_args(args, wrapper, detector) if args.faces else None
    tiled = photos.background if photos is not None else wrapper
    if tiled is not None:
        check_tile_args(args, tiled)  # the tile side the run will use, before any image
    device = next(wrapper.parameters()).device
    stems = [Path(n).with_suffix(".png").as_posix() for n, _ in items]
    if len(set(stems)) != len(stems):
        raise InvalidInputError("two inputs differ only in their extension; compare them in separate runs")

    report = Report(Path(args.output), scores, gts, nr.create_metrics(device), device,
                    nr.metrics[0] if nr.metrics else None, {m: [[] for _ in scores] for m in nr.metrics}, [], skipped)
    restore = restorer(args, wrapper, photos, scores)
    writing(report.out)
    for (name, path), stem in zip(tqdm(items, desc="compare", unit="img"), stems, strict=True):
        rgb = read_picture(path).rgb
        outputs, note = restore(rgb)
        if note is not None:
            tqdm.write(f"iqp compare: {name}: {note}", file=sys.stderr)
        if gts and not report.images:  # the first image gives the model's scale
            size = outputs["host"].shape[:2]
            check_gt_sizes(items, gts, (size[0] / rgb.shape[0], size[1] / rgb.shape[1]))
        add_image(report, name, stem, rgb, outputs, note)

    kinds = {**{m: "the prior" for m in prior.metrics}, **{m: "held out" for m in heldout if m not in prior.metrics},
             **{m: "vs GT" for m in FULL_REF}}
    title = "Host alone vs host + IQP" + (" (whole photos: faces detected and pasted back)" if photos else "")
    finish(report, {**dict(zip(nr.metrics, nr.lower_better, strict=True)), **FULL_REF}, kinds, title, start)
    if skipped:
        sys.exit(1)


if __name__ == "__main__":
    from iqp_plugin.cli import run

    run(main)
