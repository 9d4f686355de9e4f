"""Every shipped option YAML is valid and builds; the stage files of a plug-in agree; the tiny stages of every host
family run end to end."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from basicsr.archs import build_network

from iqp_plugin.cli.score import main as score_main
from iqp_plugin.data.sample_data import write_crops
from iqp_plugin.io.options import read_options
from iqp_plugin.io.registry import check_option_types
from tests.conftest import REPO

CONFIGS = sorted((REPO / "configs").rglob("*.yml")) + sorted((REPO / "benchmarks" / "configs").rglob("*.yml"))
STAGES = ("codebook", "predictor", "quality")
#: every set of stage files: (folder, file name pattern)
STAGE_SETS = ([(REPO / "configs" / host, "{}.yml")
               for host in ("codeformer", "restoreformer", "swinir", "hook_rrdbnet")]
              + [(REPO / "configs" / "tiny", f"{host}_{{}}.yml")
                 for host in ("codeformer", "restoreformer", "swinir", "hook_rrdbnet")]
              + [(REPO / "configs" / "demo", "{}.yml"), (REPO / "benchmarks" / "configs" / "quality", "face_{}.yml"),
                 (REPO / "benchmarks" / "configs" / "beyond_gt", "rf_{}.yml"),
                 (REPO / "benchmarks" / "configs" / "beyond_gt", "sw_{}.yml")])


def test_every_family_has_three_stages_full_size_and_tiny():
    names = {str(p.relative_to(REPO / "configs")) for p in CONFIGS if p.is_relative_to(REPO / "configs")}
    for host in ("codeformer", "restoreformer", "swinir", "hook_rrdbnet"):
        for stage in ("codebook", "predictor", "quality"):
            assert f"{host}/{stage}.yml" in names and f"tiny/{host}_{stage}.yml" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_config_is_valid_and_builds(path):
    opt = read_options(str(path))
    check_option_types(opt)
    net = dict(opt["network_g"])
    if net["type"] != "IQPWrapper":  # a host trained on its own (demo, benchmarks): it restores at its scale
        size = net.get("resolution") or net.get("img_size") or 32
        with torch.no_grad():
            out = build_network(net).eval()(torch.rand(1, 3, size, size))
        out = out[0] if isinstance(out, (tuple, list)) else out
        scale = net.get("upscale", opt.get("scale", 1))
        assert out.shape == (1, 3, size * scale, size * scale) and torch.isfinite(out).all()
        return
    wrapper = build_network(dict(net, host_checkpoint=None))  # no third-party weights here: random host
    assert wrapper.plugin is not None and all(not p.requires_grad for p in wrapper.host.parameters())
    if opt["model_type"] == "IQPModel":
        assert opt["stage"] in ("codebook", "predictor", "quality")
        assert (opt["stage"] == "quality") == ("quality_opt" in opt["train"])


@pytest.mark.parametrize("folder, pattern", STAGE_SETS,
                         ids=lambda v: str(v.relative_to(REPO)) if isinstance(v, Path) else v)
def test_the_stage_files_of_a_plugin_agree_on_its_host_and_plugin(folder, pattern):
    """A plug-in's three stages train one network: their host, host weights and plug-in options are the same."""
    blocks = []
    for stage in STAGES:
        net = read_options(str(folder / pattern.format(stage)))["network_g"]
        blocks.append({k: net.get(k) for k in ("type", "host", "host_checkpoint", "plugin")})
    assert blocks[0] == blocks[1] == blocks[2], [folder / pattern.format(s) for s in STAGES]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("configs")
    write_crops(root / "datasets" / "sample_hq", count=8, size=96)
    score_main(["-i", str(root / "datasets" / "sample_hq"), "-o", str(root / "datasets" / "sample_hq_scores.csv")])
    return root


@pytest.mark.parametrize("host", ["hook_rrdbnet", "restoreformer"])
def test_tiny_stages_run(workdir, host):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    for stage in ("codebook", "predictor", "quality"):
        cmd = [sys.executable, "-m", "iqp_plugin.train", "-opt", str(REPO / "configs" / "tiny" / f"{host}_{stage}.yml")]
        out = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    ckpt = torch.load(workdir / "experiments" / f"tiny_{host}_quality" / "models" / "net_g_latest.pth",
                      weights_only=True)
    assert ckpt["stage"] == "quality" and not any(k.startswith("host.") for k in ckpt["params"])


@pytest.mark.parametrize("host", ["codeformer", "restoreformer", "swinir", "hook_rrdbnet"])
def test_every_family_takes_its_recipes_data_side(host):
    """The recipe is defined once (iqp_plugin/archs/recipes.py): each family's full-size stages 2-3 repeat the
    top-scored targets as its default recipe says, and its plug-in is that recipe's (``plugin: {}`` builds it)."""
    from iqp_plugin.archs.recipes import RECIPES
    from iqp_plugin.archs.wrapper import IQPWrapper

    for stage in ("predictor", "quality"):
        opt = read_options(str(REPO / "configs" / host / f"{stage}.yml"))
        net = dict(opt["network_g"], host_checkpoint=None)
        net.pop("type")
        adapter = IQPWrapper(**{**net, "plugin": None}).adapter
        recipe = RECIPES[net["plugin"].get("preset", adapter.default_recipe)]
        train = opt["datasets"]["train"]
        assert (train["top_copies"], train["top_percent"]) == (recipe.top_copies, recipe.top_percent), (host, stage)
        assert train["score_csv"] and "preset" not in net["plugin"], (host, stage)
