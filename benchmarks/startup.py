"""How fast the ``iqp`` command starts and scores, whole-process, against pyiqa's own command line.

Cases, each a fresh process, run interleaved round by round (the order rotated every round) so that a busy
machine slows them alike:

* ``iqp --help`` and ``iqp score --bogus`` (an argument error): the launcher alone; target < 1 s each;
* ``iqp score -i DIR -o CSV --replace``: NIQE, the default prior, on the first ``--count`` images of
  ``--data`` (copied into a temporary folder);
* ``pyiqa niqe -t DIR`` (``python -m pyiqa.pyiqa_cmd``): pyiqa's command on the same folder; target:
  ``iqp score`` at least 2x faster;
* ``iqp_plugin.register()``: what registering the project in BasicSR costs (context: ``iqp train``, ``restore``,
  ``compare`` and ``export`` pay it, ``score`` and ``--help`` do not).

Both scorers compute NIQE with pyiqa's defaults, so their mean scores are reported side by side as a check.

    python benchmarks/startup.py --data DIR [--count 500] [--repeats 3] [--out benchmarks/out/startup]
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import markdown_table, median, write_results  # noqa: E402
from iqp_plugin.io.files import image_files  # noqa: E402

TARGETS = {"help_s": 1.0, "arg_error_s": 1.0, "score_speedup": 2.0}


def log(msg: str) -> None:
    print(msg, flush=True)


def arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder of images (e.g. 150 px faces); the first --count are scored")
    p.add_argument("--count", type=int, default=500, help="images scored")
    p.add_argument("--repeats", type=int, default=3, help="measured rounds (each runs every case once)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "startup"))
    return p


def timed_run(cmd: list[str], cwd: Path) -> tuple[float, str]:
    """Wall-clock seconds of one process and its stdout; a failure is an error naming the command."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    expected = 2 if "--bogus" in cmd else 0
    if proc.returncode != expected:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
    return seconds, proc.stdout


def pyiqa_mean(stdout: str) -> float:
    """The mean score pyiqa's command prints (``'mean': np.float64(5.1)`` or ``'mean': 5.1``)."""
    found = re.search(r"'mean':\s*(?:np\.float64\()?([-0-9.eE+]+)", stdout)
    if not found:
        raise RuntimeError(f"no mean in pyiqa's output: {stdout[-500:]}")
    return float(found.group(1))


def iqp_mean(csv_path: Path) -> float:
    with open(csv_path, newline="") as f:
        values = [float(row["niqe"]) for row in csv.DictReader(f)]
    return sum(values) / len(values)


def main(argv: list[str] | None = None) -> dict:
    args = arg_parser().parse_args(argv)
    images = image_files(args.data)[: args.count]
    if len(images) < args.count:
        raise SystemExit(f"--data {args.data}: {len(images)} images, --count asks for {args.count}")
    from iqp_plugin.prior.offline import build_niqe_params

    build_niqe_params()  # pyiqa's command then finds NIQE's parameter file and never tries to download it
    os.environ["HF_HUB_OFFLINE"] = "1"  # inherited by every case
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="iqp_startup_") as tmp:
        tmp = Path(tmp)
        folder = tmp / "images"
        folder.mkdir()
        for path in images:
            shutil.copy2(path, folder / path.name)
        csv_path = tmp / "scores" / "scores.csv"
        cases = {
            "iqp --help": [py, "-m", "iqp_plugin.cli", "--help"],
            "iqp score (argument error)": [py, "-m", "iqp_plugin.cli", "score", "--bogus"],
            "iqp score": [py, "-m", "iqp_plugin.cli", "score", "-i", str(folder), "-o", str(csv_path), "--replace"],
            "pyiqa niqe -t DIR": [py, "-m", "pyiqa.pyiqa_cmd", "niqe", "-t", str(folder)],
            "iqp_plugin.register()": [py, "-c", "import iqp_plugin; iqp_plugin.register()"],
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        means = {}
        names = list(cases)
        for r in range(args.repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                seconds, stdout = timed_run(cases[name], REPO)
                times[name].append(seconds)
                if name == "iqp score":
                    means["iqp score"] = iqp_mean(csv_path)
                elif name.startswith("pyiqa"):
                    means["pyiqa"] = pyiqa_mean(stdout)
                log(f"round {r + 1}/{args.repeats} {name}: {seconds:.2f} s")
    med = {name: median(t) for name, t in times.items()}
    speedup = med["pyiqa niqe -t DIR"] / med["iqp score"]
    targets = [
        {"target": "iqp --help (s)", "value": med["iqp --help"], "limit": TARGETS["help_s"],
         "met": med["iqp --help"] < TARGETS["help_s"]},
        {"target": "iqp score with an argument error (s)", "value": med["iqp score (argument error)"],
         "limit": TARGETS["arg_error_s"], "met": med["iqp score (argument error)"] < TARGETS["arg_error_s"]},
        {"target": f"pyiqa niqe / iqp score, {args.count} images (x)", "value": speedup,
         "limit": TARGETS["score_speedup"], "met": speedup >= TARGETS["score_speedup"]},
    ]
    data = {"meta": {"data": Path(args.data).name, "count": args.count, "repeats": args.repeats,
                     "python": sys.version.split()[0], "cpus": os.cpu_count()},
            "times_s": times, "median_s": med, "mean_niqe": means, "targets": targets}
    rows = [[name, f"{med[name]:.2f}", f"{med[name] / med['iqp score']:.2f}x",
             ", ".join(f"{t:.2f}" for t in times[name])] for name in names]
    markdown = "\n".join([
        f"# Start-up and scoring, whole-process ({args.count} images of `{Path(args.data).name}`, "
        f"{args.repeats} interleaved rounds, {os.cpu_count()} CPUs)", "",
        markdown_table(["command", "median (s)", "/ iqp score", "runs (s)"], rows), "",
        f"Mean NIQE: iqp score {means['iqp score']:.4f}, pyiqa {means['pyiqa']:.4f}.", "",
        markdown_table(["target", "value", "limit", "status"],
                       [[t["target"], f"{t['value']:.2f}", f"{t['limit']:g}", "PASS" if t["met"] else "MISS"]
                        for t in targets])])
    paths = write_results(args.out, "startup", data, markdown)
    log("\n" + markdown + f"\n\nwrote {paths[0]} and {paths[1]}")
    return data


if __name__ == "__main__":
    main()
