"""``iqp score``: score image folders with an NR-IQA prior into a CSV, and summarise such a CSV.

    iqp score -i DIR [-i DIR ...] -o scores.csv [--metrics niqe,piqe] [--weights 1,1] [--batch N]
              [--device auto] [--norm rank|minmax|fixed] [--normalizer SIDECAR] [--replace]
    iqp score --summary scores.csv [--top 20]
    torchrun --nproc_per_node N -m iqp_plugin.cli.score -i DIR -o scores.csv      (files sharded over ranks;
    torchrun --nproc_per_node N --no-python iqp score -i DIR -o scores.csv       the same)

Raw scores go to one partial CSV per rank as they are computed, so an interrupted run resumes
where it stopped; at the end rank 0 writes ``scores.csv`` (imagename, one raw column per metric,
normalised ``score``) and the sidecar ``scores.json`` (normalisation constants, failures, and the
signature of every scored file) atomically. ``-o`` naming a folder (existing, or ending in ``/``)
means ``FOLDER/scores.csv``.

Scoring into an existing CSV merges: its rows are kept, one row per image name, and the images of
this run are added; an image whose file is unchanged since it was scored (same inode, size and
modification time) is not computed again, a new or changed one is, and its row gets the new scores
(or, when it cannot be scored any more, it moves to the sidecar's failures).
The ``score`` column is normalised over all rows, the CSV's way unless ``--norm`` or ``--normalizer``
asks for another (then every earlier score changes scale: a warning, repeated at the end). An image
name that the CSV gives another file (``A/001.jpg`` scored, then ``B/001.jpg``) is refused.
``--replace`` ignores the CSV's earlier rows: the CSV written at the end holds the images of this run
(and of the interrupted run it resumes) only; it also removes a partial file for other metrics. One run
at a time writes a CSV: a second one is refused in one line.
A ``.json`` at the sidecar's path that is not a sidecar is never overwritten. Images that cannot be
scored, and the checks made before any metric loads: :mod:`iqp_plugin.prior.scoring`.
"""
from __future__ import annotations

import os

from iqp_plugin.cli import parsers, writing
from iqp_plugin.errors import InvalidInputError
from iqp_plugin.prior.metrics import create_prior
from iqp_plugin.prior.partials import partial_path
from iqp_plugin.prior.score_files import load_normalizer, sidecar_path
from iqp_plugin.prior.scoring import output_csv, score_folders, summarize


def markdown(summary: dict) -> str:
    """The summary of :func:`~iqp_plugin.prior.scoring.summarize` as a markdown table and a few lines of text."""
    keys = ("mean", "std", "min", "q25", "median", "q75", "max")
    lines = ["| column | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for c, s in summary["stats"].items():
        lines.append(f"| {c} | " + " | ".join(f"{s[k]:.4g}" for k in keys) + " |")
    lines += ["", (f"{summary['count']} images; top {summary['top_percent']:g}% (HQ targets): "
                   f"score >= {summary['hq_threshold']:.4f} ({summary['hq_count']} images)"),
              f"lowest: {', '.join(summary['lowest'])}", f"highest: {', '.join(summary['highest'])}"]
    failed = summary.get("failed", [])
    if failed:
        lines.append(f"failed ({len(failed)}): " + ", ".join(f"{f['imagename']} ({f['error']})" for f in failed))
    lines.append("histograms: " + ", ".join(summary["histograms"].values()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run ``iqp score`` with the options ``argv``: score the ``-i`` folders into ``-o``, or print a summary."""
    p = parsers.score()
    p.set_defaults(norm=None)  # no --norm: the CSV's when merging, else rank
    args = p.parse_args(argv)
    if args.summary:
        print(markdown(summarize(args.summary, args.top)))
        return
    if not args.input or not args.output:
        p.error("scoring needs -i DIR and -o CSV (or --summary CSV)")
    weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    normalizer = load_normalizer(args.normalizer) if args.normalizer else None
    prior = create_prior(args.metrics, weights)
    if normalizer is not None and (args.metrics != "offline" or weights) and prior != normalizer.prior:
        given = dict(zip(prior.metrics, prior.weights, strict=False))
        made = dict(zip(normalizer.prior.metrics, normalizer.prior.weights, strict=False))
        raise InvalidInputError(f"--metrics/--weights give {given}, but the --normalizer sidecar was made with "
                                f"{made}: leave --metrics out to score with the sidecar's")
    out = output_csv(args.output)
    writing(partial_path(out, int(os.environ.get("RANK", "0"))))  # this process's partial CSV (torchrun sets RANK)
    result = score_folders(args.input, args.output, prior, max(1, args.batch), args.device, args.norm,
                           replace=args.replace, normalizer=normalizer)
    if result is not None:
        print(f"{result['scored']} images scored in {out} (constants in {sidecar_path(out)})")
        if result.get("renormalised"):
            print(f"warning: {result['renormalised']}")
        if result["failed"]:
            print(f"{len(result['failed'])} could not be scored, left out of the CSV and of training (reasons in "
                  f"{sidecar_path(out)}): " + ", ".join(result["failed"]))


if __name__ == "__main__":
    from iqp_plugin.cli import run

    run(main)
