"""BasicSR training through the project's entry point: CPU run, resume (also after a kill mid-save),
2-process gloo, option errors."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from iqp_plugin.data.sample_data import write_crops
from iqp_plugin.models import training as basicsr_cpu
from tests.conftest import REPO

CONFIG = REPO / "configs" / "tiny" / "swinir_srmodel.yml"


ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def run(cwd, *args, launcher=None):
    if launcher:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               "-m", "iqp_plugin.train", *args, "--launcher", "pytorch"]
    else:
        cmd = [sys.executable, "-m", "iqp_plugin.train", *args]
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)


@pytest.fixture
def workdir(tmp_path):
    write_crops(tmp_path / "datasets" / "sample_hq", count=8, size=48)
    return tmp_path


def plugin_weights(path):
    state = torch.load(path, map_location="cpu", weights_only=True)["params"]
    return ({k: v for k, v in state.items() if k.startswith("plugin.")},
            {k: v for k, v in state.items() if k.startswith("host.")})


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


# Runs iqp_plugin.train with torch.save slowed down for one training state: it writes the first half of
# state <kill_iter> to wherever basicsr's save sends it, touches <marker>, and hangs until it is killed.
SLOW_STATE_WRITER = """
import io, sys, time
import torch

kill_iter, marker = int(sys.argv[1]), sys.argv[2]
real_save = torch.save


def slow_save(obj, f, *args, **kwargs):
    if isinstance(obj, dict) and obj.get("iter") == kill_iter and "optimizers" in obj:
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        with open(f, "wb") as out:
            out.write(buf.getvalue()[:buf.tell() // 2])
        open(marker, "w").close()
        time.sleep(600)
    real_save(obj, f, *args, **kwargs)


torch.save = slow_save
from iqp_plugin.train import main
main(sys.argv[3:])
"""


def epochs_by_iter(exp):
    """{iter: epoch} from the progress lines of the latest train log of an experiment."""
    log = max(exp.glob("train_*.log")).read_text()  # train_<name>_<time>.log: the latest sorts last
    return {int(it): int(ep) for ep, it in re.findall(r"\[epoch:\s*(\d+), iter:\s*(\d+),", log)}


def test_sigkill_while_writing_a_state_then_auto_resume(tmp_path):
    """Kill a real run while it writes 6.state: no half-written 6.state is left, --auto_resume goes on from
    4.state and finishes. 8 crops in batches of 4: 2 iterations per epoch, a state every 2 iterations."""
    opts = ["-opt", str(CONFIG), "--force_yml", "train:total_iter=8", "logger:save_checkpoint_freq=2"]
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    for d in (killed, ref):
        write_crops(d / "datasets" / "sample_hq", count=8, size=48)
    marker = tmp_path / "writing_6.state"
    (tmp_path / "slow.py").write_text(SLOW_STATE_WRITER)
    reference = subprocess.Popen([sys.executable, "-m", "iqp_plugin.train", *opts], cwd=ref, env=ENV,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen([sys.executable, str(tmp_path / "slow.py"), "6", str(marker), *opts], cwd=killed,
                              env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert victim.poll() is None, victim.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the run never reached the write of 6.state"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()

    exp = killed / "experiments" / "tiny_swinir_srmodel"
    states = exp / "training_states"
    assert (states / "4.state").is_file()
    assert not (states / "6.state").exists()  # the half-written bytes went to a temporary file only
    assert len(list(states.glob(".6.state.*.tmp"))) == 1

    resumed = run(killed, *opts, "--auto_resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming training from epoch: 1, iter: 4." in "".join(p.read_text() for p in exp.glob("train_*.log"))
    assert sorted(p.name for p in states.iterdir()) == ["2.state", "4.state", "6.state", "8.state"]  # tmp removed
    assert reference.wait(timeout=300) == 0, reference.stderr.read()[-3000:]
    ref_exp = ref / "experiments" / "tiny_swinir_srmodel"

    # Up to the last state written before the kill the two runs are the same seeded run.
    assert all(torch.equal(a, b) for a, b in zip(plugin_weights(exp / "models" / "net_g_4.pth")[0].values(),
                                                 plugin_weights(ref_exp / "models" / "net_g_4.pth")[0].values(),
                                                 strict=False))
    final, _ = plugin_weights(exp / "models" / "net_g_latest.pth")
    ref_final, _ = plugin_weights(ref_exp / "models" / "net_g_latest.pth")
    # The final weights differ from the uninterrupted run's, and the kill is not the cause: basicsr's resume
    # (1) restarts the epoch recorded in the state: 4.state is from epoch 1 (iterations 3-4), so iterations
    # 5-6 see epoch 1's batches again where the uninterrupted run saw epoch 2's (the sampler shuffles by
    # epoch), and (2) does not save the Python/NumPy/torch random states that draw the dataset's crops,
    # flips and degradations: they restart from manual_seed. The logs show (1); a resume of the
    # uninterrupted run from its own 4.state, with no kill at all, gives exactly the resumed weights.
    assert any(not torch.equal(final[k], ref_final[k]) for k in final)
    assert epochs_by_iter(ref_exp) == {2: 0, 4: 1, 6: 2, 8: 3} and epochs_by_iter(exp) == {6: 1, 8: 2}
    again = tmp_path / "again"
    shutil.copytree(ref / "datasets", again / "datasets")
    again_exp = again / "experiments" / "tiny_swinir_srmodel"
    (again_exp / "training_states").mkdir(parents=True)
    (again_exp / "models").mkdir()
    shutil.copy(ref_exp / "training_states" / "4.state", again_exp / "training_states")
    shutil.copy(ref_exp / "models" / "net_g_4.pth", again_exp / "models")
    out = run(again, *opts, "--auto_resume")
    assert out.returncode == 0, out.stderr[-3000:]
    again_final, _ = plugin_weights(again_exp / "models" / "net_g_latest.pth")
    assert all(torch.equal(final[k], again_final[k]) for k in final)


def test_auto_resume_skips_unreadable_states(tmp_path, capsys):
    """A state cut short (here by hand, as by a writer before atomic saves) is skipped, and said so."""
    states = tmp_path / "experiments" / "exp" / "training_states"
    states.mkdir(parents=True)
    torch.save({"epoch": 1, "iter": 4, "optimizers": [], "schedulers": []}, states / "4.state")
    torch.save({"epoch": 2, "iter": 6, "optimizers": [], "schedulers": []}, states / "6.state")
    (states / "6.state").write_bytes((states / "6.state").read_bytes()[:300])
    (states / "notes.state").write_text("not an iteration")
    opt = {"auto_resume": True, "root_path": str(tmp_path), "name": "exp", "rank": 0, "path": {"resume_state": None}}
    assert basicsr_cpu.load_resume_state(opt)["iter"] == 4
    assert opt["path"]["resume_state"] == str(states / "4.state")
    err = capsys.readouterr().err
    assert f"skipped unreadable training state {states / '6.state'} (PytorchStreamReader" in err
    assert f"resuming from the newest complete one, {states / '4.state'}" in err

    (states / "4.state").write_bytes(b"")
    with pytest.raises(ValueError, match=r"No complete, readable training state in .*6\.state .*4\.state \(.*Delete"):
        basicsr_cpu.load_resume_state({**opt, "path": {"resume_state": None}})
    with pytest.raises(ValueError, match=r"Resume state .*4\.state is unreadable .*Pass another path:resume_state"):
        basicsr_cpu.load_resume_state({**opt, "auto_resume": False, "path": {"resume_state": str(states / "4.state")}})


def test_basicsr_model_files_are_written_atomically(tmp_path, monkeypatch):
    """BasicSR's own writers (SRModel hosts' net_g_*.pth, every .state) go through the atomic torch.save:
    a save that fails half-way leaves the previous file as it was, and no temporary file."""
    from basicsr.models import base_model

    basicsr_cpu.patch()
    target = tmp_path / "net_g_latest.pth"
    base_model.torch.save({"w": torch.ones(3)}, target)

    def broken_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        base_model.torch.save({"w": torch.zeros(3)}, target)
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["net_g_latest.pth"]


# ---------------------------------------------------------------- one-line errors: unsafe files, Ctrl-C
def unsafe_pickle(path, payload):
    """A torch file that pickles a reference to os.system next to ``payload``: loading it could run code."""
    torch.save({**payload, "hook": os.system}, path)
    return path


def test_unsafe_resume_state_is_refused_in_one_line(tmp_path, capsys):
    states = tmp_path / "experiments" / "exp" / "training_states"
    states.mkdir(parents=True)
    torch.save({"epoch": 1, "iter": 4, "optimizers": [], "schedulers": []}, states / "4.state")
    evil = unsafe_pickle(states / "6.state", {"epoch": 2, "iter": 6, "optimizers": [], "schedulers": []})
    opt = {"auto_resume": False, "root_path": str(tmp_path), "name": "exp", "rank": 0,
           "path": {"resume_state": str(evil)}}
    with pytest.raises(ValueError) as err:
        basicsr_cpu.load_resume_state(opt)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"Resume state {evil} is unreadable (not a safe checkpoint: it holds posix.system")
    assert basicsr_cpu.load_resume_state({**opt, "auto_resume": True, "path": {"resume_state": None}})["iter"] == 4
    assert f"skipped unreadable training state {evil} (not a safe checkpoint" in capsys.readouterr().err


def test_unsafe_pretrained_host_model_is_refused_in_one_line(tmp_path):
    """SRModel hosts load path:pretrain_network_g through BasicSR's own load_network."""
    from types import SimpleNamespace

    from basicsr.models import base_model

    from iqp_plugin.errors import CheckpointError

    basicsr_cpu.patch()
    evil = unsafe_pickle(tmp_path / "net_g.pth", {"params": {}})
    with pytest.raises(CheckpointError) as err:
        base_model.BaseModel.load_network(SimpleNamespace(get_bare_model=lambda net: net), torch.nn.Linear(1, 1),
                                          str(evil))
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{evil} is not a safe checkpoint")


def test_ctrl_c_in_training_says_where_the_partial_work_is(tmp_path, capsys, monkeypatch):
    import basicsr.train

    from iqp_plugin import train
    from iqp_plugin.cli import run as run_command

    def interrupted(root_path):
        raise KeyboardInterrupt

    monkeypatch.setattr(basicsr.train, "train_pipeline", interrupted)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        try:
            run_command(train.main, ["-opt", str(CONFIG)])
        except KeyboardInterrupt:
            pytest.fail("Ctrl-C escaped the top-level handler (a traceback)")
    err = capsys.readouterr().err
    assert exc.value.code == 130
    assert err == f"iqp: interrupted, partial work kept in {tmp_path / 'experiments' / 'tiny_swinir_srmodel'}\n"


def test_ctrl_c_of_python_m_iqp_plugin_train(workdir):
    """The module entry point goes through the same handler: SIGINT mid-run ends in one line and exit code 130."""
    proc = subprocess.Popen([sys.executable, "-m", "iqp_plugin.train", "-opt", str(CONFIG), "--force_yml",
                             "train:total_iter=100000"], cwd=workdir, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # even if we ignore it
    try:
        exp = workdir / "experiments" / "tiny_swinir_srmodel"
        deadline = time.monotonic() + 120
        while not any("Start training" in p.read_text() for p in exp.glob("train_*.log")):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130 and "Traceback" not in err
    assert err.splitlines()[-1] == f"iqp: interrupted, partial work kept in {exp}"
