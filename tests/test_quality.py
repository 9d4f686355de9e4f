"""The quality prior: offline pyiqa metrics, priors and normalisation, QualityLoss. CPU, no downloads."""
from pathlib import Path

import basicsr.metrics
import numpy as np
import pytest
import scipy.io
import skimage.data
import torch
from basicsr.utils.registry import LOSS_REGISTRY

import iqp_plugin  # noqa: F401  (first: basicsr import fix; registers QualityLoss)
from iqp_plugin.prior import offline as om
from iqp_plugin.prior.loss import QualityLoss
from iqp_plugin.prior.metrics import Normalizer, create_prior

pytestmark = pytest.mark.usefixtures("offline_cache")


def astronaut(size=192, dtype=torch.float32):
    """A fixed natural-image crop as (1, 3, size, size) in [0,1]."""
    img = skimage.data.astronaut()[100:100 + size, 150:150 + size]
    return torch.from_numpy(img.copy()).permute(2, 0, 1)[None].to(dtype) / 255


def test_niqe_params_built_once_from_basicsr(offline_cache):
    path = om.build_niqe_params()
    assert path == offline_cache / om.NIQE_FILE and sorted(p.name for p in offline_cache.iterdir()) == [om.NIQE_FILE]
    mat = scipy.io.loadmat(path)
    ref = np.load(Path(basicsr.metrics.__file__).parent / "niqe_pris_params.npz")
    np.testing.assert_array_equal(np.ravel(mat["mu_prisparam"]), np.ravel(ref["mu_pris_param"]))
    np.testing.assert_array_equal(mat["cov_prisparam"], ref["cov_pris_param"])
    mtime = path.stat().st_mtime_ns
    om.ensure_offline_metric("niqe")
    assert path.stat().st_mtime_ns == mtime


def test_niqe_matches_basicsr():
    """pyiqa NIQE (offline file) against basicsr's calculate_niqe on the 512x512 astronaut.

    Measured: the same Y image fed to both differs by 6e-6..0.06 (up to 0.27 = 3% on a 276 px image
    with only 4 blocks); pyiqa's default RGB path takes YIQ luma instead of basicsr's YCbCr Y, which
    moves values by up to 3% on 17 test images, 0.08% on the astronaut. Tolerance: 1% relative.
    """
    img = skimage.data.astronaut()
    expected = basicsr.metrics.calculate_niqe(img[..., ::-1].astype(np.float64), 0, input_order="HWC", convert_to="y")
    niqe = om.create_metric("niqe", device="cpu")
    value = niqe(torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255).item()
    assert expected == pytest.approx(3.0649, abs=1e-3)
    assert value == pytest.approx(expected, rel=0.01)


def test_missing_weights_name_file_and_folder(offline_cache):
    with pytest.raises(om.MissingWeightsError, match=rf"musiq_koniq_ckpt-e95806b9\.pth.*{offline_cache}"):
        om.create_metric("musiq", device="cpu")
    with pytest.raises(om.MissingWeightsError, match=rf"{om.BRISQUE_FILE}.*{offline_cache}"):
        om.ensure_offline_metric("brisque")
    offline_cache.mkdir(parents=True, exist_ok=True)
    (offline_cache / om.BRISQUE_FILE).write_bytes(b"user's file")
    om.ensure_offline_metric("brisque")  # present: no error
    om.ensure_offline_metric("piqe")


def test_unknown_metric_lists_close_matches():
    with pytest.raises(ValueError, match=r"unknown NR-IQA metric 'nqie'.*Did you mean: niqe.*Valid NR metrics: .*piqe"):
        create_prior("nqie")
    with pytest.raises(ValueError, match="'psnr'"):  # a full-reference metric is not a prior
        create_prior(["psnr"])


def test_prior_and_normalizer_roundtrip(tmp_path):
    prior = create_prior("niqe,musiq", weights=[3, 1])
    assert prior.weights == (0.75, 0.25) and prior.lower_better == (True, False)
    assert create_prior("offline").metrics == ("niqe",)
    norm = Normalizer.fit(prior, {"niqe": [4.0, 8.0, float("nan")], "musiq": [20.0, 60.0, 40.0]})
    assert norm({"niqe": 4.0, "musiq": 60.0}) == 1.0 and norm({"niqe": 8.0, "musiq": 20.0}) == 0.0
    assert norm({"niqe": 6.0, "musiq": 40.0}) == pytest.approx(0.5)
    assert norm({"niqe": 100.0, "musiq": 100.0}) == pytest.approx(0.25)  # clipped per metric
    norm.save(tmp_path / "s.json", count=3)
    again = Normalizer.load(tmp_path / "s.json")
    assert again({"niqe": 5.0, "musiq": 30.0}) == norm({"niqe": 5.0, "musiq": 30.0})
    fixed = Normalizer.fit(create_prior("piqe"), {}, mode="fixed")
    assert fixed.ranges == {"piqe": (0.0, 100.0)} and fixed({"piqe": 25.0}) == 0.75


def test_rank_normalizer_spreads_scores_past_an_outlier(tmp_path):
    """One NIQE outlier squeezes min-max scores into a narrow band; ranks spread them evenly over [0, 1]."""
    niqe = [float(v) for v in range(1, 101)] + [1000.0]  # lower is better; 1000 is the outlier
    minmax = Normalizer.fit(create_prior("niqe"), {"niqe": niqe})
    rank = Normalizer.fit(create_prior("niqe"), {"niqe": niqe}, mode="rank")
    assert minmax({"niqe": 50.0}) > 0.95  # all but the outlier land near 1
    assert rank({"niqe": 51.0}) == pytest.approx(0.5)  # the median image
    assert rank({"niqe": 1.0}) == 1.0 and rank({"niqe": 1000.0}) == 0.0
    assert rank({"niqe": 0.5}) == 1.0 and rank({"niqe": 5000.0}) == 0.0  # clipped beyond the scored range
    ranked = [rank({"niqe": v}) for v in niqe]
    assert ranked == sorted(ranked, reverse=True) and len(set(ranked)) == len(ranked)
    rank.save(tmp_path / "r.json", count=len(niqe))
    again = Normalizer.load(tmp_path / "r.json")
    assert again.mode == "rank" and [again({"niqe": v}) for v in niqe] == ranked
    with pytest.raises(ValueError, match="minmax, fixed, rank"):
        Normalizer.fit(create_prior("niqe"), {"niqe": niqe}, mode="quantile")


def test_norm_choices_match_the_normalisations():
    from iqp_plugin.cli import parsers
    from iqp_plugin.prior.metrics import NORMALISATIONS

    norm = next(a for a in parsers.score()._actions if a.dest == "norm")
    assert tuple(norm.choices) == NORMALISATIONS


def test_quality_loss_image_range():
    """Output in [-1,1] with image_range=(-1,1) is scored as the [0,1] image (the authors fed [-1,1] as is)."""
    assert LOSS_REGISTRY.get("QualityLoss") is QualityLoss
    img = astronaut(dtype=torch.float64)  # float64: the range mapping is exact, NIQE's rounding sees the same Y
    loss01, loss11 = QualityLoss("niqe"), QualityLoss("niqe", image_range=(-1, 1))
    assert loss11(img * 2 - 1).item() == pytest.approx(loss01(img).item(), abs=1e-9)
    # float32: the mapping is off by ~1e-7, which flips NIQE's rounding of a few Y values
    assert loss11(img.float() * 2 - 1).item() == pytest.approx(loss01(img.float()).item(), rel=0.01)
    assert abs(loss01(img * 2 - 1).item() - loss01(img).item()) > 0.5  # the authors' bug


def test_quality_loss_gradient_and_optimisation():
    loss_fn = QualityLoss("offline+piqe")
    assert not any(p.requires_grad for p in loss_fn.parameters())
    loss_fn.train()
    assert not any(m.training for m in loss_fn.metrics)
    x = astronaut().requires_grad_(True)
    loss = loss_fn(x)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0

    niqe_loss = QualityLoss("niqe")
    x = astronaut().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=2e-3)
    start = niqe_loss(x).item()
    for _ in range(4):
        opt.zero_grad()
        niqe_loss(x).backward()
        opt.step()
    assert niqe_loss(x).item() < start - 0.5
