"""``make demo`` with the --fast budget: the whole flow writes its report, and a rerun reuses everything."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

from iqp_plugin.demo import HELDOUT_PHOTOS, STAGES, parse_args
from iqp_plugin.prior.score_files import sidecar_path
from tests.conftest import REPO


def run_demo(out):
    cmd = [sys.executable, "-m", "iqp_plugin.demo", "--out", str(out), "--fast"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout


def test_fast_demo_writes_report_and_rerun_reuses_everything(tmp_path):
    out = tmp_path / "demo"
    first = run_demo(out)
    report = out / "report"
    assert (report / "index.html").is_file() and "report: " in first
    table = (report / "metrics.md").read_text().splitlines()
    assert table[0].startswith("| image | niqe host") and table[2].startswith("| mean |") and "psnr" in table[0]
    assert "niqe (lower is better):" in first and "psnr (higher is better):" in first
    checkpoints = [out / "experiments" / f"demo_{name}" / "models" / "net_g_latest.pth"
                   for name in ("host_swinir", *STAGES)]
    assert all(p.is_file() for p in checkpoints)
    assert sorted(p.name for p in (out / "data" / "heldout_lq").iterdir()) == \
        sorted(p.name for p in (out / "data" / "heldout_gt").iterdir())
    trained, pristine = (sorted((out / "data" / f).iterdir()) for f in ("hq", "hq_pristine"))
    assert [p.name for p in trained] == [p.name for p in pristine]
    changed = [not np.array_equal(cv2.imread(str(a)), cv2.imread(str(b)))
               for a, b in zip(trained, pristine, strict=False)]
    assert sum(changed) == round(0.5 * len(trained))  # --contaminate 0.5 by default; pristine copies kept aside
    for name in ("host_swinir", *STAGES):  # --lq-from pristine by default: every training input from the pristine copy
        train = yaml.safe_load((out / "configs" / f"{name}.yml").read_text())["datasets"]["train"]
        assert (train["dataroot_gt"], train["dataroot_source"]) == ("data/hq", "data/hq_pristine"), name
        if name in ("predictor", "quality"):  # each top-scored target 16 times, as the benchmark's adopted command
            assert (train["top_copies"], train["top_percent"]) == (16, 40), name
    assert json.loads(sidecar_path(out / "data" / "hq_scores.csv").read_text())["norm"] == "rank"
    photo = lambda folder: {p.name.rsplit("_", 1)[0] for p in (out / "data" / folder).glob("*.png")}  # noqa: E731
    assert photo("heldout_hq") == set(HELDOUT_PHOTOS) and not photo("hq") & set(HELDOUT_PHOTOS)  # unseen scenes
    stamps = {p: p.stat().st_mtime_ns for p in [*checkpoints, report / "index.html", out / "data" / "hq_scores.csv"]}

    second = run_demo(out)
    assert "$ cd" not in second  # no command was run again
    assert all(f"{name:<10} {'reused':<7}" in second for name in ("data", "score", "host", *STAGES, "compare"))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert "niqe (lower is better):" in second


def test_other_options_need_another_output_folder(tmp_path):
    (tmp_path / "demo.json").write_text('{"fast": false}')
    cmd = [sys.executable, "-m", "iqp_plugin.demo", "--out", str(tmp_path), "--fast"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "use another --out" in done.stderr


def test_host_opt_needs_host_checkpoint():
    with pytest.raises(SystemExit):
        parse_args(["--host-opt", "{type: SwinIR}"])
