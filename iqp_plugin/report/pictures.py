"""The pictures of an ``iqp compare`` report: 8-bit PNGs of the inputs and outputs, labelled grids, and the zoomed
crops of the detail where host + IQP differs most from the host."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from iqp_plugin.io.images import Picture, read_picture, write_picture


def to_u8(rgb: np.ndarray) -> np.ndarray:
    """RGB [0, 1] float -> uint8."""
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def save_png(path: Path, rgb: np.ndarray) -> None:
    """8-bit RGB PNG of an RGB [0, 1] float image, written atomically."""
    write_picture(path, Picture(np.asarray(rgb, np.float32)))


def save_u8_png(path: Path, rgb: np.ndarray) -> None:
    """8-bit RGB PNG of a uint8 RGB image, written atomically."""
    save_png(path, rgb.astype(np.float32) / 255)


def load_u8(path: Path) -> np.ndarray:
    """A saved image back as uint8 RGB."""
    return to_u8(read_picture(path).rgb)


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


def save_grid(path: Path, saved: dict[str, np.ndarray], gt: np.ndarray | None) -> None:
    """The grid of one image: input (enlarged to the output's size, nearest) | host | host + IQP [| GT]."""
    inp = saved["input"]
    h, w = saved["host"].shape[:2]
    panels = [(f"input ({inp.shape[1]}x{inp.shape[0]})", cv2.resize(inp, (w, h), interpolation=cv2.INTER_NEAREST)),
              ("host", saved["host"]), ("host + IQP", saved["iqp"])]
    if gt is not None:
        panels.append(("GT", gt))
    save_u8_png(path, make_grid(panels))


def detail_box(host: np.ndarray, iqp: np.ndarray) -> tuple[int, int, int]:
    """(left, top, side) of the square where host+IQP differs most from the host (largest summed absolute
    difference; the centre when they are equal). The side is a third of the shorter output side, at least 16 px
    (or the whole side when shorter) and at most 160 px."""
    h, w = host.shape[:2]
    short = min(h, w)
    side = min(short, 160, max(16, short // 3))
    diff = np.abs(iqp.astype(np.float32) - host.astype(np.float32)).mean(axis=-1)
    ii = cv2.integral(diff, sdepth=cv2.CV_64F)
    sums = ii[side:, side:] - ii[:-side, side:] - ii[side:, :-side] + ii[:-side, :-side]
    if not sums.max() > 0:
        return (w - side) // 2, (h - side) // 2, side
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(left), int(top), side


def detail_crops(out: Path, name: str, stem: str, saved: dict[str, np.ndarray], gt: np.ndarray | None,
                 scores: list[float], score_values: dict[float, float], host_value: float | None,
                 metric: str | None) -> dict:
    """Write ``crops/<image>/``: the detail square (:func:`detail_box`) of the input (upscaled to the output's
    scale, nearest), host, host + IQP, GT and every sweep score; returns what the page shows of this image."""
    host, iqp = saved["host"], saved["iqp"]
    h, w = host.shape[:2]
    left, top, side = detail_box(host, iqp)
    folder = Path("crops") / Path(stem).with_suffix("")
    inp = saved["input"]
    sy, sx = inp.shape[0] / h, inp.shape[1] / w
    y0, y1 = int(np.floor(top * sy)), max(int(np.floor(top * sy)) + 1, int(np.ceil((top + side) * sy)))
    x0, x1 = int(np.floor(left * sx)), max(int(np.floor(left * sx)) + 1, int(np.ceil((left + side) * sx)))
    pieces = [("input", "input", cv2.resize(inp[y0:y1, x0:x1], (side, side), interpolation=cv2.INTER_NEAREST)),
              ("host", "host", host[top:top + side, left:left + side]),
              ("iqp", "host + IQP", iqp[top:top + side, left:left + side])]
    if gt is not None:
        pieces.append(("gt", "GT", gt[top:top + side, left:left + side]))

    def label(kind: str, value: float | None) -> str:
        return kind if value is None or metric is None or not np.isfinite(value) else f"{kind}\n{metric} {value:.2f}"

    strip = [("host", label("host alone", host_value), host[top:top + side, left:left + side])]
    for s in scores:
        img = load_u8(out / "images" / f"score_{s:.2f}" / stem)
        strip.append((f"score_{s:.2f}", label(f"score {s:g}", score_values.get(s)),
                      img[top:top + side, left:left + side]))
    crops, sweep_strip = [], []
    for kind, text, img in pieces:
        save_u8_png(out / folder / f"{kind}.png", img)
        crops.append((text, (folder / f"{kind}.png").as_posix()))
    for kind, text, img in strip:
        path = folder / (f"{kind}.png" if kind.startswith("score_") else "sweep_host.png")
        save_u8_png(out / path, img)
        sweep_strip.append((text, path.as_posix()))
    return {"name": name, "size": (w, h), "in_size": (inp.shape[1], inp.shape[0]), "box": (left, top, side),
            "crops": crops, "sweep": sweep_strip, "host": f"images/host/{stem}", "iqp": f"images/iqp/{stem}"}
