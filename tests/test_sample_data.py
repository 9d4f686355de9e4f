"""The tiny configs' data recipe, ``python -m iqp_plugin.data.sample_data datasets/sample_hq --size 96``: every crop
it makes can be scored, so that the documented score-then-train steps work. CPU, no downloads."""
import numpy as np
from PIL import Image

from iqp_plugin.data import sample_data
from iqp_plugin.prior import scoring


def luma_std(path):
    return float((np.asarray(Image.open(path), np.float64) @ [0.299, 0.587, 0.114]).std())


def test_recipe_makes_no_flat_crop_and_niqe_scores_every_one(tmp_path):
    sample_data.main([str(tmp_path / "hq"), "--size", "96"])
    paths = sorted((tmp_path / "hq").glob("*.png"))
    assert len(paths) == 48
    assert min(luma_std(p) for p in paths) >= sample_data.MIN_STD
    result = scoring.score_folders([tmp_path / "hq"], tmp_path / "scores.csv", progress=False)
    assert result == {"scored": 48, "failed": {}}


def test_only_flat_crops_are_drawn_again(tmp_path):
    """A rejected crop is redrawn on its own generator: the other crops are those of the plain draw."""
    kept = sample_data.write_crops(tmp_path / "kept", 48, 96)
    plain = sample_data.write_crops(tmp_path / "plain", 48, 96, min_std=0)
    changed = [a.name for a, b in zip(kept, plain, strict=False) if a.read_bytes() != b.read_bytes()]
    assert changed == ["retina_0021.png"] and luma_std(plain[21]) < sample_data.MIN_STD
    again = sample_data.write_crops(tmp_path / "again", 48, 96)
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(kept, again, strict=False))  # seeded
