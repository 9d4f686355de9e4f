"""Tests of iqp_plugin.data.datasets: online degradations, paired folders, scores, odd image formats."""
import csv
import json
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from basicsr.data import build_dataset

import iqp_plugin  # noqa: F401  (before basicsr: torchvision alias and registrations)
from iqp_plugin.data.datasets import IQPDegradedDataset, IQPPairedDataset

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_FACES, SET5 = SHARED_DATA / "faces_hq_celeba128", SHARED_DATA / "sr_set5_x4"
NO_SHARED_DATA = f"shared data folder {SHARED_DATA} is absent (it exists only on the project's own machines)"


def _image(size, seed, channels=3):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (size[0], size[1], channels)).astype(np.float32), (0, 0), 2)
    return np.clip(img, 0, 255).astype(np.uint8)


def _write_scores(path, scores):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["imagename", "niqe", "score"])
        for name, score in scores.items():
            writer.writerow([name, 5.0, score])
    return str(path)


@pytest.fixture
def hq_folder(tmp_path):
    root = tmp_path / "hq"
    (root / "sub").mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(root / f"img{i}.png"), _image((80, 72), i))
    cv2.imwrite(str(root / "sub" / "small.jpg"), _image((40, 40), 9))
    return root


def _degraded(root, **opt):
    return IQPDegradedDataset({"dataroot_gt": str(root), "gt_size": 64, "phase": "val", **opt})


def test_degradation_is_deterministic_per_seed_epoch_index(hq_folder):
    ds = _degraded(hq_folder, phase="train", seed=7)
    first = ds[1]["lq"]
    assert torch.equal(first, _degraded(hq_folder, phase="train", seed=7)[1]["lq"])
    assert not torch.equal(first, ds[2]["lq"])
    assert not torch.equal(first, _degraded(hq_folder, phase="train", seed=8)[1]["lq"])
    ds.set_epoch(1)
    assert not torch.equal(first, ds[1]["lq"])
    ds.set_epoch(0)
    assert torch.equal(first, ds[1]["lq"])


def test_lq_from_a_source_folder_shares_the_gt_crop_and_flip(hq_folder, tmp_path):
    """dataroot_source: the LQ is made from the source image of the same name (here the GT's negative, no
    degradation), cropped and flipped exactly as the GT; without it, the LQ is made from the GT itself."""
    source = tmp_path / "source"
    for path in hq_folder.rglob("*.*"):
        out = source / path.relative_to(hq_folder)
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out.with_suffix(".png")), 255 - cv2.imread(str(path)))
        if path.suffix != ".png":
            (out.with_suffix(".png")).rename(out)  # same name as the GT (lossless content, the GT's suffix)
    plain = dict(blur_sigma=None, downsample_range=None, noise_range=None, jpeg_range=None, use_crop=True,
                 phase="train", seed=3, gt_size=32)
    ds = _degraded(hq_folder, dataroot_source=str(source), **plain)
    for i in range(len(ds)):
        sample = ds[i]
        torch.testing.assert_close(sample["lq"], 1 - sample["gt"], atol=1e-6, rtol=0)
        assert sample["lq_path"].startswith(str(source))
    same = _degraded(hq_folder, **plain)[0]
    assert torch.equal(same["lq"], same["gt"]) and torch.equal(same["gt"], ds[0]["gt"])
    (source / "img1.png").unlink()
    with pytest.raises(FileNotFoundError, match="dataroot_source .* lacks 1 of the GT images"):
        _degraded(hq_folder, dataroot_source=str(source), **plain)


def test_seeded_sample_leaves_global_rng_alone_and_unseeded_uses_it(hq_folder):
    random.seed(3), np.random.seed(3)
    expected = random.random(), np.random.rand()
    random.seed(3), np.random.seed(3)
    _degraded(hq_folder, seed=0)[0]
    assert (random.random(), np.random.rand()) == expected
    ds = _degraded(hq_folder, phase="train")
    assert ds.seed is None
    np.random.seed(5), random.seed(5)
    a = ds[0]["lq"]
    np.random.seed(5), random.seed(5)
    assert torch.equal(a, ds[0]["lq"])


def test_face_and_sr_shapes_and_lq_differs(hq_folder):
    face = _degraded(hq_folder)[0]
    assert face["lq"].shape == face["gt"].shape == (3, 64, 64)
    assert (face["lq"] - face["gt"]).abs().mean() > 0.01
    assert face["lq_path"] == face["gt_path"] and "score" not in face
    sr = _degraded(hq_folder, scale=4)[0]
    assert sr["lq"].shape == (3, 16, 16) and sr["gt"].shape == (3, 64, 64)
    assert _degraded(hq_folder, scale=4, lq_downscale=False)[0]["lq"].shape == (3, 64, 64)
    with pytest.raises(ValueError, match="multiple of scale"):
        _degraded(hq_folder, scale=3)


def test_image_range_minus_one_to_one(hq_folder):
    unit, signed = _degraded(hq_folder)[0], _degraded(hq_folder, image_range=[-1, 1])[0]
    for key in ("lq", "gt"):
        assert signed[key].min() >= -1 and signed[key].max() <= 1 and signed[key].min() < 0
        torch.testing.assert_close(signed[key], unit[key] * 2 - 1)


def test_scores_are_returned_and_missing_ones_named(hq_folder, tmp_path):
    names = ["img0.png", "img1.png", "img2.png", "sub/small.jpg"]
    csv_path = _write_scores(tmp_path / "scores.csv", {n: 0.1 * (i + 1) for i, n in enumerate(names)})
    ds = _degraded(hq_folder, score_csv=csv_path)
    assert ds[3]["gt_path"].endswith("small.jpg") and ds[3]["score"].dtype == torch.float32
    torch.testing.assert_close(ds[3]["score"], torch.tensor(0.4))
    partial = _write_scores(tmp_path / "partial.csv", {"img0.png": 0.5})
    with pytest.raises(ValueError, match=r"img1\.png") as err:
        _degraded(hq_folder, score_csv=partial)
    assert "partial.csv" in str(err.value) and "sub/small.jpg" in str(err.value)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        _degraded(hq_folder, score_csv=_write_scores(tmp_path / "bad.csv", {n: 3.0 for n in names}))
    (tmp_path / "nocol.csv").write_text("imagename,niqe\nimg0.png,4.0\n")
    with pytest.raises(ValueError, match="'score'"):
        _degraded(hq_folder, score_csv=str(tmp_path / "nocol.csv"))


def test_top_copies_repeat_the_top_scored_targets_each_with_its_score(hq_folder, tmp_path):
    """top_copies C, top_percent P: every target once, then those at or above the scores' (1 - P/100) quantile
    C - 1 times more, each copy with its original's score and a crop and degradation of its own."""
    names = ["img0.png", "img1.png", "img2.png", "sub/small.jpg"]
    csv_path = _write_scores(tmp_path / "scores.csv", {n: s for n, s in zip(names, (0.9, 0.1, 0.6, 0.3), strict=False)})
    ds = _degraded(hq_folder, score_csv=csv_path, top_copies=3, top_percent=50, phase="train", seed=0)
    assert len(ds) == 4 + 2 * 2 and ds.samples == [0, 1, 2, 3, 0, 0, 2, 2]
    samples = [ds[i] for i in range(len(ds))]
    assert [Path(x["gt_path"]).name for x in samples[4:]] == ["img0.png", "img0.png", "img2.png", "img2.png"]
    assert [round(float(x["score"]), 6) for x in samples] == [0.9, 0.1, 0.6, 0.3, 0.9, 0.9, 0.6, 0.6]
    assert not torch.equal(samples[0]["lq"], samples[4]["lq"])  # a copy is another sample, not a repeat of it
    assert len(_degraded(hq_folder, score_csv=csv_path, top_copies=1, top_percent=50)) == 4
    assert len(_degraded(hq_folder, score_csv=csv_path, top_copies=2, top_percent=100)) == 8
    for bad, match in (({"top_copies": 2, "top_percent": 40}, "needs score_csv"),
                       ({"score_csv": csv_path, "top_copies": 0}, "top_copies must be a positive integer"),
                       ({"score_csv": csv_path, "top_copies": 2.5}, "top_copies must be a positive integer"),
                       ({"score_csv": csv_path, "top_copies": 2}, "needs top_percent"),
                       ({"score_csv": csv_path, "top_copies": 2, "top_percent": 0}, "needs top_percent"),
                       ({"score_csv": csv_path, "top_copies": 2, "top_percent": 140}, r"in \(0, 100\]")):
        with pytest.raises(ValueError, match=match):
            _degraded(hq_folder, **bad)


def test_grayscale_16bit_rgba_and_small_images_load(tmp_path):
    root = tmp_path / "odd"
    root.mkdir()
    cv2.imwrite(str(root / "gray.png"), cv2.cvtColor(_image((70, 70), 1), cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(root / "deep.png"), _image((70, 70), 2).astype(np.uint16) * 257)
    cv2.imwrite(str(root / "rgba.png"), _image((70, 70), 3, 4))
    cv2.imwrite(str(root / "tiny.png"), _image((20, 30), 4))
    stored = {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in root.iterdir()}
    assert stored["gray.png"].ndim == 2 and stored["rgba.png"].shape[2] == 4
    assert stored["deep.png"].dtype == np.uint16
    for use_crop in (False, True):
        ds = _degraded(root, use_crop=use_crop)
        for i in range(len(ds)):
            sample = ds[i]
            assert sample["gt"].shape == sample["lq"].shape == (3, 64, 64)
            assert 0 <= sample["gt"].min() and sample["gt"].max() <= 1
    deep = _degraded(root, gt_size=70)[0]  # 16-bit file, no resize: exactly the 8-bit values
    expected = _image((70, 70), 2)[:, :, ::-1].astype(np.float32) / 255
    np.testing.assert_allclose(deep["gt"].permute(1, 2, 0).numpy(), expected, atol=1e-6)


@pytest.fixture
def paired_folders(tmp_path):
    gt, lq = tmp_path / "HR", tmp_path / "LR"
    gt.mkdir(), lq.mkdir()
    for i in range(3):
        hr = _image((48, 40), i)
        cv2.imwrite(str(gt / f"img_{i:03d}_HR.png"), hr)
        cv2.imwrite(str(lq / f"img_{i:03d}_LR.png"), cv2.resize(hr, (10, 12), interpolation=cv2.INTER_AREA))
    return gt, lq


def test_paired_matching_crop_and_scores(paired_folders, tmp_path):
    gt, lq = paired_folders
    scores = _write_scores(tmp_path / "s.csv", {f"img_{i:03d}_HR.png": 0.3 for i in range(3)})
    opt = {"dataroot_gt": str(gt), "dataroot_lq": str(lq), "scale": 4, "score_csv": scores}
    val = IQPPairedDataset({**opt, "phase": "val"})
    sample = val[2]
    assert sample["lq_path"].endswith("img_002_LR.png") and sample["gt_path"].endswith("img_002_HR.png")
    assert sample["lq"].shape == (3, 12, 10) and sample["gt"].shape == (3, 48, 40)
    assert val[0]["score"].item() == pytest.approx(0.3)
    assert IQPPairedDataset({**opt, "phase": "val", "gt_size": 32})[0]["gt"].shape == (3, 32, 32)
    train = IQPPairedDataset({**opt, "phase": "train", "gt_size": 32, "use_rot": True, "seed": 1})
    a, b = train[1], train[1]
    assert a["lq"].shape == (3, 8, 8) and a["gt"].shape == (3, 32, 32)
    assert torch.equal(a["gt"], b["gt"]) and torch.equal(a["lq"], b["lq"])


def test_paired_unmatched_files_are_listed(paired_folders):
    gt, lq = paired_folders
    cv2.imwrite(str(lq / "stray.png"), _image((12, 10), 5))
    (gt / "img_001_HR.png").unlink()
    with pytest.raises(ValueError, match="Unmatched") as err:
        IQPPairedDataset({"dataroot_gt": str(gt), "dataroot_lq": str(lq), "scale": 4})
    assert "img_001_LR.png" in str(err.value) and "stray.png" in str(err.value)


def test_build_dataset_by_type_name_and_collate(hq_folder, tmp_path):
    names = ["img0.png", "img1.png", "img2.png", "sub/small.jpg"]
    scores = _write_scores(tmp_path / "scores.csv", dict.fromkeys(names, 0.9))
    ds = build_dataset({"name": "toy", "type": "IQPDegradedDataset", "dataroot_gt": str(hq_folder),
                        "io_backend": {"type": "disk"}, "gt_size": 32, "phase": "train", "score_csv": scores})
    assert isinstance(ds, IQPDegradedDataset) and len(ds) == 4
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["lq"].shape == (4, 3, 32, 32) and batch["score"].shape == (4,)
    with pytest.raises(ValueError, match="disk"):
        build_dataset({"name": "toy", "type": "IQPDegradedDataset", "dataroot_gt": str(hq_folder),
                       "io_backend": {"type": "lmdb"}})


@pytest.mark.skipif(not REAL_FACES.is_dir(), reason=NO_SHARED_DATA)
def test_real_faces_degrade_deterministically():
    ds = IQPDegradedDataset({"dataroot_gt": str(REAL_FACES), "gt_size": 128, "phase": "val",
                             "image_range": [-1, 1]})
    assert len(ds) == 900
    for i in (0, 450, 899):
        sample = ds[i]
        assert sample["lq"].shape == sample["gt"].shape == (3, 128, 128)
        assert (sample["lq"] - sample["gt"]).abs().mean() > 0.02
        assert torch.equal(sample["lq"], ds[i]["lq"])


@pytest.mark.skipif(not SET5.is_dir(), reason=NO_SHARED_DATA)
def test_real_set5_pairs_by_name():
    ds = IQPPairedDataset({"dataroot_gt": str(SET5 / "HR"), "dataroot_lq": str(SET5 / "LR"), "scale": 4,
                           "phase": "val"})
    assert len(ds) == 5
    for i in range(len(ds)):
        sample = ds[i]
        assert Path(sample["lq_path"]).name == Path(sample["gt_path"]).name.replace("_HR", "_LR")
        assert sample["gt"].shape[1:] == tuple(4 * n for n in sample["lq"].shape[1:])


# ---------------------------------------------------------------- images a metric cannot score, bad CSVs
def test_image_a_metric_cannot_score_is_left_out_with_a_warning(tmp_path):
    """The policy, as ``iqp score`` and the datasets apply it: a flat image NIQE cannot score gets no row, is
    listed in the sidecar's failures, and the dataset leaves it out, naming it, instead of stopping."""
    from iqp_plugin.prior.scoring import score_folders

    root = tmp_path / "hq"
    root.mkdir()
    for i in range(2):
        cv2.imwrite(str(root / f"img{i}.png"), _image((96, 96), i))
    cv2.imwrite(str(root / "flat.png"), np.full((96, 96, 3), 3, np.uint8))
    csv_path = tmp_path / "scores.csv"
    with pytest.warns(UserWarning, match=r"flat\.png"):
        result = score_folders([root], csv_path, progress=False)
    assert result["scored"] == 2 and list(result["failed"]) == ["flat.png"]
    with pytest.warns(UserWarning, match=r"1 of 3 images .* left out: flat\.png \(metric failed"):
        ds = _degraded(root, score_csv=str(csv_path))
    assert len(ds) == 2 and [Path(ds[i]["gt_path"]).name for i in range(2)] == ["img0.png", "img1.png"]
    assert ds[1]["score"].item() in (0.0, 1.0)


def _write_sidecar(csv_path, failed):
    sidecar = Path(csv_path).with_suffix(".json")
    sidecar.write_text(json.dumps({"metrics": ["niqe"], "weights": [1.0], "lower_better": [True], "norm": "minmax",
                                   "ranges": {"niqe": [1.0, 9.0]}, "failed": failed}))


def test_paired_dataset_leaves_out_the_pair_of_an_unscored_target(paired_folders, tmp_path):
    gt, lq = paired_folders
    scores = _write_scores(tmp_path / "s.csv", {"img_000_HR.png": 0.2, "img_002_HR.png": 0.6})
    _write_sidecar(scores, [{"imagename": "img_001_HR.png", "error": "metric failed: flat"}])
    with pytest.warns(UserWarning, match=r"img_001_HR\.png \(metric failed: flat\)"):
        ds = IQPPairedDataset({"dataroot_gt": str(gt), "dataroot_lq": str(lq), "scale": 4, "score_csv": scores,
                               "phase": "val"})
    assert len(ds) == 2 and ds[1]["lq_path"].endswith("img_002_LR.png") and ds[1]["score"].item() == pytest.approx(0.6)
    _write_sidecar(scores, [])  # not a failure of the scorer: still an error
    with pytest.raises(ValueError, match=r"1 of 3 images have no score in .*s\.csv, e\.g\. img_001_HR\.png"):
        IQPPairedDataset({"dataroot_gt": str(gt), "dataroot_lq": str(lq), "scale": 4, "score_csv": scores})


def test_non_numeric_score_names_the_file_and_row(hq_folder, tmp_path):
    names = ["img0.png", "img1.png", "img2.png", "sub/small.jpg"]
    csv_path = _write_scores(tmp_path / "scores.csv", dict.fromkeys(names, 0.5))
    text = Path(csv_path).read_text().replace("img1.png,5.0,0.5", "img1.png,5.0,abc")
    Path(csv_path).write_text(text)
    with pytest.raises(ValueError) as err:
        _degraded(hq_folder, score_csv=csv_path)
    assert str(err.value).startswith(f"{csv_path} line 3 (img1.png): score 'abc' is not a number")
