"""benchmarks/beyond_gt.py: the contamination bookkeeping (pristine copies and held-out images never reach a
training other than the oracle's), and one tiny end-to-end run on the bundled sample crops (plumbing only:
no assertion on quality numbers)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks import beyond_gt, beyond_gt_data
from iqp_plugin.contamination import CONTAMINATION, contaminate
from iqp_plugin.datasets import IQPDegradedDataset
from iqp_plugin.sample_data import write_crops
from iqp_plugin.score_files import load_scores
from tests.conftest import REPO

#: scikit-image photos with texture everywhere (NIQE cannot score flat crops such as retina's black border)
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left")


def pixels(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


@pytest.fixture
def hq(tmp_path) -> Path:
    write_crops(tmp_path / "hq", 14, 96, seed=3, photos=PHOTOS)
    return tmp_path / "hq"


def test_contamination_bookkeeping(hq, tmp_path):
    work = tmp_path / "work"
    m = beyond_gt_data.prepare(hq, work, train=10, heldout=4, fraction=0.5, size=64, seed=1)
    data = work / "data"
    train, pristine, held = (set(m[s]) for s in beyond_gt_data.SPLITS)
    assert train == pristine and len(train) == 10 and len(held) == 4
    assert not train & held  # held-out images are never in a training folder
    assert set(m["contaminated"]) <= train and len(m["contaminated"]) == 5
    sources = sorted(p.name for p in hq.iterdir())
    assert {Path(n).stem for n in held} == {Path(n).stem for n in sources[-4:]}
    for name in train:
        same = np.array_equal(pixels(data / "train" / name), pixels(data / "train_pristine" / name))
        assert same == (name not in m["contaminated"]), name  # every contaminated target differs from its original
    for name, params in m["contaminated"].items():
        lo, hi = CONTAMINATION["standard"]["blur_sigma"]
        assert lo <= params["blur_sigma"] <= hi
    assert {p.name for p in (data / "train").iterdir()} == train  # nothing else sits in the training folder

    # every training reads data/train or its top-scored subset, except the oracle, the one reader of pristine GT
    for prefix in beyond_gt.HOSTS.values():
        for key, (config, overrides) in beyond_gt.trainings(prefix, beyond_gt.BUDGETS["tiny"]["iters"]).items():
            opt = beyond_gt.read_options(str(beyond_gt.CONFIGS / f"{config}.yml"))
            root = overrides.get("datasets:train:dataroot_gt", opt["datasets"]["train"]["dataroot_gt"])
            assert root == ("data/train_pristine" if key == "oracle" else
                            "data/train_top" if key == "filtered" else "data/train"), (prefix, key, root)
            assert "datasets:train:dataroot_source" not in overrides  # by default, inputs come from the targets
        # --lq-from pristine: every input but the oracle's is degraded from the pristine copy of its target
        decoupled = beyond_gt.trainings(prefix, beyond_gt.BUDGETS["tiny"]["iters"], "pristine")
        assert {k: o.get("datasets:train:dataroot_source") for k, (_, o) in decoupled.items()} == {
            k: None if k == "oracle" else "data/train_pristine" for k in decoupled}
        core = beyond_gt.trainings(prefix, beyond_gt.BUDGETS["tiny"]["iters"], ablations=False)
        assert tuple(core) == beyond_gt.CORE
        assert all(need in core for key in core for need in beyond_gt.NEEDS[key])
    scores = {name: i / 10 for i, name in enumerate(sorted(train))}
    folder, threshold = beyond_gt_data.top_scored(work, scores, 40)
    chosen = {p.name for p in folder.iterdir()}
    assert chosen == {n for n, s in scores.items() if s >= threshold} and len(chosen) == 4
    assert all((folder / n).resolve().parent == (data / "train").resolve() for n in chosen)


def test_prepare_is_reused_and_refuses_other_arguments(hq, tmp_path):
    work = tmp_path / "work"
    first = beyond_gt_data.prepare(hq, work, train=10, heldout=4, fraction=0.5, size=64)
    assert beyond_gt_data.prepare(hq, work, train=10, heldout=4, fraction=0.5, size=64) == first
    with pytest.raises(SystemExit, match="delete"):
        beyond_gt_data.prepare(hq, work, train=10, heldout=4, fraction=0.3, size=64)
    path = work / "data" / "manifest.json"  # a folder made before contamination levels existed is reused
    old = json.loads(path.read_text())
    del old["args"]["level"]
    path.write_text(json.dumps(old))
    assert beyond_gt_data.prepare(hq, work, train=10, heldout=4, fraction=0.5, size=64)["contaminated"] == first["contaminated"]
    with pytest.raises(SystemExit, match="delete"):
        beyond_gt_data.prepare(hq, work, train=10, heldout=4, fraction=0.5, size=64, level="light")


def test_each_setup_has_its_own_work_folder(tmp_path):
    dirs = {beyond_gt.work_dir(tmp_path, "small", lq, c) for lq in beyond_gt.LQ_FROM for c in (0.5, 0.25)}
    assert len(dirs) == 4 and tmp_path / "work_small" in dirs  # the default setup keeps its folder


@pytest.mark.parametrize("kernel, depth", [(1, 1), (3, 1), (5, 2)])
def test_pixel_codes_train_their_own_plugins_and_share_the_controls(kernel, depth):
    """--codes pixel (and --inject-kernel, --inject-depth): the host and the controls are the token run's, trained
    once; every plug-in training has its own name, starts from a plug-in of the same choice, and sets the choice's
    options."""
    iters = beyond_gt.BUDGETS["tiny"]["iters"]
    choice = beyond_gt.PluginChoice("pixel", kernel, depth)
    token, pixel = beyond_gt.trainings("sw", iters), beyond_gt.trainings("sw", iters, choice=choice)
    controls = ("host", "oracle", "further", "filtered")
    assert {k: pixel[k] for k in controls} == {k: token[k] for k in controls}
    plugins = {k: opt for k, (_, opt) in pixel.items() if k not in controls}
    other_names = {opt["name"] for _, opt in token.values()}
    for other in {(1, 1), (kernel, 1)} - {(kernel, depth)}:  # nor those of the same codes with another W_o
        one = beyond_gt.trainings("sw", iters, choice=beyond_gt.PluginChoice("pixel", *other))
        other_names |= {opt["name"] for _, opt in one.values()}
    assert "bilinear" not in plugins and plugins  # the bilinear ablation is of the token codes' pixel shuffle
    prefix = "bgt_sw_pixel" + {(1, 1): "_", (3, 1): "_k3_", (5, 2): "_k5_d2_"}[kernel, depth]
    for key, opt in plugins.items():
        assert opt["name"].startswith(prefix) and opt["name"] not in other_names, key
        assert opt["network_g:plugin:codes"] == "pixel" and opt["network_g:plugin:upsample"] == "bilinear", key
        assert opt.get("network_g:plugin:inject_kernel", 1) == kernel, key
        assert opt.get("network_g:plugin:inject_depth", 1) == depth, key
        start = opt.get("path:pretrain_network_g")
        assert start is None or start.startswith(f"experiments/{prefix}"), (key, start)
        assert opt["network_g:host_checkpoint"] == "experiments/bgt_sw_host/models/net_g_latest.pth"


def test_trainings_start_longest_chain_first_and_a_lone_one_gets_every_core(monkeypatch, tmp_path):
    """train_all: the plug-in's stages (the longest chain) start before the controls, each training only after
    those it needs, and on a CPU the cores are shared among the trainings running at once."""
    import threading
    import time

    log, lock = [], threading.Lock()
    seconds = {"bgt_sw_further": 0.02, "bgt_sw_filtered": 0.02, "bgt_sw_codebook": 0.3, "bgt_sw_predictor": 0.3}

    def fake_train(work, config, device, threads, **overrides):  # the controls quick, stages 1-2 slow
        with lock:
            log.append(("start", overrides["name"], threads))
        time.sleep(seconds.get(overrides["name"], 0.1))
        with lock:
            log.append(("end", overrides["name"], threads))

    monkeypatch.setattr(beyond_gt, "train", fake_train)
    monkeypatch.setattr(beyond_gt.os, "cpu_count", lambda: 4)
    jobs = {("sw", k): job for k, job in beyond_gt.trainings("sw", beyond_gt.BUDGETS["tiny"]["iters"], ablations=False).items()}
    timed = beyond_gt.train_all(tmp_path, jobs, beyond_gt.torch.device("cpu"), 2)
    assert set(timed) == {f"sw {k}" for _, k in jobs}
    names = {opt["name"]: key for (_, key), (_, opt) in jobs.items()}
    at = {(event, names[name]): i for i, (event, name, _) in enumerate(log)}
    starts = sorted((i, key) for (event, key), i in at.items() if event == "start")
    assert [key for _, key in starts[:2]] == ["host", "oracle"] and at["start", "codebook"] < at["start", "further"]
    assert all(at["end", need] < at["start", key] for _, key in jobs for need in beyond_gt.NEEDS[key])
    threads = {names[n]: t for event, n, t in log if event == "start"}
    assert threads["host"] == threads["oracle"] == threads["further"] == threads["filtered"] == 2
    assert threads["predictor"] == threads["quality"] == 4  # once the controls are done, the plug-in runs alone


def test_rank_scores_train_their_own_plugins_on_their_own_csv():
    """--norm rank: the plug-in trainings (all three stages, the ablations' too) read the rank-normalised CSV under
    names of their own; the host and the controls are the min-max run's."""
    iters = beyond_gt.BUDGETS["tiny"]["iters"]
    minmax = beyond_gt.trainings("sw", iters, choice=beyond_gt.PluginChoice("pixel", 7))
    rank = beyond_gt.trainings("sw", iters, choice=beyond_gt.PluginChoice("pixel", 7, norm="rank"))
    controls = ("host", "oracle", "further", "filtered")
    assert {k: rank[k] for k in controls} == {k: minmax[k] for k in controls}
    assert all("datasets:train:score_csv" not in opt for _, opt in minmax.values())
    for key, (_, opt) in rank.items():
        if key not in controls:
            assert opt["name"].startswith("bgt_sw_pixel_k7_rank_"), key
            assert opt["datasets:train:score_csv"] == "data/train_scores_rank.csv", key
            start = opt.get("path:pretrain_network_g")
            assert start is None or start.startswith("experiments/bgt_sw_pixel_k7_rank_"), (key, start)


def test_one_pair_out_of_order_steers_at_exactly_the_threshold():
    """Spearman's rho over the five scores with one adjacent pair swapped is 0.9 exactly, so target 1 (rho >= 0.9)
    is met; two pairs swapped (0.8) miss it."""
    scores = list(beyond_gt.SCORES)
    assert beyond_gt.spearman(scores, [31.7, 31.9, 33.28, 33.33, 33.32]) == 0.9
    assert beyond_gt.spearman(scores, [31.9, 31.7, 33.28, 33.33, 33.32]) == 0.8


def test_patch_and_stage_iters_train_their_own_plugins():
    """--quality-iters sets stage 3 of every plug-in (the ablations' too), --predictor-iters stage 2 (and its
    learning-rate step), --predictor-lr stage 2's learning rate, --predictor-pixel-weight its L1 image loss and
    --patch every stage, each under names of their own; the host and the oracle stay the same, and the host trained
    further and the filtering host train for as many iterations as the plug-in's three stages, under names of their
    own (a learning rate or loss weight changes no control)."""
    iters = beyond_gt.BUDGETS["small"]["iters"]
    controls = {"host", "oracle", "further", "filtered"}
    base = beyond_gt.trainings("sw", iters, choice=beyond_gt.PluginChoice("pixel", 7))
    longer = beyond_gt.trainings("sw", iters, choice=beyond_gt.PluginChoice("pixel", 7, quality_iters=200))
    assert {k for k in longer if longer[k] == base[k]} == {"host", "oracle"}
    plugin_total = iters["codebook"] + iters["predictor"] + 200
    for key in ("further", "filtered"):
        assert base[key][1]["name"] == f"bgt_sw_{key}" and longer[key][1]["name"] == f"bgt_sw_{key}_i{plugin_total}"
        assert base[key][1]["train:total_iter"] == sum(iters[s] for s in beyond_gt.STAGES)
        assert longer[key][1]["train:total_iter"] == plugin_total
    assert all(opt["name"].startswith("bgt_sw_pixel_k7_q200_") for key, (_, opt) in longer.items() if key not in controls)
    for key in ("quality", "continuous", "injection", "teacher", "lean"):
        assert longer[key][1]["train:total_iter"] == 200 and base[key][1]["train:total_iter"] == iters["quality"], key
    assert longer["predictor"][1]["train:total_iter"] == iters["predictor"]
    stage2 = beyond_gt.trainings("sw", iters, choice=beyond_gt.PluginChoice("pixel", 7, quality_iters=200,
                                                                          predictor_iters=800))
    assert stage2["predictor"][1]["name"] == "bgt_sw_pixel_k7_s800_q200_predictor"
    assert stage2["predictor"][1]["train:total_iter"] == 800
    assert stage2["predictor"][1]["train:scheduler:milestones"] == [600]
    assert stage2["filtered"][1]["train:total_iter"] == iters["codebook"] + 800 + 200
    slower = beyond_gt.trainings("sw", iters, choice=beyond_gt.PluginChoice("pixel", 7, predictor_iters=800))
    faster = beyond_gt.trainings("sw", iters, choice=beyond_gt.PluginChoice("pixel", 7, predictor_iters=800,
                                                                          predictor_lr=4e-3))
    stage2_keys = {k for k, (config, _) in faster.items() if config == "sw_predictor"}
    assert stage2_keys == {"predictor", "teacher_predictor", "lean_predictor"}
    assert all(faster[k][1]["train:optim_g:lr"] == 4e-3 for k in stage2_keys)
    assert not any("train:optim_g:lr" in opt for k, (_, opt) in faster.items() if k not in stage2_keys | controls)
    assert faster["quality"][1]["path:pretrain_network_g"] == "experiments/bgt_sw_pixel_k7_s800_lr0.004_predictor/models/net_g_latest.pth"
    assert {k: faster[k] for k in controls} == {k: slower[k] for k in controls}  # the rate changes no control
    assert faster["predictor"][1] == {**slower["predictor"][1], "name": "bgt_sw_pixel_k7_s800_lr0.004_predictor",
                                      "train:optim_g:lr": 4e-3, "path:pretrain_network_g":
                                          "experiments/bgt_sw_pixel_k7_s800_lr0.004_codebook/models/net_g_latest.pth"}
    weighted = beyond_gt.trainings("sw", iters, choice=beyond_gt.PluginChoice("pixel", 7, predictor_iters=800,
                                                                             predictor_pixel_weight=10.0))
    assert all(weighted[k][1]["train:pixel_opt:loss_weight"] == 10.0 for k in stage2_keys)
    assert not any("train:pixel_opt:loss_weight" in opt for k, (_, opt) in weighted.items() if k not in stage2_keys)
    assert weighted["quality"][1]["path:pretrain_network_g"] == "experiments/bgt_sw_pixel_k7_s800_pw10_predictor/models/net_g_latest.pth"
    assert {k: weighted[k] for k in controls} == {k: slower[k] for k in controls}  # the weight changes no control
    finer = beyond_gt.PluginChoice("pixel", 7, patch=2, norm="rank", quality_iters=200)
    assert finer.tag == "_pixel_k7_p2_rank_q200" and finer.options["patch"] == 2 and "index_head" not in finer.options
    similar = beyond_gt.PluginChoice("pixel", 7, patch=2, index_head="similarity")
    assert similar.tag == "_pixel_k7_p2_sim" and similar.options["index_head"] == "similarity"
    assert all(opt["network_g:plugin:index_head"] == "similarity"
               for key, (_, opt) in beyond_gt.trainings("sw", iters, choice=similar).items() if key not in controls)
    assert all(opt["network_g:plugin:patch"] == 2
               for key, (_, opt) in beyond_gt.trainings("sw", iters, choice=finer).items() if key not in controls)


def test_top_copies_oversample_the_top_targets_in_stages_2_and_3():
    """--top-copies: the plug-in's stages 2-3 set their dataset's top_copies and top_percent (the filtering baseline's
    share), so that each top-scored target appears C times; stage 1 and the controls do not."""
    iters = beyond_gt.BUDGETS["tiny"]["iters"]
    once = beyond_gt.trainings("sw", iters, "pristine", choice=beyond_gt.PluginChoice("pixel", 7))
    twice = beyond_gt.trainings("sw", iters, "pristine", choice=beyond_gt.PluginChoice("pixel", 7, top_copies=2),
                                top_percent=30)
    for key, (config, opt) in twice.items():
        if config.endswith(("_predictor", "_quality")):
            assert opt["name"].startswith("bgt_sw_pixel_k7_o2_"), key
            assert (opt["datasets:train:top_copies"], opt["datasets:train:top_percent"]) == (2, 30), key
            own = ("name", "path:pretrain_network_g", "datasets:train:top_copies", "datasets:train:top_percent")
            assert {k: v for k, v in opt.items() if k not in own} == {
                k: v for k, v in once[key][1].items() if k not in own}, key  # nothing else changes
        elif key in ("host", "oracle", "further", "filtered"):
            assert opt == once[key][1], key
        else:  # stage 1: the codebooks learn from the training GT as it is
            assert "datasets:train:score_csv" not in opt and "datasets:train:dataroot_gt" not in opt, key


def test_an_interrupted_rank_scoring_is_normalised_again(tmp_path):
    """A rank CSV left as the min-max copy (a run stopped while re-normalising) is not taken for ranks."""
    work = tmp_path / "work"
    write_crops(work / "data" / "train", 4, 96, seed=3, photos=PHOTOS)
    beyond_gt.score_training_gt(work, {"contaminated": []})
    data = work / "data"
    for suffix in (".csv", ".json"):
        (data / f"train_scores_rank{suffix}").write_bytes((data / f"train_scores{suffix}").read_bytes())
    beyond_gt.score_training_gt(work, {"contaminated": []}, "rank")
    assert json.loads((data / "train_scores_rank.json").read_text())["norm"] == "rank"
    ranks = sorted(load_scores(data / "train_scores_rank.csv").values())  # 101 knots: ranks to within 0.01
    assert ranks == pytest.approx([0, 1 / 3, 2 / 3, 1], abs=0.01)


@pytest.mark.parametrize("flag, value, message", [("--inject-kernel", "2", "an odd positive integer, got 2"),
                                                   ("--inject-depth", "0", "a positive integer, got 0"),
                                                   ("--patch", "0", "a positive integer, got 0"),
                                                   ("--quality-iters", "0", "a positive integer, got 0"),
                                                   ("--top-copies", "0", "a positive integer, got 0"),
                                                   ("--predictor-lr", "0", "strictly between 0 and 1, got 0.0"),
                                                   ("--predictor-pixel-weight", "-1", "positive, got -1.0"),
                                                   ("--code-temperature", "-1", ">= 0")])
def test_bad_plugin_choice_is_refused_before_any_work(tmp_path, flag, value, message):
    with pytest.raises(SystemExit, match=f"{flag} must be {message}"):
        beyond_gt.main(["--data", str(tmp_path / "none"), "--out", str(tmp_path), flag, value])
    assert not any(tmp_path.iterdir())


def test_contaminate_lowers_sharpness_and_keeps_size():
    rng = np.random.default_rng(0)
    img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    out, params = contaminate(img, np.random.default_rng(1))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert set(params) == set(CONTAMINATION["standard"])
    lap = lambda x: cv2.Laplacian(x.astype(np.float32), cv2.CV_32F).var()  # noqa: E731
    assert lap(out) < 0.5 * lap(img)
    light, light_params = contaminate(img, np.random.default_rng(1), "light")
    assert all(lo <= light_params[k] <= hi for k, (lo, hi) in CONTAMINATION["light"].items())
    assert lap(out) < lap(light) < lap(img)  # the same draws, a milder copy


def test_light_contamination_is_recorded_and_gets_its_own_work_dir(hq, tmp_path):
    m = beyond_gt_data.prepare(hq, tmp_path / "work", train=10, heldout=4, fraction=0.5, size=64, level="light")
    assert m["contamination"] == json.loads(json.dumps(CONTAMINATION["light"])) and len(m["contaminated"]) == 5
    for params in m["contaminated"].values():
        assert all(lo <= params[k] <= hi for k, (lo, hi) in CONTAMINATION["light"].items())
    with pytest.raises(SystemExit, match="delete"):  # the same folder made at another level is refused
        beyond_gt_data.prepare(hq, tmp_path / "work", train=10, heldout=4, fraction=0.5, size=64)
    names = {beyond_gt.work_dir(tmp_path, "small", "pristine", 0.75, level).name for level in CONTAMINATION}
    assert names == {"work_small_lq-pristine_c0.75", "work_small_lq-pristine_c0.75_light"}


def test_precondition_trains_host_and_oracle_only(hq, tmp_path):
    write_crops(hq, 24, 96, seed=3, photos=PHOTOS)
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "benchmarks" / "beyond_gt.py"), "--budget", "tiny", "--device", "cpu",
           "--data", str(hq), "--out", str(out), "--hosts", "swinir", "--contamination", "light", "--precondition"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trained = {p.name for p in (out / "work_tiny_light" / "experiments").iterdir()}
    assert trained == {"bgt_sw_host", "bgt_sw_oracle"}  # no control or plug-in training
    assert not (out / "beyond_gt.json").exists()
    data = json.loads((out / "precondition.json").read_text())
    fam = data["families"]["swinir"]
    psnr = fam["psnr"]
    assert set(psnr) == {"input (LQ)", "host", "oracle"} and all(math.isfinite(v) for v in psnr.values())
    assert fam["host gain over input (dB)"] == pytest.approx(psnr["host"] - psnr["input (LQ)"])
    assert fam["setup valid"] == (fam["host gain over input (dB)"] >= 1 and fam["oracle gap (dB)"] >= 0.5)
    assert 0 <= data["top_contaminated_fraction"] <= 1
    assert "| swinir |" in (out / "precondition.md").read_text()


def test_tiny_run_on_bundled_crops(hq, tmp_path):
    write_crops(hq, 24, 96, seed=3, photos=PHOTOS)
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "benchmarks" / "beyond_gt.py"), "--budget", "tiny", "--device", "cpu",
           "--data", str(hq), "--out", str(out), "--jobs", "2"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "beyond_gt.json").read_text())
    meta = data["meta"]
    assert meta["n_train"] == 12 and meta["n_heldout"] == 4 and meta["n_contaminated"] == 6
    assert set(data["families"]) == {"restoreformer", "swinir"}
    for fam in data["families"].values():
        systems = fam["results"]
        assert {"host", "oracle (pristine GT)", "host trained further", "host on top-scored GT",
                *(f"{system} @{s}" for s in beyond_gt.SCORES for system in ("host + IQP", beyond_gt.TEACHER))} <= set(systems)
        for name, stats in systems.items():
            if name == "pristine (reference)":  # PSNR of an image against itself is infinite
                continue
            for metric, stat in stats.items():
                assert stat["n"] == 4 and (stat["mean"] is None or math.isfinite(stat["mean"])), (name, metric)
        assert set(fam["targets"]) >= {"1 the score steers", "2 the prior beats more training",
                                       "3 it holds up against filtering", "4 ablations", "teacher-forced"}
        assert set(fam["targets"]["teacher-forced"]) >= {"1 the score steers", "2 the prior beats more training"}
        assert (out / fam["grid"]).stat().st_size > 0
    assert (out / "sweep.png").stat().st_size > 0
    markdown = (out / "beyond_gt.md").read_text()
    assert "## restoreformer" in markdown and "## swinir" in markdown and "| 2a. setup valid" in markdown
    assert f"Targets for {beyond_gt.TEACHER}" in markdown
    assert len((out / "work_tiny" / "data" / "train_scores.csv").read_text().splitlines()) == 13

    # --codes pixel --norm rank in the same folder: its own plug-ins, against the host and controls already trained
    experiments = out / "work_tiny" / "experiments"
    controls = {p: p.stat().st_mtime_ns for k in ("host", "oracle", "further", "filtered")
                for p in [experiments / f"bgt_sw_{k}" / "models" / "net_g_latest.pth"]}
    proc = subprocess.run(cmd + ["--hosts", "swinir", "--no-ablations", "--codes", "pixel", "--norm", "rank",
                                 "--top-copies", "2"], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "beyond_gt.json").read_text())
    assert data["meta"]["codes"] == "pixel" and data["meta"]["norm"] == "rank" and set(data["families"]) == {"swinir"}
    assert data["meta"]["top_copies"] == 2
    results = data["families"]["swinir"]["results"]
    assert {"IQP, HQ branch off", "IQP, no quality stage"} <= set(results)  # no training needed: still evaluated
    assert not any(name.startswith(beyond_gt.TEACHER) for name in results)  # an ablation: --no-ablations skips it
    assert "teacher-forced" not in data["families"]["swinir"]["targets"]
    assert {p: p.stat().st_mtime_ns for p in controls} == controls  # reused, not trained again
    assert {p.name for p in experiments.iterdir() if p.name.startswith("bgt_sw_pixel_rank")} == {
        f"bgt_sw_pixel_rank_o2_{stage}" for stage in beyond_gt.STAGES}
    data_dir = out / "work_tiny" / "data"
    seen = IQPDegradedDataset({"dataroot_gt": str(data_dir / "train"), "score_csv": str(data_dir / "train_scores_rank.csv"),
                               "top_copies": 2, "top_percent": beyond_gt.BUDGETS["tiny"]["top_percent"], "gt_size": 32})
    twice = sorted(seen.gt_names[i] for i in seen.samples[len(seen.gt_names):])
    assert twice == sorted(p.name for p in (data_dir / "train_top").iterdir())  # stages 2-3 repeated filtering's top set
    minmax, ranks = (load_scores(out / "work_tiny" / "data" / f) for f in ("train_scores.csv", "train_scores_rank.csv"))
    assert sorted(minmax, key=minmax.get) == sorted(ranks, key=ranks.get)  # the same order, so the same top sets
    assert min(ranks.values()) == 0.0 and max(ranks.values()) == 1.0

    # --split development in the same folder: no training, the pristine copies of contaminated training images;
    # --code-temperature adds the same plug-in decoding its codes' softmax mixture, at every score
    trained = {p: p.stat().st_mtime_ns for p in experiments.glob("*/models/net_g_latest.pth")}
    proc = subprocess.run(cmd + ["--hosts", "swinir", "--no-ablations", "--codes", "pixel", "--norm", "rank",
                                 "--top-copies", "2", "--split", "development", "--code-temperature", "0.5"],
                          cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in experiments.glob("*/models/net_g_latest.pth")} == trained
    development = json.loads((out / "beyond_gt_development.json").read_text())
    manifest = json.loads((data_dir / "manifest.json").read_text())
    links = sorted((data_dir / "development").iterdir())
    assert [p.name for p in links] == sorted(list(manifest["contaminated"])[:beyond_gt_data.DEVELOPMENT])
    assert all(p.resolve() == (data_dir / "train_pristine" / p.name).resolve() for p in links)
    assert not {p.name for p in links} & set(manifest["heldout"])
    assert development["meta"]["split"] == "development" and development["meta"]["n_evaluated"] == len(links) == 6
    assert all(stat["n"] == 6 for stat in development["families"]["swinir"]["results"]["host"].values())
    mixture = beyond_gt.MIXTURE.format(0.5)
    assert {f"{mixture} @{s}" for s in beyond_gt.SCORES} <= set(development["families"]["swinir"]["results"])
    assert set(development["families"]["swinir"]["targets"]["mixture"][mixture]) >= {
        "1 the score steers", "3 it holds up against filtering"}
    assert f"Targets for {mixture}" in (out / "beyond_gt_development.md").read_text()
    assert "development split" in (out / "beyond_gt_development.md").read_text()
    assert (out / "grid_swinir_development.png").exists() and (out / "sweep_development.png").exists()
    assert json.loads((out / "beyond_gt.json").read_text())["meta"]["split"] == "heldout"  # the held-out run's, kept
