"""``iqp score``: score image folders with an NR-IQA prior into a CSV, and summarise such a CSV.

    iqp score -i DIR [-i DIR ...] -o scores.csv [--metrics niqe,piqe] [--weights 1,1] [--batch N]
              [--device auto] [--norm minmax|fixed]
    iqp score --summary scores.csv [--top 20]
    torchrun --nproc_per_node N -m iqp_plugin.scoring -i DIR -o scores.csv     (files sharded over ranks;
    torchrun --nproc_per_node N --no-python iqp score -i DIR -o scores.csv       the same)

Raw scores go to one partial CSV per rank as they are computed, so an interrupted run resumes
where it stopped; at the end rank 0 writes ``scores.csv`` (imagename, one raw column per metric,
normalised ``score``) and the sidecar ``scores.json`` (normalisation constants) atomically.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from iqp_plugin.files import write_atomic
from iqp_plugin.quality import DEFAULT_PRIOR, Normalizer, Prior, create_prior

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
_NOTES = {
    "alpha": "images with an alpha channel: alpha ignored, RGB scored",
    "grayscale": "grayscale images: scored as RGB with three equal channels",
    "16-bit": "16-bit images: scored as float RGB at full precision",
}


@dataclass(frozen=True)
class Item:
    name: str  # path relative to its input root, posix separators
    path: Path


def sidecar_path(csv_path: str | Path) -> Path:
    """The JSON with the normalisation constants beside a scores CSV."""
    return Path(csv_path).with_suffix(".json")


def list_images(roots: list[str | Path]) -> list[Item]:
    """Image files under the roots, recursively, sorted by name; a name given by two roots is an error."""
    items: dict[str, Item] = {}
    for root in map(Path, roots):
        if not root.is_dir():
            raise FileNotFoundError(f"input folder not found: {root}")
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                name = path.relative_to(root).as_posix()
                if name in items:
                    raise ValueError(f"two inputs give the image name '{name}': {items[name].path} and {path}")
                items[name] = Item(name, path)
    return [items[k] for k in sorted(items)]


def load_image(path: str | Path) -> tuple[torch.Tensor, str | None]:
    """An image as a float RGB tensor (3, H, W) in [0,1], and a note on what was converted (or None)."""
    with Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode in ("I;16", "I;16B", "I;16L", "I"):
            arr, note = np.asarray(im, dtype=np.float32)[..., None].repeat(3, -1) / 65535.0, "16-bit"
        else:
            has_alpha = mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info)
            note = "alpha" if has_alpha else "grayscale" if mode in ("L", "1") else None
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).clamp(0, 1), note


def score_batch(modules: dict[str, torch.nn.Module], x: torch.Tensor) -> list[dict[str, float]]:
    """Raw scores of a batch (B, 3, H, W) in [0,1]: one {metric: value} per image."""
    with torch.no_grad():
        columns = {name: m(x).reshape(-1).double().tolist() for name, m in modules.items()}
    return [{name: columns[name][i] for name in modules} for i in range(x.shape[0])]


def _read_raw(path: Path, metrics: tuple[str, ...]) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Scored rows {name: raw} and failures {name: error} of a partial or final CSV (broken rows skipped)."""
    scored, failed = {}, {}
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return scored, failed
    header = rows[0]
    if header[:-1] != ["imagename", *metrics] or header[-1] not in ("error", "score"):
        raise ValueError(f"{path} holds scores for {header[1:-1]}, not {list(metrics)}: "
                         "delete it or write to another output")
    for row in rows[1:]:
        if len(row) != len(header):
            continue  # a row cut short by an interruption
        error = row[-1] if header[-1] == "error" else ""
        if error:
            failed[row[0]] = error
            continue
        try:
            scored[row[0]] = {m: float(v) for m, v in zip(metrics, row[1:1 + len(metrics)])}
        except ValueError:
            continue
    return scored, failed


def _partials(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f"{out.name}.rank*.partial.csv"))


def _open_partial(path: Path, metrics: tuple[str, ...]):
    """Open a rank's partial CSV for appending (header on a new file; a cut-off last line is ended)."""
    if path.exists() and path.stat().st_size:
        _read_raw(path, metrics)  # checks the header
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\r\n")
        f = open(path, "a", newline="")
    else:
        f = open(path, "w", newline="")
        csv.writer(f).writerow(["imagename", *metrics, "error"])
    return f


def _dist_init() -> tuple[int, int, bool]:
    """(rank, world size, whether this call started the process group); gloo is enough for a barrier."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
        return dist.get_rank(), dist.get_world_size(), True
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    return 0, 1, False


def _device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(name)


def _score_items(items: list[Item], prior: Prior, partial: Path, batch: int, device: torch.device,
                 progress: bool) -> None:
    """Score ``items`` and append their rows to ``partial``, flushing after every batch."""
    modules = prior.create_metrics(device)
    noted: set[str] = set()
    with _open_partial(partial, prior.metrics) as f, tqdm(total=len(items), disable=not progress,
                                                          desc="scoring", unit="img") as bar:
        writer = csv.writer(f)

        def write(rows):
            writer.writerows(rows)
            f.flush()
            bar.update(len(rows))

        def flush(pending):
            try:
                results = score_batch(modules, torch.stack([x for _, x in pending]).to(device))
            except Exception as err:  # noqa: BLE001  (retry one by one to isolate the image at fault)
                if len(pending) > 1:
                    for one in pending:
                        flush([one])
                    return
                results = [f"metric failed: {err}"]
            rows = []
            for (item, _), raw in zip(pending, results):
                bad = raw if isinstance(raw, str) else ", ".join(
                    f"{m} = {v}" for m, v in raw.items() if not math.isfinite(v))
                if bad:
                    warnings.warn(f"{item.path}: {bad}; skipped")
                    rows.append([item.name, *[""] * len(prior.metrics), bad])
                else:
                    rows.append([item.name, *[raw[m] for m in prior.metrics], ""])
            write(rows)

        pending = []
        for item in items:
            try:
                x, note = load_image(item.path)
            except Exception as err:  # noqa: BLE001  (any unreadable file is reported and skipped)
                warnings.warn(f"{item.path}: cannot read ({err}); skipped")
                write([[item.name, *[""] * len(prior.metrics), f"unreadable: {err}"]])
                continue
            if note and note not in noted:
                noted.add(note)
                warnings.warn(_NOTES[note])
            if pending and (x.shape != pending[0][1].shape or len(pending) >= batch):
                flush(pending)
                pending = []
            pending.append((item, x))
        if pending:
            flush(pending)


def _merge(items: list[Item], prior: Prior, out: Path, norm: str) -> dict:
    """Write the final CSV and sidecar from earlier final rows and all partial files; remove the partials."""
    scored, failed = {}, {}
    for path in ([out] if out.exists() else []) + _partials(out):
        s, f = _read_raw(path, prior.metrics)
        scored.update(s)
        failed.update(f)
    names = [it.name for it in items if it.name in scored]
    failed = {it.name: failed.get(it.name, "not scored") for it in items if it.name not in scored}
    normalizer = Normalizer.fit(prior, {m: [scored[n][m] for n in names] for m in prior.metrics}, norm)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["imagename", *prior.metrics, "score"])
    for n in names:
        writer.writerow([n, *[scored[n][m] for m in prior.metrics], normalizer(scored[n])])
    write_atomic(out, buf.getvalue())
    normalizer.save(sidecar_path(out), count=len(names),
                    failed=[{"imagename": n, "error": e} for n, e in failed.items()])
    for path in _partials(out):
        path.unlink()
    return {"scored": len(names), "failed": failed}


def score_folders(roots: list[str | Path], out: str | Path, prior: Prior | None = None, batch: int = 16,
                  device: str = "auto", norm: str = "minmax", progress: bool = True) -> dict | None:
    """Score every image under ``roots`` into the CSV ``out`` (resuming a partial run); see the module doc.

    Under torchrun each rank scores its shard; rank 0 merges and returns {'scored', 'failed'}, others None.
    """
    import torch.distributed as dist

    prior = prior or create_prior(DEFAULT_PRIOR)
    out = Path(out)
    if sidecar_path(out) == out:
        raise ValueError(f"the output should be a .csv file, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    items = list_images(roots)
    rank, world, owned = _dist_init()
    try:
        done = set()
        for path in ([out] if out.exists() else []) + _partials(out):
            done |= set(_read_raw(path, prior.metrics)[0])
        todo = [it for it in items[rank::world] if it.name not in done]
        partial = out.parent / f"{out.name}.rank{rank}.partial.csv"
        if todo:
            _score_items(todo, prior, partial, batch, _device(device), progress and rank == 0)
        if world > 1:
            dist.barrier()
        merged = _merge(items, prior, out, norm) if rank == 0 else None
        if world > 1:
            dist.barrier()  # leave together: a rank that exits while rank 0 merges can make gloo abort it
        return merged
    finally:
        if owned:
            dist.destroy_process_group()


def load_scores(csv_path: str | Path) -> dict[str, float]:
    """{imagename: score} from a scores CSV, for datasets that condition on the prior."""
    with open(csv_path, newline="") as f:
        return {row["imagename"]: float(row["score"]) for row in csv.DictReader(f)}


def summarize(csv_path: str | Path, top: float = 20.0) -> dict:
    """Statistics per column, histogram PNGs, and the score threshold that keeps the top ``top`` % as HQ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    csv_path = Path(csv_path)
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{csv_path} has no scored images")
    columns = [c for c in rows[0] if c != "imagename"]
    values = {c: np.array([float(r[c]) for r in rows]) for c in columns}
    score = values["score"]
    threshold = float(np.quantile(score, 1 - top / 100))
    order = np.argsort(score, kind="stable")
    summary = {
        "csv": str(csv_path), "count": len(rows), "top_percent": top, "hq_threshold": threshold,
        "hq_count": int((score >= threshold).sum()),
        "stats": {c: dict(zip(("mean", "std", "min", "q25", "median", "q75", "max"),
                              map(float, (v.mean(), v.std(), *np.quantile(v, [0, .25, .5, .75, 1])))))
                  for c, v in values.items()},
        "lowest": [rows[i]["imagename"] for i in order[:5]],
        "highest": [rows[i]["imagename"] for i in order[::-1][:5]],
        "histograms": {},
    }
    sidecar = sidecar_path(csv_path)
    if sidecar.exists():
        summary["failed"] = json.loads(sidecar.read_text()).get("failed", [])
    for c, v in values.items():
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.hist(v, bins=50, color="tab:blue")
        if c == "score":
            ax.axvline(threshold, color="tab:red", label=f"top {top:g}%: >= {threshold:.3f}")
            ax.legend()
        ax.set(title=f"{csv_path.name}: {c}", xlabel=c, ylabel="images")
        fig.tight_layout()
        png = csv_path.with_name(f"{csv_path.stem}_hist_{c}.png")
        fig.savefig(png, dpi=100)
        plt.close(fig)
        summary["histograms"][c] = str(png)
    write_atomic(csv_path.with_name(f"{csv_path.stem}_summary.json"), json.dumps(summary, indent=2))
    return summary


def markdown(summary: dict) -> str:
    """The summary as a markdown table and a few lines of text."""
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
    p = argparse.ArgumentParser(prog="iqp score", description=__doc__.split("\n\n")[0])
    p.add_argument("-i", "--input", action="append", help="image folder (repeatable; searched recursively)")
    p.add_argument("-o", "--output", help="scores CSV to write (resumed when it or its partial files exist)")
    p.add_argument("--metrics", default=DEFAULT_PRIOR,
                   help=f"named prior or comma list of pyiqa NR metrics (default: {DEFAULT_PRIOR} = niqe)")
    p.add_argument("--weights", help="comma list of weights, one per metric (default: equal)")
    p.add_argument("--batch", type=int, default=16, help="images per batch (only same-size images share one)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--norm", choices=("minmax", "fixed"), default="minmax",
                   help="map raw scores to [0,1] by the dataset's min-max or by pyiqa's nominal range")
    p.add_argument("--summary", metavar="CSV", help="summarise a scores CSV instead of scoring")
    p.add_argument("--top", type=float, default=20.0, help="percent of images above the HQ threshold")
    args = p.parse_args(argv)
    if args.summary:
        print(markdown(summarize(args.summary, args.top)))
        return
    if not args.input or not args.output:
        p.error("scoring needs -i DIR and -o CSV (or --summary CSV)")
    weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    result = score_folders(args.input, args.output, create_prior(args.metrics, weights), max(1, args.batch),
                           args.device, args.norm)
    if result is not None:
        print(f"{result['scored']} images scored into {args.output} (constants in {sidecar_path(args.output)})")
        if result["failed"]:
            print(f"{len(result['failed'])} skipped: " + ", ".join(result["failed"]))


if __name__ == "__main__":
    from iqp_plugin.cli import run

    run(main)
