"""IQPModel: the three tiny stages end to end (with resume and 2 processes), and in-process checks."""
import hashlib
import os
import subprocess
import sys

import pytest
import torch
import yaml
from basicsr.data import build_dataset
from basicsr.models import build_model
from torch.utils.data import DataLoader

from iqp_plugin.cli.score import main as score_main
from iqp_plugin.data.sample_data import write_crops
from iqp_plugin.io.registry import build_arch
from tests.conftest import REPO

CONFIGS = REPO / "configs" / "tiny"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Sample HQ crops, their offline-prior scores, and a random SwinIR host checkpoint file."""
    root = tmp_path_factory.mktemp("iqp")
    write_crops(root / "datasets" / "sample_hq", count=12, size=96)
    score_main(["-i", str(root / "datasets" / "sample_hq"), "-o", str(root / "datasets" / "sample_hq_scores.csv")])
    host_opt = yaml.safe_load((CONFIGS / "swinir_codebook.yml").read_text())["network_g"]["host"]
    torch.manual_seed(1)
    torch.save({"params": build_arch(host_opt).state_dict()}, root / "host.pth")
    return root


def train(cwd, stage, *force, nproc=1, extra=()):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    force = ["network_g:host_checkpoint=host.pth", *force]
    args = ["-opt", str(CONFIGS / f"swinir_{stage}.yml"), *extra, "--force_yml", *force]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", "29523",
               "-m", "iqp_plugin.train", *args, "--launcher", "pytorch"]
    else:
        cmd = [sys.executable, "-m", "iqp_plugin.train", *args]
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    return out


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_three_stages_end_to_end_with_resume(workdir):
    host_hash = sha256(workdir / "host.pth")
    train(workdir, "codebook")
    train(workdir, "predictor", "train:total_iter=6")
    train(workdir, "quality", "train:total_iter=2", "logger:save_checkpoint_freq=2", "logger:print_freq=1")
    train(workdir, "quality", "train:total_iter=4", "logger:save_checkpoint_freq=2", "logger:print_freq=1",
          extra=["--auto_resume"])
    exp = workdir / "experiments"
    log = "".join(p.read_text() for p in (exp / "tiny_swinir_quality").glob("train_*.log"))
    assert "Resuming training from epoch:" in log and "l_quality" in log
    assert "Validation sample_val" in log and "host_niqe" in log and "iqp_niqe" in log
    ckpt = torch.load(exp / "tiny_swinir_quality" / "models" / "net_g_4.pth", weights_only=True)
    assert ckpt["stage"] == "quality" and set(ckpt) >= {"params", "params_ema", "host"}
    assert not any(k.startswith("host.") for k in ckpt["params"])  # plug-in only
    assert ckpt["host"]["checkpoint"] == "host.pth" and ckpt["host"]["sha256"] == host_hash
    assert sha256(workdir / "host.pth") == host_hash
    stage1 = torch.load(exp / "tiny_swinir_codebook" / "models" / "net_g_latest.pth", weights_only=True)
    assert bool(stage1["params"]["codebook.hq.initted"]) and bool(stage1["params"]["codebook.common.initted"])


def test_two_process_gloo_stages(workdir):
    train(workdir, "codebook", "name=dist_codebook", "train:total_iter=4", nproc=2)
    train(workdir, "predictor", "name=dist_predictor", "train:total_iter=4",
          "path:pretrain_network_g=experiments/dist_codebook/models/net_g_latest.pth", "logger:print_freq=1", nproc=2)
    log = "".join(p.read_text() for p in (workdir / "experiments" / "dist_predictor").glob("train_*.log"))
    assert "world_size: 2" in log and "l_ce_common" in log


# ---------------------------------------------------------------- in-process checks
def make_model(workdir, stage, plugin=None, **train_overrides):
    opt = yaml.safe_load((CONFIGS / f"swinir_{stage}.yml").read_text())
    opt["network_g"]["plugin"].update(plugin or {})
    opt.update(is_train=True, dist=False, rank=0, world_size=1, root_path=str(workdir))
    opt["network_g"]["host_checkpoint"] = str(workdir / "host.pth")
    opt["path"].update(pretrain_network_g=None, models=str(workdir / "models"),
                       training_states=str(workdir / "states"))
    opt["train"].update(train_overrides)
    data_opt = opt["datasets"]["train"]
    data_opt.update(phase="train", scale=opt["scale"], seed=0, dataroot_gt=str(workdir / data_opt["dataroot_gt"]),
                    score_csv=str(workdir / data_opt["score_csv"]))
    model = build_model(opt)
    loader = DataLoader(build_dataset(opt["datasets"]["train"]), batch_size=4, shuffle=False)
    return model, loader


def test_codebook_stage_feeds_hq_branch_only_above_threshold(workdir, monkeypatch):
    model, loader = make_model(workdir, "codebook")
    rows = []
    update = model.plugin.codebook.hq.update
    monkeypatch.setattr(model.plugin.codebook.hq, "update", lambda x: rows.append(len(x)) or update(x))
    fractions, selected = [], 0
    host_before = {k: v.clone() for k, v in model.net_g.host.state_dict().items()}
    for data in loader:
        model.feed_data(data)
        model.optimize_parameters(1)
        fractions.append(model.log_dict["hq_fraction"])
        selected += int((data["score"] >= model.threshold).sum())
    assert selected > 0
    assert 0 < min(fractions) < 1 or 0 < max(fractions) < 1  # the filter kept some targets and dropped others
    tokens = model.plugin.code_features(model.net_g.adapter.features(torch.zeros(1, 3, 16, 16))).shape[1]
    assert sum(rows) == tokens * selected  # exactly the features of the targets at or above the threshold
    assert all(torch.equal(v, host_before[k]) for k, v in model.net_g.host.state_dict().items())


def test_pixel_codes_train_on_every_gt_pixel(workdir):
    """codes: pixel: stage 1 learns the codebooks from every GT pixel's feature; in stage 2 the cross-entropy on
    the per-pixel target codes falls."""
    pixel = {"codes": "pixel"}
    stage1, loader = make_model(workdir, "codebook", pixel)
    rows = []
    update = stage1.plugin.codebook.common.update
    stage1.plugin.codebook.common.update = lambda x: rows.append(len(x)) or update(x)
    batch = fixed_batch(loader)
    stage1.feed_data(batch)
    stage1.optimize_parameters(1)
    lq = batch["lq"].shape
    assert rows == [lq[0] * lq[-2] * lq[-1]]  # SwinIR: the bottleneck has the input's size
    torch.manual_seed(0)
    model, loader = make_model(workdir, "predictor", pixel)
    model.plugin.codebook.load_state_dict(stage1.plugin.codebook.state_dict())
    model.feed_data(fixed_batch(loader))
    ce = []
    for it in range(10):
        model.optimize_parameters(it)
        ce.append(model.log_dict["l_ce_common"] + model.log_dict["l_ce_hq"])
    assert model.plugin.out_conv.weight.abs().sum() > 0
    assert ce[-1] < 0.9 * ce[0], ce


def fixed_batch(loader):
    return next(iter(loader))


def test_predictor_cross_entropy_falls_and_host_is_untouched(workdir):
    model, loader = make_model(workdir, "codebook")
    for data in loader:
        model.feed_data(data)
        model.optimize_parameters(1)
    torch.save({"params": model.plugin.state_dict()}, workdir / "stage1.pth")
    model, loader = make_model(workdir, "predictor")
    model.load_plugin(str(workdir / "stage1.pth"))
    host_before = {k: v.clone() for k, v in model.net_g.host.state_dict().items()}
    model.feed_data(fixed_batch(loader))
    ce = []
    for it in range(15):
        model.optimize_parameters(it)
        ce.append(model.log_dict["l_ce_common"] + model.log_dict["l_ce_hq"])
    assert ce[-1] < 0.9 * ce[0] and ce[-1] == min(ce), ce
    assert all(torch.equal(v, host_before[k]) for k, v in model.net_g.host.state_dict().items())
    assert all(not p.requires_grad for p in model.net_g.host.parameters())
    assert all(id(p) not in {id(h) for h in model.net_g.host.parameters()}
               for g in model.optimizer_g.param_groups for p in g["params"])


def quality_run(workdir, seed, steps=20):
    """Stage 1 -> stage 2 -> stage 3 on one fixed batch; returns the quality loss (0.15 x NIQE) per step."""
    torch.manual_seed(seed)
    stage1, loader = make_model(workdir, "codebook")
    for data in loader:
        stage1.feed_data(data)
        stage1.optimize_parameters(1)
    stage2, loader = make_model(workdir, "predictor")
    stage2.plugin.load_state_dict(stage1.plugin.state_dict())
    stage2.feed_data(fixed_batch(loader))
    for it in range(30):
        stage2.optimize_parameters(it)
    model, loader = make_model(workdir, "quality", optim_g={"type": "Adam", "lr": 3e-4})
    model.plugin.load_state_dict(stage2.plugin.state_dict())
    model.feed_data(fixed_batch(loader))
    losses = []
    for it in range(steps):
        model.optimize_parameters(it)  # logs the loss of the weights before this step
        losses.append(model.log_dict["l_quality"])
    return losses


def test_quality_stage_improves_the_trained_metric(workdir):
    """NIQE as a loss is rough (its luma is rounded to 8 bit, straight-through), so on a
    random tiny host one run can wander; the stage must lower NIQE in most of three seeded runs."""
    runs = [quality_run(workdir, seed) for seed in range(3)]
    improved = [sum(r[-5:]) / 5 < r[0] for r in runs]
    assert sum(improved) >= 2, [(r[0], r[-5:]) for r in runs]


def test_quality_stage_moves_the_injection_only_when_told(workdir):
    """quality_trains: predictor (default) keeps W_o (live and EMA) as stage 2 left it, so the
    NR-IQA loss moves the output only through the code choice; 'plugin' trains W_o too; any other value is refused."""
    for trains, moves in (("predictor", False), ("plugin", True)):
        torch.manual_seed(0)
        model, loader = make_model(workdir, "quality", {"inject_kernel": 3}, quality_trains=trains)
        torch.nn.init.normal_(model.plugin.out_conv.weight, std=0.01)  # as after stage 2
        model.plugin_ema.load_state_dict(model.plugin.state_dict())
        before = {k: v.clone() for k, v in model.plugin.state_dict().items()}
        model.feed_data(fixed_batch(loader))
        for it in range(2):
            model.optimize_parameters(it)
        for net in (model.plugin, model.plugin_ema):
            after = net.state_dict()
            for key in ("out_conv.weight", "out_conv.bias"):
                assert torch.equal(after[key], before[key]) is not moves, (trains, key)
            assert not torch.equal(after["blocks.0.attn.qkv.weight"], before["blocks.0.attn.qkv.weight"]), trains
    with pytest.raises(ValueError, match="quality_trains must be 'predictor'"):
        make_model(workdir, "quality", quality_trains="everything")


def test_non_finite_loss_step_is_skipped(workdir, monkeypatch):
    model, loader = make_model(workdir, "predictor")
    model.feed_data(fixed_batch(loader))
    before = {k: v.clone() for k, v in model.plugin.state_dict().items()}
    real = model.losses
    monkeypatch.setattr(model, "losses", lambda: {k: v * float("nan") for k, v in real().items()})
    with pytest.warns(UserWarning, match="step skipped"):
        model.optimize_parameters(1)
    assert model.skipped_steps == 1
    assert all(torch.equal(v, before[k]) for k, v in model.plugin.state_dict().items())
    monkeypatch.setattr(model, "losses", real)
    model.optimize_parameters(2)
    assert any(not torch.equal(v, before[k]) for k, v in model.plugin.state_dict().items())


def test_stage_and_threshold_options_are_checked(workdir):
    model, _ = make_model(workdir, "codebook")
    with pytest.raises(ValueError, match="stage: one of codebook, predictor, quality"):
        type(model)({**model.opt, "stage": "nope"})
    with pytest.raises(ValueError, match="hq_threshold"):
        make_model(workdir, "codebook", hq_top_percent=None)


def bare_model(workdir, stage, pretrain=None, score_csv="datasets/sample_hq_scores.csv", plugin=None,
               resume_state=None):
    """IQPModel of a tiny config, built without its datasets."""
    opt = yaml.safe_load((CONFIGS / f"swinir_{stage}.yml").read_text())
    opt.update(is_train=True, dist=False, rank=0, world_size=1, root_path=str(workdir))
    opt["network_g"]["host_checkpoint"] = str(workdir / "host.pth")
    opt["network_g"]["plugin"].update(plugin or {})
    opt["path"].update(pretrain_network_g=pretrain, models=str(workdir / "models"),
                       training_states=str(workdir / "states"), resume_state=resume_state)
    opt["datasets"]["train"]["score_csv"] = score_csv and str(workdir / score_csv)
    return build_model(opt)


def test_unsafe_pretrained_plugin_is_refused_in_one_line(workdir):
    from iqp_plugin.errors import CheckpointError

    evil = workdir / "evil_plugin.pth"
    torch.save({"params": {}, "hook": os.system}, evil)
    with pytest.raises(CheckpointError) as err:
        bare_model(workdir, "predictor", pretrain=str(evil))
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{evil} is not a safe checkpoint")


@pytest.mark.parametrize("stage", ["predictor", "quality"])
def test_training_without_scores_warns(workdir, stage):
    with pytest.warns(UserWarning, match=rf"stage {stage} without datasets:train:score_csv"):
        bare_model(workdir, stage, score_csv=None)


def test_a_plugin_that_cannot_be_saved_stops_the_run(workdir, monkeypatch):
    """A full disk while writing net_g_<iter>.pth: one line naming the file, and no training state without it."""
    import errno

    from iqp_plugin.errors import CheckpointError
    from iqp_plugin.io import plugin_checkpoint
    from iqp_plugin.models import training

    training.patch()
    model = bare_model(workdir, "predictor")

    def full_disk(path, ckpt):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(plugin_checkpoint, "write", full_disk)
    path = workdir / "models" / "net_g_7.pth"
    with pytest.raises(CheckpointError) as err:
        model.save(0, 7)
    assert str(err.value).startswith(f"Cannot save {path} ([Errno 28] No space left on device): training stopped.")
    assert "--auto_resume" in str(err.value) and not (workdir / "states" / "7.state").exists()


def test_a_plugin_of_another_width_names_the_file_and_the_options(workdir):
    from iqp_plugin.errors import CheckpointError
    from iqp_plugin.models import training

    training.patch()
    bare_model(workdir, "predictor").save(0, 5)
    saved = workdir / "models" / "net_g_5.pth"
    with pytest.raises(CheckpointError) as err:
        bare_model(workdir, "predictor", pretrain=str(saved), plugin={"dim": 48})
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{saved} does not fit network_g:plugin: ")
    assert "in the file, " in message and "it was saved with dim: 32 (now 48). Set the network options as" in message
    state = workdir / "states" / "5.state"
    with pytest.raises(CheckpointError, match=rf"dim: 32 \(now 48\)\. It was saved with the resume state {state}, "
                                              "and the network options changed since: resume with the options"):
        bare_model(workdir, "predictor", pretrain=str(saved), plugin={"dim": 48}, resume_state=str(state))
