"""Training that fails loudly: a checkpoint that cannot be saved stops the run and --auto_resume takes the newest
complete state; option-file mistakes end in one line naming the key and the file (issue 42, cases 3, 11, 12)."""
import errno
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from iqp_plugin.cli import run as run_command
from iqp_plugin.data.sample_data import write_crops
from iqp_plugin.errors import CheckpointError, InvalidInputError
from iqp_plugin.io.options import read_options
from iqp_plugin.io.training_keys import DATASET_KEYS, MODEL_KEYS, check_training_options, missing_option
from iqp_plugin.models import training
from tests.conftest import REPO
from tests.test_train import CONFIG, ENV, run

EXP = "tiny_swinir_srmodel"

# Runs iqp_plugin.train with torch.save failing as on a full disk for the file named <name> (written through a
# temporary file beside it).
FULL_DISK_WRITER = """
import errno, sys
import torch

name, real_save = sys.argv[1], torch.save


def full_disk(obj, f, *args, **kwargs):
    if f".{name}." in str(f) or str(f).endswith(name):
        raise OSError(errno.ENOSPC, "No space left on device")
    return real_save(obj, f, *args, **kwargs)


torch.save = full_disk
from iqp_plugin.cli import run
from iqp_plugin.train import main
run(main, sys.argv[2:])
"""


@pytest.fixture
def workdir(tmp_path):
    write_crops(tmp_path / "datasets" / "sample_hq", count=8, size=48)
    return tmp_path


# ---------------------------------------------------------------- case 3: a full disk during training
def test_full_disk_while_saving_a_network_stops_the_run_and_auto_resume_goes_on(workdir):
    """BasicSR logged "Still cannot save net_g_6.pth. Just ignore it.", saved 6.state and exited 0."""
    (workdir / "full.py").write_text(FULL_DISK_WRITER)
    out = subprocess.run([sys.executable, "full.py", "net_g_6.pth", "-opt", str(CONFIG)], cwd=workdir, env=ENV,
                         capture_output=True, text=True, timeout=600)
    exp = workdir / "experiments" / EXP
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert re.fullmatch(rf"iqp: error: Cannot save {exp / 'models' / 'net_g_6.pth'} \(\[Errno 28\] No space left on "
                        r"device\): training stopped\. .*rerun with --auto_resume.*", out.stderr.splitlines()[-1])
    assert sorted(p.name for p in (exp / "training_states").iterdir()) == ["3.state"]  # no 6.state without its net
    assert sorted(p.name for p in (exp / "models").iterdir()) == ["net_g_3.pth"]

    resumed = run(workdir, "-opt", str(CONFIG), "--auto_resume", "--force_yml", "train:total_iter=9")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = "".join(p.read_text() for p in exp.glob("train_*.log"))
    assert "Resuming training from epoch: 1, iter: 3." in log and "Just ignore it" not in log
    assert (exp / "models" / "net_g_9.pth").is_file()


def save_state(path, it):
    torch.save({"epoch": it // 2, "iter": it, "optimizers": [], "schedulers": []}, path)


def test_auto_resume_takes_the_newest_state_whose_network_files_are_complete(tmp_path, capsys):
    """The state a full disk left behind under BasicSR: 6.state saved, net_g_6.pth not."""
    exp = tmp_path / "experiments" / "exp"
    (exp / "training_states").mkdir(parents=True)
    (exp / "models").mkdir()
    for it in (3, 6):
        save_state(exp / "training_states" / f"{it}.state", it)
    torch.save({"params": {}}, exp / "models" / "net_g_3.pth")
    (exp / "models" / ".net_g_6.pth.123.tmp").write_bytes(b"half")
    opt = {"auto_resume": True, "root_path": str(tmp_path), "name": "exp", "rank": 0, "network_g": {"type": "X"},
           "path": {"resume_state": None, "models": str(exp / "models")}}
    assert training.load_resume_state(opt)["iter"] == 3
    assert opt["path"]["pretrain_network_g"] == str(exp / "models" / "net_g_3.pth")
    err = capsys.readouterr().err
    assert (f"skipped training state {exp / 'training_states' / '6.state'} (its network file "
            f"{exp / 'models' / 'net_g_6.pth'} was not saved); resuming from the newest complete one, "
            f"{exp / 'training_states' / '3.state'}.") in err
    assert not (exp / "models" / ".net_g_6.pth.123.tmp").exists()

    explicit = {**opt, "auto_resume": False, "path": {**opt["path"], "resume_state": str(exp / "training_states" /
                                                                                          "6.state")}}
    with pytest.raises(InvalidInputError, match=r"Resume state .*6\.state has no network file .*net_g_6\.pth \(it "
                                                r"was not saved\): pass an older state"):
        training.load_resume_state(explicit)


def test_a_training_state_that_cannot_be_saved_stops_the_run(tmp_path, monkeypatch):
    """BasicSR's retries are kept for passing errors; a full disk fails at once, and never silently."""
    from basicsr.models import base_model

    training.patch()
    model = SimpleNamespace(opt={"path": {"training_states": str(tmp_path)}}, optimizers=[], schedulers=[])
    calls = []
    real_save = torch.save

    def flaky(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 1:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(training.time, "sleep", lambda s: None)
    monkeypatch.setattr(torch, "save", flaky)
    base_model.BaseModel.save_training_state(model, 1, 4)
    assert len(calls) == 2 and (tmp_path / "4.state").is_file()

    def full(obj, f, *args, **kwargs):
        calls.append(f)
        raise OSError(errno.ENOSPC, "No space left on device")

    calls.clear()
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointError, match=rf"Cannot save {re.escape(str(tmp_path / '6.state'))} \(\[Errno 28\]"):
        base_model.BaseModel.save_training_state(model, 2, 6)
    assert len(calls) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["4.state"]


# ---------------------------------------------------------------- cases 11 and 12: option mistakes
def train_error(tmp_path, capsys, monkeypatch, *args):
    """Run ``iqp train ARGS`` in-process in ``tmp_path``; the one line it ends in (exit code 2)."""
    from iqp_plugin import train

    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        run_command(train.main, list(args))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("iqp: error: "), err
    assert not (tmp_path / "experiments").exists()  # refused before anything was written
    return err.strip()


def variant(tmp_path, change):
    opt = yaml.safe_load(CONFIG.read_text())
    change(opt)
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump(opt))
    return str(path)


@pytest.mark.parametrize("iters", [0, -3])
def test_total_iter_below_one_is_refused(workdir, capsys, monkeypatch, iters):
    """It trained nothing, wrote net_g_latest.pth and exited 0."""
    path = variant(workdir, lambda o: o["train"].update(total_iter=iters))
    err = train_error(workdir, capsys, monkeypatch, "-opt", path)
    assert err == (f"iqp: error: Option file {path}: train:total_iter is {iters}: training would end before its "
                   "first step and save an untrained network; set a positive number of iterations.")


def drop(section, key):
    return lambda opt: section(opt).pop(key)


MISTAKES = {
    "typo of total_iter": (lambda o: o["train"].update(total_iters=o["train"].pop("total_iter")),
                           "unknown key train:total_iters (did you mean: total_iter?). Rename or remove the unknown "
                           "key."),
    "no dataroot_gt": (drop(lambda o: o["datasets"]["train"], "dataroot_gt"),
                       "missing datasets:train:dataroot_gt (the folder of target (GT) images). Add the missing key."),
    "lrr for lr": (lambda o: o["train"]["optim_g"].update(lrr=o["train"]["optim_g"].pop("lr")),
                   "unknown key train:optim_g:lrr (did you mean: lr?)."),
    "ignored top-level typo": (lambda o: o.update(manual_sed=1), "unknown key manual_sed (did you mean: manual_seed?)"),
    "no use_tb_logger": (drop(lambda o: o["logger"], "use_tb_logger"), "missing logger:use_tb_logger (true or false)"),
    "scheduler typo": (lambda o: o["train"]["scheduler"].update(gama=0.5),
                       "unknown key train:scheduler:gama (did you mean: gamma?)"),
    "unknown phase": (lambda o: o["datasets"].update(valid=dict(o["datasets"]["train"])),
                      "datasets:valid is not a phase BasicSR trains with (did you mean: val?)"),
    "dataset typo": (lambda o: o["datasets"]["train"].update(noise_rnage=[0, 1]),
                     "unknown key datasets:train:noise_rnage (did you mean: noise_range?)"),
    "unknown optimiser": (lambda o: o["train"]["optim_g"].update(type="AdamW"),
                          "train:optim_g:type 'AdamW' is not one BasicSR 1.4.2 builds (did you mean: Adam?)"),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_option_file_mistakes_end_in_one_line(workdir, capsys, monkeypatch, mistake):
    change, expected = MISTAKES[mistake]
    path = variant(workdir, change)
    err = train_error(workdir, capsys, monkeypatch, "-opt", path)
    assert err.startswith(f"iqp: error: Option file {path}: ") and expected in err


def test_num_gpu_without_cuda_ends_in_one_line(workdir, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    path = variant(workdir, lambda o: o.update(num_gpu=1))
    err = train_error(workdir, capsys, monkeypatch, "-opt", path)
    assert err == (f"iqp: error: Option file {path}: num_gpu is 1, but torch sees no CUDA GPU on this machine: set "
                   "num_gpu: 0 to train on the CPU, or 'auto' (e.g. --force_yml num_gpu=0).")


@pytest.mark.parametrize("entry, expected", [
    ("trian:total_iter=3", "--force_yml 'trian:total_iter=3': the option file {path} has no section trian (did you "
                           "mean: train?); --force_yml sets keys inside existing sections only"),
    ("train:total_iter", "--force_yml 'train:total_iter': expected KEY=VALUE with exactly one '='"),
    ("train:scheduler:milestones=[1,2", "--force_yml 'train:scheduler:milestones=[1,2': cannot read the value"),
    ("train:total_iterr=3", "Option file {path}: unknown key train:total_iterr (did you mean: total_iter?) (set by "
                            "--force_yml train:total_iterr=3)"),
    ("train:total_iter=0", "Option file {path}: train:total_iter is 0"),
])
def test_bad_force_yml_ends_in_one_line(workdir, capsys, monkeypatch, entry, expected):
    err = train_error(workdir, capsys, monkeypatch, "-opt", str(CONFIG), "--force_yml", "logger:print_freq=1", entry)
    assert err.startswith(f"iqp: error: {expected.format(path=CONFIG)}"), err


def test_auto_resume_after_changing_the_plugin_width_names_the_file_and_the_fix(workdir):
    first = run(workdir, "-opt", str(CONFIG), "--force_yml", "train:total_iter=3")
    assert first.returncode == 0, first.stderr[-3000:]
    out = run(workdir, "-opt", str(CONFIG), "--auto_resume", "--force_yml", "network_g:plugin:dim=48",
              "train:total_iter=6")
    exp = workdir / "experiments" / EXP
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.stderr.splitlines()[-1] == (
        f"iqp: error: {exp / 'models' / 'net_g_3.pth'} does not fit network_g: plugin.pos is [1, 256, 32] in the "
        f"file, [1, 256, 48] in the network (and 42 more). It was saved with the resume state "
        f"{exp / 'training_states' / '3.state'}, and the network options changed since: resume with the options of "
        f"that run, or train afresh under another name (or move experiments/{EXP} away).")


def test_optimiser_states_that_do_not_fit_name_the_state(tmp_path):
    """After a change of the trained parameters (e.g. quality_trains) BasicSR's resume raised a bare ValueError,
    or the first step a size mismatch."""
    def model(*shapes):
        params = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
        return SimpleNamespace(opt={"name": "exp", "path": {"resume_state": "exp/6.state"}},
                               optimizers=[torch.optim.Adam(params)], schedulers=[]), params

    old, params = model((2,), (3,))
    sum(p.sum() for p in params).backward()
    old.optimizers[0].step()
    state = {"optimizers": [old.optimizers[0].state_dict()], "schedulers": []}
    with pytest.raises(CheckpointError, match=r"Training state exp/6\.state does not fit this run's optimisers .*"
                                              r"resume with the options of that run, or train afresh"):
        training._resume_training(model((2,))[0], state)
    with pytest.raises(CheckpointError, match=r"exp/6\.state does not fit this run's optimisers \(its exp_avg is "
                                              r"\[2\], the weight \[4\]\)"):
        training._resume_training(model((4,), (3,))[0], state)
    training._resume_training(model((2,), (3,))[0], state)


def test_key_errors_basicsr_still_raises_become_one_line(tmp_path, capsys, monkeypatch):
    """A key no check knows of: BasicSR's KeyError names it, the file and the line that reads it."""
    import basicsr.train
    from basicsr.utils.logger import MessageLogger

    from iqp_plugin import train

    try:
        MessageLogger({"name": "x", "logger": {}, "train": {"total_iter": 1}})
    except KeyError as err:
        basicsr_error = err
    error = missing_option(basicsr_error, "x.yml")
    assert str(error) == ("Option file x.yml lacks the key logger:print_freq, which training reads (logger.py:60: "
                          "self.interval = opt['logger']['print_freq']): add it (see configs/tiny/).")
    try:
        {}["print_freq"]
    except KeyError as err:
        assert missing_option(err, "x.yml") is None  # not an option read: a bug, which keeps its traceback

    def pipeline(root_path):
        raise basicsr_error

    monkeypatch.setattr(basicsr.train, "train_pipeline", pipeline)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        run_command(train.main, ["-opt", str(CONFIG)])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith(f"iqp: error: Option file {CONFIG} lacks the key logger:print_freq")


# ---------------------------------------------------------------- the key table
def test_every_option_file_of_the_project_passes_the_key_check():
    files = sorted([*(REPO / "configs").rglob("*.yml"), *(REPO / "benchmarks" / "configs").rglob("*.yml")])
    assert len(files) > 20
    for path in files:
        check_training_options(read_options(str(path)), str(path))


def source_keys(path: Path, pattern: str) -> set[str]:
    return set(re.findall(pattern, path.read_text()))


def test_the_key_table_holds_every_key_the_project_reads():
    """The models' and datasets' option reads, found in their source, are all in the table."""
    package = REPO / "iqp_plugin"
    train_reads = r'(?:train_opt|\.opt\["train"\])(?:\.get\(|\[)"(\w+)"'
    assert source_keys(package / "models" / "iqp_model.py", train_reads) <= MODEL_KEYS["IQPModel"].train
    assert source_keys(package / "models" / "vq_host_model.py", train_reads) <= MODEL_KEYS["VQHostModel"].train
    dataset_reads = source_keys(package / "data" / "datasets.py", r'\bopt(?:\.get\(|\[)"(\w+)"')
    assert dataset_reads and dataset_reads <= set().union(*(keys for keys, _ in DATASET_KEYS.values()))
