"""The tables of an ``iqp compare`` report: per-image metrics of host and host + IQP with their mean
(``metrics.csv``, ``metrics.md``), the mean metrics at each conditioning score (``sweep.csv``), and one verdict
per metric."""
from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

import numpy as np

from iqp_plugin.io.files import write_atomic
from iqp_plugin.report.metrics import paired


def image_row(name: str, host: dict[str, float], iqp: dict[str, float]) -> dict:
    """One image's row: ``<metric>_host``, ``<metric>_iqp`` and ``<metric>_diff`` (host + IQP minus host)."""
    row = {"image": name}
    for m in host:
        row.update({f"{m}_host": host[m], f"{m}_iqp": iqp[m], f"{m}_diff": iqp[m] - host[m]})
    return row


def _nanmean(values: list[float]) -> float:
    """Mean of the finite values; NaN, without a warning, when there is none (a metric that scored no image)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(values))


def mean_row(rows: list[dict]) -> dict:
    """The 'mean' row of per-image rows (images a metric could not score left out)."""
    return {"image": "mean", **{k: _nanmean([r[k] for r in rows]) for k in rows[0] if k != "image"}}


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


def sweep_table(scores: list[float], sweep: dict[str, list[list[float]]], mean: dict) -> list[list]:
    """The mean of every metric at each conditioning score: ``['score', *metrics]``, one ``[score, *means]``
    row per score (``sweep[metric][i]`` holds the per-image values at ``scores[i]``), and last
    ``['host', *means of the host alone]`` from the ``mean`` row."""
    return [["score", *sweep],
            *[[s, *(_nanmean(values[i]) for values in sweep.values())] for i, s in enumerate(scores)],
            ["host", *(mean[f"{m}_host"] for m in sweep)]]


def write_sweep_csv(path: Path, table: list[list]) -> None:
    """The :func:`sweep_table` as CSV."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(table)
    write_atomic(path, buf.getvalue().encode())


def verdict(metric: str, host: list[float], iqp: list[float], lower_better: bool) -> str:
    """'better' / 'worse' / 'same' (within noise) for host+IQP against the host, from per-image values:
    the mean paired difference and its standard error (images the metric could not score left out)."""
    v = paired(iqp, host, lower_better)
    if v is None:
        return f"{metric}: not scored (the metric failed on every image)"
    word = "same (within noise)" if v["verdict"] == "same" else v["verdict"]
    direction = "lower" if lower_better else "higher"
    return (f"{metric} ({direction} is better): {word}, mean {v['b']:.4f} -> {v['a']:.4f} "
            f"({v['mean']:+.4f} ± {v['sem']:.4f} s.e., {v['n']} images)")
