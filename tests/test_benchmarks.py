"""benchmarks/overhead.py and startup.py run end to end at tiny sizes and write well-formed results (no timing asserts);
overhead.py measures both recipes on each host: its default (``plugin``) and the other one (``plugin_other``)."""
import json
import math
import subprocess
import sys

from tests.conftest import REPO


def test_overhead_tiny_writes_json_and_markdown(tmp_path):
    out = tmp_path / "overhead"
    cmd = [sys.executable, str(REPO / "benchmarks" / "overhead.py"), "--budget", "tiny", "--device", "cpu",
           "--hosts", "restoreformer,swinir", "--no-profile", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    data = json.loads((out / "overhead.json").read_text())
    assert data["meta"]["budget"] == "tiny" and data["meta"]["device"] == "cpu"
    assert set(data["results"]) == {"restoreformer", "swinir"}
    defaults = {"restoreformer": ("lean", "pixel"), "swinir": ("pixel", "lean")}  # (plugin, plugin_other)
    for host, res in data["results"].items():
        cases = {"host", "plugin", "plugin_other"}  # plugin_graphed: CUDA only
        assert set(res["inference"]["variants"]) == cases
        assert (res["recipes"]["plugin"], res["recipes"]["plugin_other"]) == defaults[host]
        for phase in ("params", "inference", "training"):
            assert all(v["recipe"] == res["recipes"][name] for name, v in res[phase]["variants"].items()
                       if name.startswith("plugin"))
        stored = {"plugin_stored"} if host == "restoreformer" else set()  # hosts with recomputable decoder blocks
        assert set(res["training"]["variants"]) == (cases - {"host"}) | {"full"} | stored
        assert res["inference"]["max_abs_diff_fresh_plugin_vs_host"] <= 1e-4  # zero-initialised injection
        for phase, ratio_keys in (("inference", ("latency_ratio", "memory_ratio")),
                                  ("training", ("time_ratio", "memory_ratio"))):
            for case in res[phase]["variants"].values():
                assert case["times_s"] and all(t > 0 for t in case["times_s"])
                assert case["peak_bytes"] > 0 and case["growth_bytes"] >= 0
                assert all(math.isfinite(case[k]) and case[k] > 0 for k in ratio_keys)
        assert (res["training"]["variants"]["full"]["optimizer_state_bytes"]
                > res["training"]["variants"]["plugin"]["optimizer_state_bytes"])
        for variant in res["params"]["variants"].values():
            assert 0 < variant["ratio"] and variant["added"] == variant["trainable"] + variant["codebook_entries"]
    statuses = {t["target"]: t["status"] for t in data["targets"]}
    assert all(s in ("PASS", "MISS", "not run") for s in statuses.values())
    assert all(s == "not run" for name, s in statuses.items() if name.startswith("codeformer"))

    markdown = (out / "overhead.md").read_text()
    assert "## Inference" in markdown and "## Targets" in markdown and "| swinir |" in markdown
    assert "| plugin (pixel, the default) |" in markdown and "| plugin_other (lean) |" in markdown  # swinir
    assert "| plugin (lean, the default) |" in markdown and "| plugin_other (pixel) |" in markdown  # restoreformer


def test_startup_benchmark_compares_the_same_metric(tmp_path):
    """Both scorers of the start-up benchmark compute NIQE with pyiqa's defaults: their means agree."""
    from benchmarks import startup
    from iqp_plugin.data.sample_data import write_crops

    write_crops(tmp_path / "images", count=4, size=128)
    data = startup.main(["--data", str(tmp_path / "images"), "--count", "4", "--repeats", "1",
                         "--out", str(tmp_path / "out")])
    assert set(data["median_s"]) == {"iqp --help", "iqp score (argument error)", "iqp score", "pyiqa niqe -t DIR",
                                     "iqp_plugin.register()"}
    assert abs(data["mean_niqe"]["iqp score"] - data["mean_niqe"]["pyiqa"]) < 1e-6
    assert [t["target"].split(" (")[0] for t in data["targets"]][:1] == ["iqp --help"]
    assert "| iqp score |" in (tmp_path / "out" / "startup.md").read_text()
