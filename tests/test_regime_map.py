"""benchmarks/regime_map.py on the tiny budget: the precondition first and the plug-in's trainings only where the setup
is valid, the oracle trained once and shared (also with a later grid), one table and one figure of every point in
OUT (plumbing only: no assertion on quality numbers)."""
import json

from benchmarks import beyond_gt, regime_map
from iqp_plugin.data.sample_data import write_crops
from tests.test_beyond_gt import PHOTOS


def test_a_point_is_valid_when_one_host_family_is():
    def pre(*valid):
        return {"families": {f"host{i}": {"setup valid": v} for i, v in enumerate(valid)}}

    assert regime_map.setup_valid(pre(False, True)) and not regime_map.setup_valid(pre(False, False))


def test_tiny_map_stops_invalid_points_shares_the_oracle_and_resumes(tmp_path, monkeypatch):
    # tiny hosts never restore: which point counts as valid is set here, so that both paths run
    monkeypatch.setattr(regime_map, "setup_valid", lambda pre: "_c0.35" in pre["work"])
    data, out = tmp_path / "hq", tmp_path / "map"
    write_crops(data, 24, 96, seed=3, photos=PHOTOS)
    argv = ["--data", str(data), "--budget", "tiny", "--lq-from", "pristine", "--device", "cpu", "--out", str(out)]
    rows = regime_map.main([*argv, "--fractions", "0.35,0.75"])["rows"]
    assert [(r["lq_from"], r["fraction"], r.get("precondition only", False)) for r in rows] == [
        ("pristine", 0.35, False), ("pristine", 0.75, True)]
    assert set(rows[0]["psnr"]) == {"input (LQ)", *regime_map.SYSTEMS}
    assert set(rows[1]["psnr"]) == {"input (LQ)", "host", beyond_gt.ORACLE} and not rows[1]["valid"]
    def experiments(fraction):
        return beyond_gt.work_dir(regime_map.point_dir(out, fraction, "pristine"), "tiny", "pristine", fraction) / (
            "experiments")

    first, second = experiments(0.35), experiments(0.75)
    oracles = ["bgt_sw_oracle", "bgt_sw_oracle_i7"]
    assert sorted(p.name for p in second.iterdir()) == ["bgt_sw_host", *oracles]  # no plug-in trained there
    assert all((second / name).is_symlink() and (second / name).resolve() == (first / name).resolve()
               for name in oracles)
    assert not (first / "bgt_sw_oracle").is_symlink()  # trained once, by the first point
    assert (out / "regime_map.png").stat().st_size > 0
    markdown = (out / "regime_map.md").read_text()
    assert "| pristine | 0.35 |" in markdown and "| pristine | 0.75 |" in markdown and "precondition only" in markdown
    trained = {p: p.stat().st_mtime_ns for p in out.rglob("*.json")}
    trained.update({p: p.stat().st_mtime_ns for p in out.rglob("net_g_latest.pth")})
    again = regime_map.main([*argv, "--fractions", "0.35,0.75"])  # every point reused, the invalid one not retried
    assert {p: p.stat().st_mtime_ns for p in trained if p.name != "regime_map.json"} == {
        p: t for p, t in trained.items() if p.name != "regime_map.json"}
    assert again["rows"] == json.loads((out / "regime_map.json").read_text())["rows"] == rows
    # a later grid takes the oracle of an earlier point and the map shows every point in OUT
    later = regime_map.main([*argv, "--fractions", "0.5"])["rows"]
    assert [r["fraction"] for r in later] == [0.35, 0.5, 0.75]
    assert all((experiments(0.5) / name).resolve() == (first / name).resolve() for name in oracles)
