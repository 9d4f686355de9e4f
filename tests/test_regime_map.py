"""benchmarks/regime_map.py on the tiny budget: one beyond_gt run per point, the oracle trained once and shared, one
table and one figure (plumbing only: no assertion on quality numbers)."""
import json

from benchmarks import regime_map
from iqp_plugin.data.sample_data import write_crops
from tests.test_beyond_gt import PHOTOS


def test_tiny_map_shares_the_oracle_and_resumes(tmp_path):
    data, out = tmp_path / "hq", tmp_path / "map"
    write_crops(data, 24, 96, seed=3, photos=PHOTOS)
    argv = ["--data", str(data), "--budget", "tiny", "--fractions", "0.35,0.75", "--lq-from", "pristine",
            "--device", "cpu", "--out", str(out)]
    result = regime_map.main(argv)
    rows = result["rows"]
    assert [(r["lq_from"], r["fraction"]) for r in rows] == [("pristine", 0.35), ("pristine", 0.75)]
    assert all(set(r["psnr"]) == set(regime_map.SYSTEMS) for r in rows)
    first, second = (regime_map.point_dir(out, f, "pristine") / f"work_tiny_lq-pristine_c{f:g}" / "experiments"
                     for f in (0.35, 0.75))
    oracles = sorted(p.name for p in second.glob("bgt_sw_oracle*"))
    assert oracles == ["bgt_sw_oracle", "bgt_sw_oracle_i7"]
    assert all((second / name).is_symlink() and (second / name).resolve() == (first / name).resolve()
               for name in oracles)
    assert not (first / "bgt_sw_oracle").is_symlink()  # trained once, by the first point
    assert (out / "regime_map.png").stat().st_size > 0
    markdown = (out / "regime_map.md").read_text()
    assert "| pristine | 0.35 |" in markdown and "| pristine | 0.75 |" in markdown
    trained = {p: p.stat().st_mtime_ns for p in out.rglob("net_g_latest.pth")}
    again = regime_map.main(argv)  # every point reused: nothing trained again
    assert {p: p.stat().st_mtime_ns for p in out.rglob("net_g_latest.pth")} == trained
    assert again["rows"] == json.loads((out / "regime_map.json").read_text())["rows"] == rows
