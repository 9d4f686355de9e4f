"""``iqp compare`` on a tiny random SwinIR host + plug-in: every artefact, and numbers that match a recomputation."""
import csv

import cv2
import numpy as np
import pytest
import torch

from iqp_plugin.cli import run
from iqp_plugin.cli.compare import main as compare_main
from iqp_plugin.prior.offline import create_metric
from iqp_plugin.report.metrics import sharpness_ratio
from iqp_plugin.report.tables import verdict
from tests.test_restore import make_model, rand_img


def test_compare_writes_report_with_matching_numbers(tmp_path, capsys):
    config, *_ = make_model(tmp_path)
    src, gt_dir, out = tmp_path / "lr", tmp_path / "hr", tmp_path / "report"
    src.mkdir()
    gt_dir.mkdir()
    for i, (h, w) in enumerate([(56, 56), (48, 64)]):  # outputs >= 96 px for NIQE
        cv2.imwrite(str(src / f"img{i}_LR.png"), rand_img(h, w, seed=10 + i))
        cv2.imwrite(str(gt_dir / f"img{i}_HR.png"), rand_img(2 * h, 2 * w, seed=20 + i))
    run(compare_main, ["-i", str(src), "-o", str(out), "--config", str(config), "--gt", str(gt_dir),
                       "--metrics", "niqe", "--scores", "0.2,0.9", "--device", "cpu"])
    printed = capsys.readouterr().out
    for metric in ("niqe", "piqe", "psnr", "ssim", "sharpness"):
        assert any(line.startswith(f"{metric} (") and any(w in line for w in ("better", "worse", "same"))
                   for line in printed.splitlines())

    for name in ("metrics.csv", "metrics.md", "sweep.csv", "sweep.png", "index.html"):
        assert (out / name).stat().st_size > 0
    page = (out / "index.html").read_text()
    assert "grids/img0_LR.png" in page and "sweep.png" in page
    grid = cv2.imread(str(out / "grids" / "img0_LR.png"))
    assert grid.shape[0] > 112 and grid.shape[1] >= 4 * 112  # input | host | host+IQP | GT
    assert not [p for p in out.rglob("*.tmp")]

    with open(out / "metrics.csv", newline="") as f:
        rows = {r["image"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"mean", "img0_LR.png", "img1_LR.png"}
    niqe = create_metric("niqe")
    for name in ("img0_LR.png", "img1_LR.png"):
        gt = cv2.imread(str(gt_dir / name.replace("LR", "HR"))).astype(np.float64)
        for kind in ("host", "iqp"):
            saved = cv2.imread(str(out / "images" / kind / name))
            x = torch.from_numpy(cv2.cvtColor(saved, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)[None].float() / 255
            with torch.no_grad():
                assert float(rows[name][f"niqe_{kind}"]) == pytest.approx(float(niqe(x)), abs=1e-4)
            psnr = 10 * np.log10(255.0 ** 2 / np.mean((saved.astype(np.float64) - gt) ** 2))
            assert float(rows[name][f"psnr_{kind}"]) == pytest.approx(psnr, abs=1e-6)
            saved_rgb = cv2.cvtColor(saved, cv2.COLOR_BGR2RGB)
            gt_rgb = cv2.cvtColor(gt.astype(np.uint8), cv2.COLOR_BGR2RGB)
            assert float(rows[name][f"sharpness_{kind}"]) == pytest.approx(sharpness_ratio(saved_rgb, gt_rgb), rel=1e-5)
    with open(out / "sweep.csv", newline="") as f:
        sweep = list(csv.reader(f))
    assert sweep[0] == ["score", "niqe", "piqe", "psnr", "ssim", "sharpness"]
    assert [r[0] for r in sweep[1:]] == ["0.2", "0.9", "host"]
    for key in ("niqe_host", "niqe_iqp", "psnr_iqp"):
        assert float(rows["mean"][key]) == pytest.approx(np.mean([float(rows[n][key]) for n in rows if n != "mean"]))
    assert float(rows["mean"]["niqe_iqp"]) != float(rows["mean"]["niqe_host"])  # the plug-in changes the output


def test_metric_that_cannot_score_is_left_out(tmp_path, capsys):
    config, *_ = make_model(tmp_path)
    cv2.imwrite(str(tmp_path / "small.png"), rand_img(16, 16))  # 32 px outputs: too small for NIQE
    with pytest.warns(UserWarning, match="niqe cannot score"):
        run(compare_main, ["-i", str(tmp_path / "small.png"), "-o", str(tmp_path / "report"), "--config", str(config),
                           "--metrics", "niqe", "--heldout", "", "--scores", "0.5", "--device", "cpu"])
    assert "niqe: not scored (the metric failed on every image)" in capsys.readouterr().out
    assert (tmp_path / "report" / "index.html").is_file()


def test_verdict_is_same_within_two_standard_errors():
    host = [5.0, 6.0, 7.0, 8.0]
    # paired differences -0.3, +0.1, -0.2, +0.2: mean -0.05, standard error 0.119
    assert "same (within noise)" in verdict("niqe", host, [4.7, 6.1, 6.8, 8.2], lower_better=True)
    consistent = [h - 0.2 + d for h, d in zip(host, [0.01, -0.01, 0.02, -0.02], strict=False)]  # -0.2 +- 0.009
    assert ": better, " in verdict("niqe", host, consistent, lower_better=True)
    assert ": worse, " in verdict("psnr", host, consistent, lower_better=False)
    line = verdict("psnr", host, consistent, lower_better=False)
    assert "(-0.2000 ± 0.0091 s.e., 4 images)" in line and "mean 6.5000 -> 6.3000" in line
    assert ": worse, " in verdict("psnr", [30.0], [29.0], lower_better=False)  # one image: no noise estimate
    assert "same" in verdict("psnr", [30.0], [30.0], lower_better=False)
    nan = float("nan")
    assert "(-0.2000 ± 0.0091 s.e., 4 images)" in verdict("psnr", [*host, 1.0], [*consistent, nan], lower_better=False)
    assert "not scored" in verdict("niqe", [nan, nan], [nan, 1.0], lower_better=True)


@pytest.mark.parametrize("extra, message", [(["--scores", "0.5,2"], "scores must lie in [0, 1]"),
                                            (["--gt", "GT"], "no GT in")])
def test_compare_user_errors_exit_2(tmp_path, capsys, extra, message):
    config, *_ = make_model(tmp_path)
    cv2.imwrite(str(tmp_path / "a.png"), rand_img(16, 16))
    (tmp_path / "GT").mkdir()
    cv2.imwrite(str(tmp_path / "GT" / "b.png"), rand_img(32, 32))
    extra = [str(tmp_path / e) if e == "GT" else e for e in extra]
    with pytest.raises(SystemExit) as exc:
        run(compare_main, ["-i", str(tmp_path / "a.png"), "-o", str(tmp_path / "r"), "--config", str(config), *extra])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_gt_sizes_are_all_checked_before_anything_is_written(tmp_path, capsys):
    config, *_ = make_model(tmp_path)
    src, gt_dir, out = tmp_path / "lr", tmp_path / "hr", tmp_path / "report"
    src.mkdir()
    gt_dir.mkdir()
    for i in range(3):
        cv2.imwrite(str(src / f"img{i}.png"), rand_img(16, 16, seed=i))
        cv2.imwrite(str(gt_dir / f"img{i}.png"), rand_img(32, 32 if i != 2 else 30, seed=i))
    with pytest.raises(SystemExit) as exc:
        run(compare_main, ["-i", str(src), "-o", str(out), "--config", str(config), "--gt", str(gt_dir),
                           "--metrics", "niqe", "--heldout", "", "--scores", "0.5", "--device", "cpu"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.splitlines()[-1] == (
        f"iqp: error: GT {gt_dir / 'img2.png'} is 30x32, but the output of img2.png will be 32x32 "
        "(2x its 16x16 input): give GT images of the output's size")
    assert not out.exists()


def test_report_folder_that_is_a_file_fails_before_the_model_loads(tmp_path, capsys, monkeypatch):
    from iqp_plugin.cli import compare

    config, *_ = make_model(tmp_path)
    cv2.imwrite(str(tmp_path / "a.png"), rand_img(16, 16))
    (tmp_path / "report").write_text("notes")
    monkeypatch.setattr(compare, "load_from_args", lambda args: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit) as exc:
        run(compare_main, ["-i", str(tmp_path / "a.png"), "-o", str(tmp_path / "report"), "--config", str(config)])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err == f"iqp: error: -o {tmp_path / 'report'} is a file, not a folder: choose another -o\n"
    assert (tmp_path / "report").read_text() == "notes"
