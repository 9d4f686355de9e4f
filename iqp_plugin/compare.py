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
``index.html`` showing it all. The page opens with one verdict card per metric; then, per image, a before/after
slider (host | host + IQP), the zoomed detail crop where the two outputs differ most (input, host, host + IQP
[, GT]) and the same crop at every score of the sweep; the full tables come last. It is self-contained: relative
links, inline CSS and JavaScript, nothing from the network, so a copied folder opens anywhere.
With ``--faces`` (face hosts, whole photos; see :mod:`iqp_plugin.faces`) every output is made by the same face
detection and paste-back, and each image's note says what was found.
Every number is computed on the saved files, reloaded, so it matches what a viewer sees. One verdict line per metric is printed:
'better' / 'worse' when the mean paired per-image difference (host+IQP minus host) is at least two
standard errors from zero, else 'same' (within noise), with the difference and its standard error.

GT files are matched by relative path, else by name with LR/HR/LQ/GT/x<scale> tokens removed
(``img_001_SRF_4_LR.png`` <-> ``img_001_SRF_4_HR.png``). Every GT's size is checked against its output's
(input size times the model's scale, measured on the first image) before anything is written; REPORT_DIR
is checked before the model loads.
"""
from __future__ import annotations

import csv
import html
import io
import re
import sys
import time
import warnings
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np
import torch
from tqdm import tqdm

from iqp_plugin import parsers
from iqp_plugin.cli import writing
from iqp_plugin.evaluation import FULL_REF, full_reference, paired
from iqp_plugin.faces import check_face_args, photo_restorer_from_args
from iqp_plugin.files import check_writable, write_atomic
from iqp_plugin.images import find_images, read_picture
from iqp_plugin.loading import load_from_args
from iqp_plugin.quality import create_prior
from iqp_plugin.running import check_tile_args, run_batch
from iqp_plugin.score_files import check_scores


def parse_scores(text: str) -> list[float]:
    """'0.5,0.9' -> [0.5, 0.9]; at least one score, every score in [0, 1]."""
    try:
        scores = [float(s) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise ValueError(f"--scores must be comma-separated numbers, got {text!r}") from err
    if not scores:
        raise ValueError(f"--scores must name at least one score in [0, 1], got {text!r}")
    check_scores(scores, "--scores")
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


#: Zoomed detail crops are shown this many CSS pixels wide; sweep crops STRIP_PX.
DETAIL_PX, STRIP_PX = 180, 112


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
        strip.append((f"score_{s:.2f}", label(f"score {s:g}", score_values.get(s)), img[top:top + side, left:left + side]))
    crops, sweep_strip = [], []
    for kind, text, img in pieces:
        save_png(out / folder / f"{kind}.png", img.astype(np.float32) / 255)
        crops.append((text, (folder / f"{kind}.png").as_posix()))
    for kind, text, img in strip:
        path = folder / (f"{kind}.png" if kind.startswith("score_") else "sweep_host.png")
        save_png(out / path, img.astype(np.float32) / 255)
        sweep_strip.append((text, path.as_posix()))
    return {"name": name, "anchor": "img-" + re.sub(r"[^A-Za-z0-9_-]", "-", stem), "size": (w, h),
            "in_size": (inp.shape[1], inp.shape[0]), "box": (left, top, side), "crops": crops, "sweep": sweep_strip,
            "host": f"images/host/{stem}", "iqp": f"images/iqp/{stem}"}


def src(path: str) -> str:
    """A relative link for an attribute: URL-quoted (spaces, '#', '?') and HTML-escaped."""
    return html.escape(quote(path), quote=True)


def _num(v: float) -> str:
    return "n/a" if not np.isfinite(v) else f"{v:.4f}"


def _card(metric: str, kind: str, lower_better: bool, v: dict | None) -> str:
    esc = html.escape
    direction = "lower" if lower_better else "higher"
    if v is None:
        return (f"<div class='card same'><div class='metric'>{esc(metric)} <span class='kind'>{esc(kind)}</span></div>"
                f"<div class='word'>not scored</div><div class='nums'>the metric failed on every image</div></div>")
    word = v["verdict"]
    shown = "same <small>within noise</small>" if word == "same" else word
    return (f"<div class='card {word}'><div class='metric'>{esc(metric)} <span class='kind'>{esc(kind)}, {direction} is "
            f"better</span></div><div class='word'>{shown}</div><div class='nums'><b>{v['b']:.4f} &rarr; {v['a']:.4f}</b>"
            f"<br>{v['mean']:+.4f} &plusmn; {v['sem']:.4f} "
            f"s.e., {v['n']} image{'s' if v['n'] != 1 else ''}</div></div>")


def _image_section(img: dict, metrics: list[str], lower: dict[str, bool], first_metric: str | None) -> str:
    """One image: slider, detail crops, sweep strip, its numbers."""
    esc = html.escape
    w, h = img["size"]
    left, top, side = img["box"]
    box = (f"left:{100 * left / w:.3f}%;top:{100 * top / h:.3f}%;width:{100 * side / w:.3f}%;"
           f"height:{100 * side / h:.3f}%")
    crops = "".join(f"<figure><img src='{src(p)}' alt='{esc(label)} detail' width='{DETAIL_PX}' height='{DETAIL_PX}'>"
                    f"<figcaption>{esc(label)}</figcaption></figure>" for label, p in img["crops"])
    strip = "".join(f"<figure><img src='{src(p)}' alt='{esc(label)} detail' width='{STRIP_PX}' height='{STRIP_PX}'>"
                    f"<figcaption>{esc(label).replace(chr(10), '<br>')}</figcaption></figure>" for label, p in img["sweep"])
    row = img["row"]
    values = []
    for m in metrics:
        a, b = row[f"{m}_host"], row[f"{m}_iqp"]
        d = b - a
        cls = "" if not np.isfinite(d) or d == 0 else ("good" if (d < 0) == lower[m] else "bad")
        values.append(f"<span>{esc(m)} {_num(a)} &rarr; <b class='{cls}'>{_num(b)}</b></span>")
    note = f"<span class='note'>{esc(img['note'])}</span>" if img.get("note") else ""
    name = esc(img["name"])
    return f"""<section class="image" id="{esc(img['anchor'])}">
<div class="head"><h3>{name}</h3><span class="size">{img['in_size'][0]}&times;{img['in_size'][1]} &rarr; {w}&times;{h}</span>{note}
<span class="links"><a href="{src(img['grid'])}">grid</a><a href="{src(img['host'])}">host</a><a href="{src(img['iqp'])}">host + IQP</a></span></div>
<div class="row">
<div class="ba" style="aspect-ratio:{w}/{h}"><img class="under" src="{src(img['host'])}" alt="{name}: host alone" width="{w}" height="{h}">
<img class="over" src="{src(img['iqp'])}" alt="{name}: host + IQP" width="{w}" height="{h}">
<div class="box" style="{box}"></div><div class="line"></div><span class="tag l">host</span><span class="tag r">host + IQP</span>
<input type="range" min="0" max="100" step="0.5" value="50" aria-label="{name}: slide between host (left) and host + IQP (right)"></div>
<div class="detail"><p class="cap">Detail &times;{DETAIL_PX / side:.1f}: the {side}&times;{side} px square where host + IQP differs most from the host (yellow frame)</p>
<div class="crops">{crops}</div>
<p class="cap">The same square at each conditioning score{f' ({esc(first_metric)} under each)' if first_metric else ''}</p>
<div class="crops strip">{strip}</div>
<p class="values">{' &middot; '.join(values)}</p></div></div></section>"""


def write_html(out: Path, cards: list[tuple[str, str, bool, dict | None]], rows: list[dict], metrics: list[str],
               images: list[dict], sweep_rows: list[list], lower: dict[str, bool], seconds: float,
               title: str = "Host alone vs host + IQP") -> None:
    """index.html: verdict cards, sweep plot, every image (slider, detail crops, sweep strip), then the full tables.
    Self-contained: relative links, inline CSS and JavaScript, nothing from the network."""
    esc = html.escape
    counts = {w: sum(1 for *_, v in cards if v and v["verdict"] == w) for w in ("better", "worse", "same")}
    scored = sum(counts.values())
    overall = (f"host + IQP is <b class='good'>better on {counts['better']}</b>, <b class='bad'>worse on "
               f"{counts['worse']}</b> and the same (within noise) on {counts['same']} of {scored} metrics")
    first_metric = cards[0][0] if cards else None
    nav = "".join(f"<a href='#{esc(img['anchor'])}'>{esc(img['name'])}</a>" for img in images)
    sections = "".join(_image_section(img, metrics, lower, first_metric) for img in images)
    head = "<tr><th rowspan='2'>image</th>" + "".join(f"<th colspan='3'>{esc(m)} ({'lower' if lower[m] else 'higher'} "
                                                   f"is better)</th>" for m in metrics) + "</tr><tr>" + \
        "<th>host</th><th>host + IQP</th><th>diff</th>" * len(metrics) + "</tr>"
    body = []
    for r in rows:
        cells = []
        for m in metrics:
            d = r[f"{m}_diff"]
            cls = "" if not np.isfinite(d) or d == 0 else ("good" if (d < 0) == lower[m] else "bad")
            cells.append(f"<td>{_num(r[f'{m}_host'])}</td><td>{_num(r[f'{m}_iqp'])}</td><td class='{cls}'>{_num(d)}</td>")
        tag = " class='mean'" if r["image"] == "mean" else ""
        body.append(f"<tr{tag}><td>{esc(r['image'])}</td>{''.join(cells)}</tr>")
    sweep_head = "".join(f"<th>{esc(str(c))}</th>" for c in sweep_rows[0])
    sweep_body = "".join("<tr>" + "".join(f"<td>{esc(c) if isinstance(c, str) else _num(c)}</td>" for c in row) + "</tr>"
                         for row in sweep_rows[1:])
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>IQP compare: {esc(title)}</title>
<style>{CSS}</style></head><body><main>
<h1>{esc(title)}</h1>
<p class="sub">{len(images)} image{'s' if len(images) != 1 else ''}, {seconds:.1f} s. Each card: the mean over the images, host alone &rarr;
host + IQP, and the mean paired difference &plusmn; its standard error; the verdict is 'same' within two standard errors. Files: <a href="metrics.csv">metrics.csv</a>,
<a href="metrics.md">metrics.md</a>, <a href="sweep.csv">sweep.csv</a>.</p>
<p class="overall">{overall}.</p>
<div class="cards">{''.join(_card(*c) for c in cards)}</div>
<div class="plot"><h2>Metrics vs conditioning score</h2><img src="sweep.png" alt="mean metrics vs the conditioning score"></div>
<h2>Images</h2><p class="sub">Drag across each image: the host alone on the left of the line, host + IQP on the right.</p>
<nav>{nav}</nav>
{sections}
<h2>Full tables</h2><h3>Per image (first row: the mean)</h3>
<div class="tablewrap"><table>{head}{''.join(body)}</table></div>
<h3>Mean metrics vs conditioning score</h3><div class="tablewrap"><table><tr>{sweep_head}</tr>{sweep_body}</table></div>
</main><script>{JS}</script></body></html>
"""
    write_atomic(out / "index.html", page.encode())


CSS = """
:root{--fg:#1d2330;--muted:#5b6475;--line:#dde1e8;--bg:#f5f6f8;--card:#fff;--good:#1a7f37;--bad:#c62828;--same:#7a8191}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1360px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:32px 0 10px}h3{font-size:16px;margin:18px 0 8px}
a{color:#1f5fbf}.sub{color:var(--muted);margin:0 0 14px}.overall{font-size:17px;margin:0 0 14px}
.good{color:var(--good)}.bad{color:var(--bad)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:12px}
.card{background:var(--card);border:1px solid var(--line);border-left:6px solid var(--same);border-radius:8px;padding:10px 14px}
.card.better{border-left-color:var(--good)}.card.worse{border-left-color:var(--bad)}
.card .metric{font-weight:600}.card .kind{color:var(--muted);font-weight:400;font-size:12px}
.card .word{font-size:21px;font-weight:700;margin:2px 0;color:var(--same)}.card .word small{font-size:13px;font-weight:400}
.card.better .word{color:var(--good)}.card.worse .word{color:var(--bad)}
.card .nums{font-variant-numeric:tabular-nums;color:var(--muted);font-size:13px}.card .nums b{color:var(--fg);font-weight:600}
.plot img{max-width:100%;background:#fff;border:1px solid var(--line);border-radius:8px}
nav{display:flex;flex-wrap:wrap;gap:4px 12px;margin:0 0 14px;font-size:13px}
section.image{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 18px;margin:0 0 16px}
.head{display:flex;gap:14px;align-items:baseline;flex-wrap:wrap;margin-bottom:10px}.head h3{margin:0}
.size,.note{color:var(--muted);font-size:13px}.note{color:#8a5a00}.links{margin-left:auto}.links a{font-size:13px;margin-left:10px}
.row{display:flex;gap:24px;align-items:flex-start;flex-wrap:wrap}
.ba{position:relative;width:min(100%,460px);line-height:0;border-radius:6px;overflow:hidden;background:#000;user-select:none;touch-action:none}
.ba:focus-within{outline:3px solid #1f5fbf;outline-offset:2px}
.ba img{display:block;width:100%;height:100%}
.ba .over{position:absolute;inset:0;clip-path:inset(0 0 0 50%)}
.ba .line{position:absolute;top:0;bottom:0;left:50%;width:2px;margin-left:-1px;background:#fff;box-shadow:0 0 4px rgba(0,0,0,.7);pointer-events:none}
.ba .line::after{content:"\\2194";position:absolute;top:50%;left:50%;width:30px;height:30px;margin:-15px 0 0 -15px;border-radius:50%;
 border:2px solid #fff;background:rgba(0,0,0,.45);color:#fff;font:16px/26px system-ui;text-align:center}
.ba .tag{position:absolute;top:8px;padding:2px 8px;font:12px/1.6 system-ui,sans-serif;color:#fff;background:rgba(0,0,0,.6);border-radius:4px;pointer-events:none}
.ba .tag.l{left:8px}.ba .tag.r{right:8px}
.ba .box{position:absolute;border:2px solid #ffd400;box-shadow:0 0 0 1px rgba(0,0,0,.6);pointer-events:none}
.ba input{position:absolute;inset:0;width:100%;height:100%;margin:0;opacity:0;cursor:ew-resize;-webkit-appearance:none;appearance:none}
.ba input::-webkit-slider-thumb{-webkit-appearance:none;width:2px;height:400px}
.detail{flex:1;min-width:320px}.cap{margin:0 0 6px;color:var(--muted);font-size:13px}
.crops{display:flex;gap:10px;flex-wrap:wrap;margin-bottom:12px}
figure{margin:0;width:min-content}figcaption{font-size:12px;color:var(--muted);line-height:1.7;text-align:center}
.crops img{display:block;image-rendering:pixelated;border-radius:4px;border:1px solid var(--line);background:#eee}
.values{font-size:13px;color:var(--muted);margin:4px 0 0;font-variant-numeric:tabular-nums}.values span{white-space:nowrap}
.tablewrap{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;background:#fff;font-size:13px;font-variant-numeric:tabular-nums}
td,th{border:1px solid var(--line);padding:3px 7px;text-align:right;white-space:nowrap}th{background:#eef0f4;text-align:center;white-space:normal}
td:first-child{text-align:left}tr.mean td{font-weight:600;background:#fafbfc}
"""

JS = """
document.querySelectorAll('.ba').forEach(function (ba) {
  var range = ba.querySelector('input'), over = ba.querySelector('.over'), line = ba.querySelector('.line');
  function show() { over.style.clipPath = 'inset(0 0 0 ' + range.value + '%)'; line.style.left = range.value + '%'; }
  range.addEventListener('input', show);
  show();
});
function crisp(img) { if (img.naturalWidth && img.naturalWidth < img.clientWidth) img.style.imageRendering = 'pixelated'; }
document.querySelectorAll('.ba img').forEach(function (img) {
  if (img.complete) crisp(img); else img.addEventListener('load', function () { crisp(img); });
});
"""


def main(argv: list[str] | None = None) -> None:
    args = parsers.compare().parse_args(argv)
    start = time.perf_counter()
    sweep_scores = parse_scores(args.scores)
    if args.score is not None:
        check_scores(args.score, "--score")
    check_tile_args(args)
    detector = check_face_args(args)
    items = find_images(args.input)
    check_writable(args.output, folder=True)
    gts = match_gt([n for n, _ in items], args.gt) if args.gt else {}
    heldout = [m.strip() for m in args.heldout.split(",") if m.strip()]
    prior = create_prior(args.metrics)
    nr = create_prior(list(dict.fromkeys([*prior.metrics, *heldout])))
    wrapper = load_from_args(args)
    if wrapper.plugin is None:
        raise ValueError("compare needs a plug-in: --plugin F, or a plugin block plus plugin_checkpoint in the config")
    photos = photo_restorer_from_args(args, wrapper, detector) if args.faces else None
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
    rows, shown = [], []
    sweep = {m: [[] for _ in sweep_scores] for m in nr.metrics}
    for (name, path), stem in zip(tqdm(items, desc="compare", unit="img"), stems):
        rgb = read_picture(path).rgb[None]
        runs = {"host": {"plugin": False}, "iqp": {"score": args.score},
                **{f"score_{s:.2f}": {"score": s} for s in sweep_scores}}
        note = None
        if photos is not None:
            photo = photos(rgb[0], runs)
            outputs = {kind: img[None] for kind, img in photo.images.items()}
            note = photo.note
            tqdm.write(f"iqp compare: {name}: {note}", file=sys.stderr)
        else:
            tiling = {"tile": args.tile, "overlap": args.tile_overlap, "tile_above": args.tile_above}
            outputs = {kind: run_batch(wrapper, rgb, **opts, **tiling) for kind, opts in runs.items()}
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
        row = {"image": name}
        for m in values["host"]:
            row.update({f"{m}_host": values["host"][m], f"{m}_iqp": values["iqp"][m],
                        f"{m}_diff": values["iqp"][m] - values["host"][m]})
        rows.append(row)
        first = nr.metrics[0] if nr.metrics else None
        shown.append(detail_crops(out, name, stem, saved, panels[-1][1] if gts else None, sweep_scores,
                                  {s: sweep[first][i][-1] for i, s in enumerate(sweep_scores)} if first else {},
                                  values["host"].get(first) if first else None, first))
        shown[-1].update(row=row, note=note, grid=f"grids/{stem}", anchor=f"image-{len(shown)}")

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
    kinds = {**{m: "the prior" for m in prior.metrics}, **{m: "held out" for m in heldout if m not in prior.metrics},
             **{m: "vs GT" for m in FULL_REF}}
    cards = [(m, kinds.get(m, ""), lower[m],
              paired([r[f"{m}_iqp"] for r in rows[1:]], [r[f"{m}_host"] for r in rows[1:]], lower[m]))
             for m in metrics]
    sweep_rows = [["score", *curves], *[[f"{s:g}", *(curve[i] for curve in curves.values())]
                                        for i, s in enumerate(sweep_scores)],
                  ["host alone", *(mean[f"{m}_host"] for m in curves)]]
    seconds = time.perf_counter() - start
    title = "Host alone vs host + IQP" + (" (whole photos: faces detected and pasted back)" if photos else "")
    write_html(out, cards, rows, metrics, shown, sweep_rows, lower, seconds, title)
    for line in verdicts:
        print(line)
    print(f"iqp compare: {len(items)} images in {seconds:.1f} s -> {out / 'index.html'}")


if __name__ == "__main__":
    from iqp_plugin.cli import run

    run(main)
