"""Automatic tiling of large inputs (``--tile-above``): bounded tile area, same score on every tile, nothing
changed below the threshold, and the CLI overrides. Tiny random SwinIR host and plug-in, CPU."""
import cv2
import numpy as np
import pytest

from iqp_plugin.adapters.swinir import SwinIRAdapter
from iqp_plugin.cli import run
from iqp_plugin.cli.restore import main as restore_main
from iqp_plugin.inference import tiling as running
from tests.test_restore import make_model, rand_img


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("model"))


def record_calls(monkeypatch, wrapper=None):
    """Wrap the SwinIR adapter's encode (and the plug-in's condition): returns the lists of (h, w) each host
    forward got and of the scores each plug-in call was conditioned on."""
    areas, scores = [], []
    encode = SwinIRAdapter.encode

    def encode_recorded(self, x, *args, **kwargs):
        areas.append(tuple(x.shape[-2:]))
        return encode(self, x, *args, **kwargs)

    monkeypatch.setattr(SwinIRAdapter, "encode", encode_recorded)
    if wrapper is not None:
        condition_for = wrapper.plugin.condition_for

        def condition_recorded(score, *args, **kwargs):
            scores.append(score)
            return condition_for(score, *args, **kwargs)

        monkeypatch.setattr(wrapper.plugin, "condition_for", condition_recorded)
    return areas, scores


def test_tall_thin_image_is_tiled_with_bounded_area_and_one_score(model, monkeypatch):
    """A 2000x40 image over a 128x128-pixel threshold: every host forward sees at most 16384 pixels (tiles of
    128x40, sides on SwinIR's 8-px window grid), whereas the whole image is one 80000-pixel forward; every
    tile is conditioned on the same score. Tiled vs whole, measured: host alone max |diff| 5e-6 (overlap
    32), with this random plug-in max 0.0023, mean 1.8e-4 (its attention spans the whole input, so a
    tile's tokens see fewer others), on outputs spanning about 0.4. Tolerance: max 0.005, mean 5e-4
    (host alone: 1e-4)."""
    *_, wrapper = model
    rgb = rand_img(2000, 40, seed=3).astype(np.float32)[None] / 255
    above = 128 * 128
    areas, scores = record_calls(monkeypatch, wrapper)
    assert running.tile_side(wrapper, 2000, 40, None, above) == 128
    for plugin, tol in ((False, 1e-4), (True, 5e-4)):
        areas.clear()
        tiles = running.run_batch(wrapper, rgb, 0.7, plugin=plugin, tile_above=above)
        assert len(areas) > 15 and max(h * w for h, w in areas) <= above
        assert all(h % 8 == 0 and w == 40 for h, w in areas)
        areas.clear()
        whole = running.run_batch(wrapper, rgb, 0.7, tile=0, plugin=plugin)
        assert areas == [(2000, 40)]
        diff = np.abs(whole - tiles)
        assert whole.shape == tiles.shape == (1, 4000, 80, 3)
        assert diff.max() < (5e-3 if plugin else 1e-4) and diff.mean() < tol, (plugin, diff.max(), diff.mean())
    assert len(scores) > 15 and set(scores) == {0.7}
    scores.clear()
    running.run_batch(wrapper, rgb, tile_above=above)  # default score: the plug-in's target, on every tile
    assert len(scores) > 15 and set(scores) == {None}
    # the area a forward sees does not grow with the image
    areas.clear()
    running.run_batch(wrapper, np.concatenate([rgb, rgb], axis=1), plugin=False, tile_above=above)
    assert max(h * w for h, w in areas) <= above


def test_below_the_threshold_nothing_changes(model, monkeypatch):
    """At or below the threshold the output is bit-identical to the untiled run (one forward, whole)."""
    *_, wrapper = model
    areas, _ = record_calls(monkeypatch)
    rgb = rand_img(64, 48, seed=4).astype(np.float32)[None] / 255
    whole = running.run_batch(wrapper, rgb, tile=0)
    for kwargs in ({}, {"tile_above": 64 * 48}):
        areas.clear()
        assert np.array_equal(running.run_batch(wrapper, rgb, **kwargs), whole)
        assert areas == [(64, 48)]
    assert running.AUTO_TILE_ABOVE == 512 * 512
    assert running.tile_side(wrapper, 512, 512) == 0 and running.tile_side(wrapper, 513, 512) == 512
    assert running.tile_side(wrapper, 10000, 200) == 512


def test_face_hosts_are_never_tiled(model):
    *_, wrapper = model
    wrapper.adapter.input_size = 512  # as the face adapters declare
    try:
        assert running.tile_side(wrapper, 4000, 4000) == 0
        with pytest.raises(ValueError, match="takes whole aligned faces"):
            running.tile_side(wrapper, 4000, 4000, tile=256)
    finally:
        del wrapper.adapter.input_size


def test_cli_threshold_and_tile_override(model, tmp_path, monkeypatch, capsys):
    """``iqp restore`` tiles a 2000x40 image under ``--tile-above 4096``, not by default (80000 pixels are
    under 512x512) nor with ``--tile 0``; ``--tile 128`` sets the side; bad values fail before the model."""
    config, *_ = model
    src = tmp_path / "tall.png"
    cv2.imwrite(str(src), rand_img(2000, 40, seed=6))
    areas, _ = record_calls(monkeypatch)
    base = ["-i", str(src), "--config", str(config), "--device", "cpu"]
    runs = {"default": [], "tile0": ["--tile-above", "4096", "--tile", "0"], "above": ["--tile-above", "4096"],
            "tile128": ["--tile", "128"]}
    got = {}
    for name, extra in runs.items():
        areas.clear()
        run(restore_main, [*base, "-o", str(tmp_path / name), *extra])
        got[name] = list(areas)
    assert got["default"] == got["tile0"] == [(2000, 40)]
    assert len(got["above"]) > 30 and max(h * w for h, w in got["above"]) <= 4096
    assert {a for a in got["tile128"]} == {(128, 40)}
    read = {name: cv2.imread(str(tmp_path / name / "tall.png")) for name in runs}
    assert np.array_equal(read["default"], read["tile0"])
    assert np.abs(read["above"].astype(int) - read["default"]).max() <= 2  # 0.005 of 255, rounded

    capsys.readouterr()
    for extra, message in ((["--tile", "-1"], "--tile must be >= 0"),
                           (["--tile-above", "0"], "--tile-above must be a positive"),
                           (["--tile-above", "4096", "--tile-overlap", "64"], "--tile-overlap must be in [0, the")):
        areas.clear()
        with pytest.raises(SystemExit) as exc:
            run(restore_main, [*base, "-o", str(tmp_path / "bad"), *extra])
        assert exc.value.code == 2 and message in capsys.readouterr().err
        assert areas == [] and not (tmp_path / "bad").exists()
