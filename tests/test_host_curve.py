"""benchmarks/host_curve.py on the tiny budget: one host trained once, saved and evaluated along the way, a table and a
figure; a rerun trains nothing (plumbing only: no assertion on quality numbers)."""
import json

import pytest

from benchmarks import host_curve
from iqp_plugin.data.sample_data import write_crops
from tests.test_beyond_gt import PHOTOS


def test_tiny_curve_evaluates_every_saved_host_and_resumes(tmp_path):
    data, out = tmp_path / "hq", tmp_path / "curve"
    write_crops(data, 24, 96, seed=3, photos=PHOTOS)
    argv = ["--data", str(data), "--budget", "tiny", "--host", "swinir", "--iters", "4", "--every", "2",
            "--device", "cpu", "--out", str(out)]
    rows = host_curve.main(argv)["rows"]
    assert [r["iter"] for r in rows] == [2, 4]
    assert len({r["input"]["mean"] for r in rows}) == 1  # the same inputs at every point
    assert all(r["restores"] == (r["host gain over input (dB)"] >= 1) for r in rows)
    assert {"net_g_2.pth", "net_g_latest.pth"} <= {p.name for p in out.rglob("models/net_g_*.pth")}
    assert (out / "host_curve.png").stat().st_size > 0
    assert "| 2 |" in (out / "host_curve.md").read_text()
    trained = {p: p.stat().st_mtime_ns for p in out.rglob("net_g_*.pth")}
    again = host_curve.main(argv)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("net_g_*.pth")} == trained
    assert again["rows"] == json.loads((out / "host_curve.json").read_text())["rows"] == rows
    assert host_curve.main([*argv, "--saved"])["rows"] == rows  # evaluation only


def test_a_stopped_curve_goes_on_from_its_newest_state_and_saved_evaluates_what_is_there(tmp_path):
    data, out = tmp_path / "hq", tmp_path / "curve"
    write_crops(data, 24, 96, seed=3, photos=PHOTOS)
    argv = ["--data", str(data), "--budget", "tiny", "--host", "swinir", "--iters", "4", "--every", "2",
            "--device", "cpu", "--out", str(out)]
    with pytest.raises(SystemExit, match="no host saved yet"):
        host_curve.main([*argv, "--saved"])
    host_curve.main(argv)
    models = next(out.rglob("bgt_sw_host/models"))
    (models / "net_g_latest.pth").unlink()  # as if stopped after its save at iteration 2
    stopped = host_curve.main([*argv, "--saved"])
    assert [r["iter"] for r in stopped["rows"]] == [2] and stopped["meta"]["trained_to"] == 2
    host_curve.main(argv)
    log = next(out.rglob("logs/bgt_sw_host.log")).read_text()
    assert "Resuming training from epoch" in log and (models / "net_g_latest.pth").exists()


def test_the_end_of_a_training_counts_when_every_does_not_divide_it(tmp_path):
    models = tmp_path / "experiments" / "h" / "models"
    models.mkdir(parents=True)
    for label in ("3", "6", "latest"):
        (models / f"net_g_{label}.pth").touch()
    assert host_curve.saved_iterations(tmp_path, "h", 7, 3) == [3, 6, 7]
    (models / "net_g_latest.pth").unlink()  # stopped before the end
    assert host_curve.saved_iterations(tmp_path, "h", 7, 3) == [3, 6]


def test_every_longer_than_the_training_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="--every must lie in"):
        host_curve.main(["--data", str(tmp_path), "--iters", "4", "--every", "5"])
