"""The plot of an ``iqp compare`` report: the mean metrics vs the conditioning score (``sweep.png``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from iqp_plugin.io.images import Picture, write_picture


def plot_sweep(path: Path, table: list[list], lower: dict[str, bool]) -> None:
    """One panel per metric of the sweep table (:func:`iqp_plugin.report.tables.sweep_table`): its mean at each
    conditioning score, and the host alone as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics, rows, host = table[0][1:], table[1:-1], table[-1][1:]
    scores = [row[0] for row in rows]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), dpi=100, squeeze=False)
    for j, (ax, m) in enumerate(zip(axes[0], metrics, strict=True)):
        ax.plot(scores, [row[j + 1] for row in rows], "o-", label="host + IQP")
        ax.axhline(host[j], color="gray", ls="--", label="host alone")
        ax.set(xlabel="conditioning score", ylabel=m, title=f"{m} ({'lower' if lower[m] else 'higher'} is better)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba(), dtype=np.float32) / 255
    plt.close(fig)
    write_picture(path, Picture(np.ascontiguousarray(rgba[..., :3]), rgba[..., 3]))
