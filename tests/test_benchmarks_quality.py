"""benchmarks/quality.py and benchmarks/overoptimization.py run end to end at the tiny budget and write
well-formed results (no timing or quality asserts: tiny trainings only check the plumbing)."""
import json
import math
import subprocess
import sys

import pytest

from tests.conftest import REPO, SHARED_DATA

SYSTEMS = {"input (LQ)", "host", "host + IQP", "host fine-tuned"}


def run_script(script: str, *args: str) -> None:
    cmd = [sys.executable, str(REPO / "benchmarks" / script), "--budget", "tiny", "--device", "cpu",
           "--data", str(SHARED_DATA), *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def quality_out(tmp_path_factory):
    """OUT of one tiny quality.py run (its work folder is reused by the over-optimisation test)."""
    if not (SHARED_DATA / "faces_hq_celeba128").is_dir() or not (SHARED_DATA / "faces_real_lq").is_dir():
        pytest.skip(f"face images not available: {SHARED_DATA}/faces_hq_celeba128 and faces_real_lq are missing "
                    "(../shared/data sits beside the repo on dev machines)")
    out = tmp_path_factory.mktemp("bench") / "quality"
    run_script("quality.py", "--out", str(out))
    return out


def test_quality_tiny_writes_json_and_markdown(quality_out):
    data = json.loads((quality_out / "quality.json").read_text())
    meta = data["meta"]
    assert meta["budget"] == "tiny" and meta["device"] == "cpu" and meta["wall_s"] > 0
    assert meta["finetune_iters"] == sum(meta["iters"][s] for s in ("codebook", "predictor", "quality"))
    synthetic, real = data["results"]["synthetic"], data["results"]["real"]
    assert set(synthetic) == SYSTEMS | {"GT (reference)"} and set(real) == SYSTEMS
    for system in SYSTEMS:
        assert set(synthetic[system]) == {"niqe", "piqe", "psnr", "ssim"} and set(real[system]) == {"niqe", "piqe"}
        for stat in [*synthetic[system].values(), *real[system].values()]:
            assert math.isfinite(stat["mean"]) and stat["sem"] >= 0 and stat["n"] >= 1
    assert set(data["deltas"]) == {"host", "host fine-tuned"}
    assert set(data["deltas"]["host"]["synthetic"]) == {"niqe", "piqe", "psnr", "ssim"}
    markdown = (quality_out / "quality.md").read_text()
    assert "| host + IQP |" in markdown and "| host fine-tuned |" in markdown and "Wall time" in markdown


def test_overoptimization_tiny_reuses_stage_2_and_writes_curves(quality_out, tmp_path):
    out = tmp_path / "overoptimization"
    run_script("overoptimization.py", "--out", str(out), "--work", str(quality_out / "work_tiny"))
    data = json.loads((out / "overoptimization.json").read_text())
    assert data["meta"]["budget"] == "tiny" and data["meta"]["iters"] == 4 and data["meta"]["every"] == 2
    assert set(data["curves"]) == {"discrete", "continuous"}
    for points in data["curves"].values():
        assert [p["iter"] for p in points] == [0, 2, 4]
        assert all(math.isfinite(p[m]) for p in points for m in ("niqe", "piqe", "psnr"))
    assert data["meta"]["start"].endswith("net_g_latest.pth")  # both runs start from the same stage-2 plug-in
    assert isinstance(data["claim"]["holds"], bool) and data["claim"]["text"].startswith("The paper's claim")
    assert (out / "overoptimization.png").stat().st_size > 0
    assert "| iter |" in (out / "overoptimization.md").read_text()
