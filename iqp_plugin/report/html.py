"""The page of an ``iqp compare`` report (``index.html``): verdict cards, the sweep plot, every image (before/after
slider, detail crops, sweep strip), then the full tables. Self-contained: relative links, the stylesheet and
script of ``assets/`` inlined, nothing from the network, so a copied folder opens anywhere."""
from __future__ import annotations

import html
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import numpy as np

from iqp_plugin.io.files import write_atomic

#: Zoomed detail crops are shown this many CSS pixels wide; sweep crops STRIP_PX.
DETAIL_PX, STRIP_PX = 180, 112


def _asset(name: str) -> str:
    """A file of ``iqp_plugin/report/assets/``, as text."""
    return resources.files("iqp_plugin.report").joinpath("assets", name).read_text(encoding="utf-8")


def _link(path: str) -> str:
    """A relative link for an attribute: URL-quoted (spaces, '#', '?') and HTML-escaped."""
    return html.escape(quote(path), quote=True)


def _number(v: float) -> str:
    return "n/a" if not np.isfinite(v) else f"{v:.4f}"


def _change_class(diff: float, lower_better: bool) -> str:
    """'good' / 'bad' for a change of host + IQP against the host, '' for none."""
    return "" if not np.isfinite(diff) or diff == 0 else ("good" if (diff < 0) == lower_better else "bad")


def _card(metric: str, kind: str, lower_better: bool, v: dict | None) -> str:
    esc = html.escape
    direction = "lower" if lower_better else "higher"
    if v is None:
        return (f"<div class='card same'><div class='metric'>{esc(metric)} <span class='kind'>{esc(kind)}</span></div>"
                f"<div class='word'>not scored</div><div class='nums'>the metric failed on every image</div></div>")
    word = v["verdict"]
    shown = "same <small>within noise</small>" if word == "same" else word
    return (f"<div class='card {word}'><div class='metric'>{esc(metric)} <span class='kind'>{esc(kind)}, {direction} "
            f"is better</span></div><div class='word'>{shown}</div><div class='nums'><b>{v['b']:.4f} &rarr; "
            f"{v['a']:.4f}</b><br>{v['mean']:+.4f} &plusmn; {v['sem']:.4f} "
            f"s.e., {v['n']} image{'s' if v['n'] != 1 else ''}</div></div>")


def _image_section(img: dict, metrics: list[str], lower: dict[str, bool], first_metric: str | None) -> str:
    """One image: slider, detail crops, sweep strip, its numbers."""
    esc = html.escape
    w, h = img["size"]
    left, top, side = img["box"]
    box = (f"left:{100 * left / w:.3f}%;top:{100 * top / h:.3f}%;width:{100 * side / w:.3f}%;"
           f"height:{100 * side / h:.3f}%")
    crops = "".join(f"<figure><img src='{_link(p)}' alt='{esc(label)} detail' width='{DETAIL_PX}' "
                    f"height='{DETAIL_PX}'><figcaption>{esc(label)}</figcaption></figure>" for label, p in img["crops"])
    strip = "".join(f"<figure><img src='{_link(p)}' alt='{esc(label)} detail' width='{STRIP_PX}' height='{STRIP_PX}'>"
                    f"<figcaption>{esc(label).replace(chr(10), '<br>')}</figcaption></figure>"
                    for label, p in img["sweep"])
    row = img["row"]
    values = []
    for m in metrics:
        a, b = row[f"{m}_host"], row[f"{m}_iqp"]
        values.append(f"<span>{esc(m)} {_number(a)} &rarr; <b class='{_change_class(b - a, lower[m])}'>{_number(b)}</b>"
                      "</span>")
    note = f"<span class='note'>{esc(img['note'])}</span>" if img.get("note") else ""
    name = esc(img["name"])
    sizes = f"{img['in_size'][0]}&times;{img['in_size'][1]} &rarr; {w}&times;{h}"
    under_score = f" ({esc(first_metric)} under each)" if first_metric else ""
    return f"""<section class="image" id="{esc(img['anchor'])}">
<div class="head"><h3>{name}</h3><span class="size">{sizes}</span>{note}
<span class="links"><a href="{_link(img['grid'])}">grid</a><a href="{_link(img['host'])}">host</a>\
<a href="{_link(img['iqp'])}">host + IQP</a></span></div>
<div class="row">
<div class="ba" style="aspect-ratio:{w}/{h}">\
<img class="under" src="{_link(img['host'])}" alt="{name}: host alone" width="{w}" height="{h}">
<img class="over" src="{_link(img['iqp'])}" alt="{name}: host + IQP" width="{w}" height="{h}">
<div class="box" style="{box}"></div><div class="line"></div><span class="tag l">host</span>\
<span class="tag r">host + IQP</span>
<input type="range" min="0" max="100" step="0.5" value="50" \
aria-label="{name}: slide between host (left) and host + IQP (right)"></div>
<div class="detail"><p class="cap">Detail &times;{DETAIL_PX / side:.1f}: the {side}&times;{side} px square where \
host + IQP differs most from the host (yellow frame)</p>
<div class="crops">{crops}</div>
<p class="cap">The same square at each conditioning score{under_score}</p>
<div class="crops strip">{strip}</div>
<p class="values">{' &middot; '.join(values)}</p></div></div></section>"""


def _metrics_table(rows: list[dict], metrics: list[str], lower: dict[str, bool]) -> str:
    """The per-image table, host | host + IQP | diff per metric; the mean row first."""
    esc = html.escape
    head = ("<tr><th rowspan='2'>image</th>"
            + "".join(f"<th colspan='3'>{esc(m)} ({'lower' if lower[m] else 'higher'} is better)</th>" for m in metrics)
            + "</tr><tr>" + "<th>host</th><th>host + IQP</th><th>diff</th>" * len(metrics) + "</tr>")
    body = []
    for r in rows:
        cells = []
        for m in metrics:
            d = r[f"{m}_diff"]
            cells.append(f"<td>{_number(r[f'{m}_host'])}</td><td>{_number(r[f'{m}_iqp'])}</td>"
                         f"<td class='{_change_class(d, lower[m])}'>{_number(d)}</td>")
        tag = " class='mean'" if r["image"] == "mean" else ""
        body.append(f"<tr{tag}><td>{esc(r['image'])}</td>{''.join(cells)}</tr>")
    return head + "".join(body)


def _sweep_table(table: list[list]) -> str:
    """The sweep table (:func:`iqp_plugin.report.tables.sweep_table`), its last row named 'host alone'."""
    esc = html.escape
    head = "".join(f"<th>{esc(str(c))}</th>" for c in table[0])
    body = "".join(f"<tr><td>{'host alone' if row[0] == 'host' else f'{row[0]:g}'}</td>"
                   + "".join(f"<td>{_number(c)}</td>" for c in row[1:]) + "</tr>" for row in table[1:])
    return f"<tr>{head}</tr>{body}"


def write_html(out: Path, cards: list[tuple[str, str, bool, dict | None]], rows: list[dict], metrics: list[str],
               images: list[dict], sweep: list[list], lower: dict[str, bool], seconds: float,
               title: str = "Host alone vs host + IQP", skipped: list[str] = ()) -> None:
    """``index.html`` from the verdict cards (metric, kind, lower is better, :func:`~iqp_plugin.report.metrics.paired`
    result), the per-image rows (the mean first), what :func:`~iqp_plugin.report.pictures.detail_crops` returned
    per image (plus its row, note, grid and anchor) and the sweep table; ``skipped`` names the inputs left out
    (unreadable), shown under the title."""
    esc = html.escape
    counts = {w: sum(1 for *_, v in cards if v and v["verdict"] == w) for w in ("better", "worse", "same")}
    scored = sum(counts.values())
    overall = (f"host + IQP is <b class='good'>better on {counts['better']}</b>, <b class='bad'>worse on "
               f"{counts['worse']}</b> and the same (within noise) on {counts['same']} of {scored} metrics")
    first_metric = cards[0][0] if cards else None
    nav = "".join(f"<a href='#{esc(img['anchor'])}'>{esc(img['name'])}</a>" for img in images)
    sections = "".join(_image_section(img, metrics, lower, first_metric) for img in images)
    left_out = (f"<p class=\"overall bad\">{len(skipped)} unreadable input{'s' if len(skipped) != 1 else ''} left "
                f"out: {esc(', '.join(skipped))}</p>\n" if skipped else "")
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>IQP compare: {esc(title)}</title>
<style>
{_asset("report.css")}</style></head><body><main>
<h1>{esc(title)}</h1>
<p class="sub">{len(images)} image{'s' if len(images) != 1 else ''}, {seconds:.1f} s. Each card: the mean over the \
images, host alone &rarr;
host + IQP, and the mean paired difference &plusmn; its standard error; the verdict is 'same' within two standard \
errors. Files: <a href="metrics.csv">metrics.csv</a>,
<a href="metrics.md">metrics.md</a>, <a href="sweep.csv">sweep.csv</a>.</p>
{left_out}<p class="overall">{overall}.</p>
<div class="cards">{''.join(_card(*c) for c in cards)}</div>
<div class="plot"><h2>Metrics vs conditioning score</h2>\
<img src="sweep.png" alt="mean metrics vs the conditioning score"></div>
<h2>Images</h2><p class="sub">Drag across each image: the host alone on the left of the line, host + IQP on the \
right.</p>
<nav>{nav}</nav>
{sections}
<h2>Full tables</h2><h3>Per image (first row: the mean)</h3>
<div class="tablewrap"><table>{_metrics_table(rows, metrics, lower)}</table></div>
<h3>Mean metrics vs conditioning score</h3><div class="tablewrap"><table>{_sweep_table(sweep)}</table></div>
</main><script>
{_asset("report.js")}</script></body></html>
"""
    write_atomic(out / "index.html", page.encode())
