"""BasicSR training through the project's entry point: CPU run, resume, 2-process gloo, option errors."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from iqp_plugin.sample_data import write_crops
from tests.conftest import REPO

CONFIG = REPO / "configs" / "tiny" / "swinir_srmodel.yml"


def run(cwd, *args, launcher=None):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    if launcher:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               "-m", "iqp_plugin.train", *args, "--launcher", "pytorch"]
    else:
        cmd = [sys.executable, "-m", "iqp_plugin.train", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def workdir(tmp_path):
    write_crops(tmp_path / "datasets" / "sample_hq", count=8, size=48)
    return tmp_path


def plugin_weights(path):
    state = torch.load(path, map_location="cpu", weights_only=True)["params"]
    return {k: v for k, v in state.items() if k.startswith("plugin.")}, {k: v for k, v in state.items() if k.startswith("host.")}


def test_train_saves_and_resumes_on_cpu(workdir):
    first = run(workdir, "-opt", str(CONFIG))
    assert first.returncode == 0, first.stderr[-3000:]
    exp = workdir / "experiments" / "tiny_swinir_srmodel"
    assert (exp / "training_states" / "6.state").is_file() and (exp / "models" / "net_g_6.pth").is_file()
    plugin6, host6 = plugin_weights(exp / "models" / "net_g_6.pth")

    second = run(workdir, "-opt", str(CONFIG), "--auto_resume", "--force_yml", "train:total_iter=9")
    assert second.returncode == 0, second.stderr[-3000:]
    log = "".join(p.read_text() for p in exp.glob("train_*.log"))
    assert "iter: 6." in log and "Resuming training from epoch:" in log
    plugin9, host9 = plugin_weights(exp / "models" / "net_g_9.pth")
    assert any(not torch.equal(plugin6[k], plugin9[k]) for k in plugin6)  # training went on from iter 6
    assert all(torch.equal(host6[k], host9[k]) for k in host6)  # the host never changes


def test_two_process_gloo_run(workdir):
    out = run(workdir, "-opt", str(CONFIG), "--force_yml", "train:total_iter=4", launcher=True)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    exp = workdir / "experiments" / "tiny_swinir_srmodel"
    log = "".join(p.read_text() for p in exp.glob("train_*.log"))
    assert "world_size: 2" in log and "dist: True" in log
    assert (exp / "models" / "net_g_latest.pth").is_file()


def test_unknown_type_lists_close_matches(tmp_path):
    opt = yaml.safe_load(CONFIG.read_text())
    opt["network_g"]["type"] = "IQPWraper"
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(opt))
    out = run(tmp_path, "-opt", str(bad))
    assert out.returncode == 2
    assert "Unknown arch type 'IQPWraper' (at network_g). Did you mean: IQPWrapper" in out.stderr
    assert "Traceback" not in out.stderr


def test_misspelled_option_names_close_matches(tmp_path):
    opt = yaml.safe_load(CONFIG.read_text())
    opt["network_g"]["recompute_decodr"] = False
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(opt))
    out = run(tmp_path, "-opt", str(bad))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert ("network_g: IQPWrapper has no option 'recompute_decodr' (did you mean: recompute_decoder?). "
            "Its options: host, plugin, host_checkpoint, adapter, adapter_opt, recompute_decoder.") in out.stderr


def test_missing_option_file_names_the_path(tmp_path):
    out = run(tmp_path, "-opt", "configs/nope.yml")
    assert out.returncode == 2 and "Option file not found: configs/nope.yml" in out.stderr


def test_iqp_console_script_dispatches_train(tmp_path):
    iqp = Path(sys.executable).with_name("iqp")
    out = subprocess.run([str(iqp), "train", "-opt", "missing.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 2 and "Option file not found: missing.yml" in out.stderr
