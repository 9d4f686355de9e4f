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
from iqp_plugin.data.contamination import CONTAMINATION, contaminate
from iqp_plugin.data.datasets import IQPDegradedDataset
from iqp_plugin.data.sample_data import write_crops
from iqp_plugin.prior.score_files import load_scores
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
    for _name, params in m["contaminated"].items():
        lo, hi = CONTAMINATION["standard"]["blur_sigma"]
        assert lo <= params["blur_sigma"] <= hi
    assert {p.name for p in (data / "train").iterdir()} == train  # nothing else sits in the training folder

    # every training reads data/train or its top-scored subset, except the oracle, the one reader of pristine GT
    for prefix in beyond_gt.HOSTS.values():
        for key, (config, overrides) in beyond_gt.trainings(prefix, beyond_gt.BUDGETS["tiny"]["iters"]).items():
            opt = beyond_gt.read_options(str(beyond_gt.CONFIGS / f"{config}.yml"))
            root = overrides.get("datasets:train:dataroot_gt", opt["datasets"]["train"]["dataroot_gt"])
            assert root == ("data/train_pristine" if key.startswith("oracle") else
                            "data/train_top" if key == "filtered" or key.startswith("top_") else "data/train"), \
                (prefix, key)
            assert "datasets:train:dataroot_source" not in overrides  # by default, inputs come from the targets
        # --lq-from pristine: every input but the oracle's is degraded from the pristine copy of its target
        decoupled = beyond_gt.trainings(prefix, beyond_gt.BUDGETS["tiny"]["iters"], "pristine")
        assert {k: o.get("datasets:train:dataroot_source") for k, (_, o) in decoupled.items()} == {
            k: None if k.startswith("oracle") else "data/train_pristine" for k in decoupled}
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
    assert (beyond_gt_data.prepare(hq, work, train=10, heldout=4, fraction=0.5, size=64)["contaminated"]
            == first["contaminated"])
    with pytest.raises(SystemExit, match="delete"):
        beyond_gt_data.prepare(hq, work, train=10, heldout=4, fraction=0.5, size=64, level="light")


def test_the_development_split_survives_a_moved_work_folder(hq, tmp_path):
    manifest = beyond_gt_data.prepare(hq, tmp_path / "work", train=10, heldout=4, fraction=0.5, size=64)
    beyond_gt_data.development(tmp_path / "work", manifest)
    (tmp_path / "work").rename(tmp_path / "moved")
    links = sorted(beyond_gt_data.development(tmp_path / "moved", manifest).iterdir())
    assert links and all(p.resolve() == (tmp_path / "moved" / "data" / "train_pristine" / p.name) for p in links)


def test_each_setup_has_its_own_work_folder(tmp_path):
    dirs = {beyond_gt.work_dir(tmp_path, "small", lq, c) for lq in beyond_gt.LQ_FROM for c in (0.5, 0.25)}
    assert len(dirs) == 4 and tmp_path / "work_small" in dirs  # the default setup keeps its folder


def test_the_recipe_sets_every_plugin_training_and_shares_the_controls():
    """--recipe: every plug-in training takes the recipe's preset; stages 2-3 its scores CSV and top-scored copies,
    stage 2 its learning rate, under names of their own; the host and the controls do not depend on it."""
    iters = beyond_gt.BUDGETS["small"]["iters"]
    runs = {name: beyond_gt.trainings("sw", iters, recipe=name) for name in beyond_gt.RECIPES}
    controls = set(beyond_gt.CONTROLS)
    assert len({str({k: runs[n][k] for k in controls}) for n in runs}) == 1
    for name, jobs in runs.items():
        recipe = beyond_gt.RECIPES[name]
        for key, (config, opt) in jobs.items():
            if key in controls:
                assert not any(k.startswith("network_g:plugin") for k in opt), key
                continue
            assert opt["name"].startswith(f"bgt_sw_{name}_") and opt["network_g:plugin:preset"] == name, key
            start = opt.get("path:pretrain_network_g")
            assert start is None or start.startswith(f"experiments/bgt_sw_{name}_"), (key, start)
            assert opt["network_g:host_checkpoint"] == "experiments/bgt_sw_host/models/net_g_latest.pth"
            iqp = not key.startswith("top_")
            if config == "sw_codebook" or not iqp:
                assert "datasets:train:top_copies" not in opt, key
            else:
                assert (opt["datasets:train:top_copies"], opt["datasets:train:top_percent"]) == (
                    recipe.top_copies, recipe.top_percent), key
            if config != "sw_codebook":
                assert opt["datasets:train:score_csv"] == (beyond_gt.SCORE_CSVS[recipe.norm] if iqp else None), key
            assert opt.get("train:optim_g:lr") == (recipe.predictor_lr if config == "sw_predictor" else None), key
            assert opt["train:total_iter"] == iters[config.split("_")[1]], key
    assert runs["pixel"]["predictor"][1]["train:scheduler:milestones"] == [3 * iters["predictor"] // 4]


def test_plugin_filtering_is_the_recipes_plugin_on_the_top_targets_without_the_score():
    """Plug-in filtering: IQP's three stages with the same options and iterations, on the top-scored targets only;
    stages 2-3 see no scores (every target at the target score), and nothing else differs."""
    jobs = beyond_gt.trainings("sw", beyond_gt.BUDGETS["small"]["iters"], "pristine")
    own = ("name", "path:pretrain_network_g", "datasets:train:dataroot_gt", "datasets:train:score_csv",
           "datasets:train:top_copies", "datasets:train:top_percent")
    for stage in beyond_gt.STAGES:
        config, iqp = jobs[stage]
        top_config, top = jobs[f"top_{stage}"]
        assert top_config == config and top["datasets:train:dataroot_gt"] == "data/train_top"
        assert {k: v for k, v in top.items() if k not in own} == {k: v for k, v in iqp.items() if k not in own}
        if stage != "codebook":
            assert top["datasets:train:score_csv"] is None and "datasets:train:top_copies" not in top
            assert top["path:pretrain_network_g"] == (f"experiments/bgt_sw_pixel_top_"
                                                      f"{beyond_gt.STAGES[beyond_gt.STAGES.index(stage) - 1]}"
                                                      "/models/net_g_latest.pth")


def test_the_oracle_trains_as_long_as_the_longest_system():
    """The oracle: the host's schedule on the pristine GT, then as many iterations again as the host trained further
    (the plug-in's three stages), from there, at the same learning rate."""
    iters = beyond_gt.BUDGETS["small"]["iters"]
    jobs = beyond_gt.trainings("sw", iters)
    extra = sum(iters[s] for s in beyond_gt.STAGES)
    start, oracle, further = (jobs[k][1] for k in ("oracle_start", "oracle", "further"))
    assert start["train:total_iter"] == jobs["host"][1]["train:total_iter"] == iters["host"]
    assert oracle["path:pretrain_network_g"] == "experiments/bgt_sw_oracle/models/net_g_latest.pth"
    assert oracle["name"] == f"bgt_sw_oracle_i{extra}" and oracle["train:total_iter"] == extra
    assert {k: v for k, v in oracle.items()
            if k not in ("name", "path:pretrain_network_g", "datasets:train:dataroot_gt")} \
        == {k: v for k, v in further.items() if k not in ("name", "path:pretrain_network_g")}
    assert beyond_gt.NEEDS["oracle"] == ("oracle_start",)


def test_trainings_start_longest_chain_first_and_a_lone_one_gets_every_core(monkeypatch, tmp_path):
    """train_all: the plug-in's stages (the longest chain) start before the controls, each training only after
    those it needs, and on a CPU the cores are shared among the trainings running at once."""
    import threading
    import time

    log, lock = [], threading.Lock()
    seconds = {"bgt_sw_further_i7": 0.02, "bgt_sw_filtered_i7": 0.02, "bgt_sw_oracle_i7": 0.02,
               "bgt_sw_pixel_top_codebook": 0.02, "bgt_sw_pixel_top_predictor": 0.02, "bgt_sw_pixel_top_quality": 0.02,
               "bgt_sw_pixel_codebook": 0.3, "bgt_sw_pixel_predictor": 0.3}

    def fake_train(work, config, device, threads, **overrides):  # the controls quick, stages 1-2 slow
        with lock:
            log.append(("start", overrides["name"], threads))
        time.sleep(seconds.get(overrides["name"], 0.1))
        with lock:
            log.append(("end", overrides["name"], threads))

    monkeypatch.setattr(beyond_gt, "train", fake_train)
    monkeypatch.setattr(beyond_gt.os, "cpu_count", lambda: 4)
    jobs = {("sw", k): job
            for k, job in beyond_gt.trainings("sw", beyond_gt.BUDGETS["tiny"]["iters"], ablations=False).items()}
    timed = beyond_gt.train_all(tmp_path, jobs, beyond_gt.torch.device("cpu"), 2)
    assert set(timed) == {f"sw {k}" for _, k in jobs}
    names = {opt["name"]: key for (_, key), (_, opt) in jobs.items()}
    at = {(event, names[name]): i for i, (event, name, _) in enumerate(log)}
    starts = sorted((i, key) for (event, key), i in at.items() if event == "start")
    assert {key for _, key in starts[:2]} == {"host", "oracle_start"}
    assert at["start", "codebook"] < at["start", "further"]
    assert all(at["end", need] < at["start", key] for _, key in jobs for need in beyond_gt.NEEDS[key])
    threads = {names[n]: t for event, n, t in log if event == "start"}
    assert threads["host"] == threads["oracle_start"] == 2
    assert threads["quality"] == 4  # once the others are done, the plug-in's last stage runs alone


def test_one_pair_out_of_order_steers_at_exactly_the_threshold():
    """Spearman's rho over the five scores with one adjacent pair swapped is 0.9 exactly, so target 1 (rho >= 0.9)
    is met; two pairs swapped (0.8) miss it."""
    scores = list(beyond_gt.SCORES)
    assert beyond_gt.spearman(scores, [31.7, 31.9, 33.28, 33.33, 33.32]) == 0.9
    assert beyond_gt.spearman(scores, [31.9, 31.7, 33.28, 33.33, 33.32]) == 0.8


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


def test_an_unknown_recipe_is_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit):
        beyond_gt.main(["--data", str(tmp_path / "none"), "--out", str(tmp_path), "--recipe", "best"])
    assert "invalid choice: 'best'" in capsys.readouterr().err and not any(tmp_path.iterdir())


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
    assert trained == {"bgt_sw_host", "bgt_sw_oracle", "bgt_sw_oracle_i7"}  # no other control, no plug-in
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
    proc = subprocess.run(cmd + ["--hosts", "restoreformer,swinir"], cwd=REPO, capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "beyond_gt.json").read_text())
    meta = data["meta"]
    assert meta["n_train"] == 12 and meta["n_heldout"] == 4 and meta["n_contaminated"] == 6
    assert meta["recipe"] == "pixel"
    assert set(data["families"]) == {"restoreformer", "swinir"}
    for fam in data["families"].values():
        systems = fam["results"]
        assert {"host", beyond_gt.ORACLE, beyond_gt.FURTHER, beyond_gt.HOST_FILTERING, beyond_gt.PLUGIN_FILTERING,
                "IQP, continuous quality stage", "IQP, injection trained in stage 3",
                *(f"host + IQP @{s}" for s in beyond_gt.SCORES)} <= set(systems)
        for name, stats in systems.items():
            if name == "pristine (reference)":  # PSNR of an image against itself is infinite
                continue
            for metric, stat in stats.items():
                assert stat["n"] == 4 and (stat["mean"] is None or math.isfinite(stat["mean"])), (name, metric)
        targets = fam["targets"]
        assert set(targets) >= {"1 the score steers", "2 the prior beats more training",
                                "3 it holds up against filtering", "4 ablations"}
        assert set(targets["paired"]) == {"host", beyond_gt.FURTHER, beyond_gt.HOST_FILTERING,
                                          beyond_gt.PLUGIN_FILTERING, beyond_gt.ORACLE}
        assert "discrete - continuous" in targets["4 ablations"]
        assert (out / fam["grid"]).stat().st_size > 0
    assert (out / "sweep.png").stat().st_size > 0
    markdown = (out / "beyond_gt.md").read_text()
    assert "## restoreformer" in markdown and "## swinir" in markdown and "| 2a. setup valid" in markdown
    assert "| 3b. beats plug-in filtering" in markdown and "recipe `pixel`" in markdown
    assert len((out / "work_tiny" / "data" / "train_scores.csv").read_text().splitlines()) == 13

    # --recipe lean in the same folder: its own plug-ins, against the host and controls already trained
    experiments = out / "work_tiny" / "experiments"
    controls = {p: p.stat().st_mtime_ns
                for name in beyond_gt.control_names("sw", beyond_gt.BUDGETS["tiny"]["iters"]).values()
                for p in [experiments / name / "models" / "net_g_latest.pth"]}
    proc = subprocess.run(cmd + ["--no-ablations", "--recipe", "lean"], cwd=REPO, capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "beyond_gt.json").read_text())
    assert data["meta"]["recipe"] == "lean" and set(data["families"]) == {"swinir"}
    results = data["families"]["swinir"]["results"]
    assert {"IQP, HQ branch off", "IQP, no quality stage"} <= set(results)  # no training needed: still evaluated
    assert "IQP, continuous quality stage" not in results  # an ablation: --no-ablations skips it
    assert {p: p.stat().st_mtime_ns for p in controls} == controls  # reused, not trained again
    assert {p.name for p in experiments.iterdir() if p.name.startswith("bgt_sw_lean")} == {
        f"bgt_sw_lean_{stage}" for stage in (*beyond_gt.STAGES, *(f"top_{s}" for s in beyond_gt.STAGES))}
    data_dir = out / "work_tiny" / "data"
    minmax, ranks = (load_scores(data_dir / f) for f in ("train_scores.csv", "train_scores_rank.csv"))
    assert sorted(minmax, key=minmax.get) == sorted(ranks, key=ranks.get)  # the same order, so the same top sets
    assert min(ranks.values()) == 0.0 and max(ranks.values()) == 1.0
    seen = IQPDegradedDataset({"dataroot_gt": str(data_dir / "train"),
                               "score_csv": str(data_dir / "train_scores_rank.csv"),
                               "top_copies": 2, "top_percent": beyond_gt.BUDGETS["tiny"]["top_percent"], "gt_size": 32})
    twice = sorted(seen.gt_names[i] for i in seen.samples[len(seen.gt_names):])
    assert twice == sorted(p.name for p in (data_dir / "train_top").iterdir())  # copies repeat filtering's top set

    # --split development in the same folder: no training, the pristine copies of contaminated training images
    trained = {p: p.stat().st_mtime_ns for p in experiments.glob("*/models/net_g_latest.pth")}
    proc = subprocess.run(cmd + ["--no-ablations", "--recipe", "lean", "--split", "development"],
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
    assert "development split" in (out / "beyond_gt_development.md").read_text()
    assert (out / "grid_swinir_development.png").exists() and (out / "sweep_development.png").exists()
    assert json.loads((out / "beyond_gt.json").read_text())["meta"]["split"] == "heldout"  # the held-out run's, kept

    # --eval DIR: the same trained systems on a folder of the user's own pristine images, nothing trained
    own = tmp_path / "own"
    write_crops(own, 3, 96, seed=7, photos=PHOTOS)
    proc = subprocess.run(cmd + ["--no-ablations", "--recipe", "lean", "--eval", str(own)],
                          cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in experiments.glob("*/models/net_g_latest.pth")} == trained
    evaluated = json.loads((out / "beyond_gt_eval.json").read_text())
    assert evaluated["meta"]["split"] == "eval" and evaluated["meta"]["n_evaluated"] == 3
    assert evaluated["meta"]["eval_source"] == str(own.resolve())
    assert all(stat["n"] == 3 for stat in evaluated["families"]["swinir"]["results"]["host"].values())
    assert sorted(p.name for p in (data_dir / "eval").glob("*.png")) == sorted(
        p.with_suffix(".png").name for p in own.iterdir())
    assert str(own.resolve()) in (out / "beyond_gt_eval.md").read_text()
    with pytest.raises(SystemExit, match="no such folder"):
        beyond_gt.main(["--data", str(hq), "--out", str(out), "--eval", str(tmp_path / "missing")])
