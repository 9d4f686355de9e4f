"""Issue 42, the commands' share: no output over an input, unreadable inputs of ``iqp compare`` left out up front
(as ``iqp restore`` does), one tile side for the check and the run, and one line per user error."""
import argparse
import os
import subprocess
import sys

import cv2
import pytest
import torch

from iqp_plugin.cli import compare, restore, run
from iqp_plugin.cli.compare import main as compare_main
from iqp_plugin.cli.export import main as export_main
from iqp_plugin.cli.restore import main as restore_main
from iqp_plugin.inference import tiling
from tests.conftest import REPO
from tests.test_restore import make_model, rand_img

FAST = ["--metrics", "niqe", "--heldout", "", "--scores", "0.5", "--device", "cpu"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("model"))


def cli(entry, argv, capsys) -> tuple[int, str, str]:
    """Exit code (0 when it returns), stdout and stderr of ``run(entry, argv)``."""
    try:
        run(entry, argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def no_model(monkeypatch):
    for module in (compare, restore):
        monkeypatch.setattr(module, "load_from_args", lambda args: pytest.fail("the model was loaded"))


# Case 5: no output over an input


@pytest.mark.parametrize("where", ["same", "inside", "holds", "gt"])
def test_compare_report_folder_apart_from_inputs_before_the_model_loads(model, tmp_path, capsys, monkeypatch, where):
    config, *_ = model
    src, gt = tmp_path / "in", tmp_path / "gt"
    for folder in (src, gt):
        folder.mkdir()
        cv2.imwrite(str(folder / "a.png"), rand_img(16, 16))
    out = {"same": src, "inside": src / "report", "holds": tmp_path, "gt": gt}[where]
    no_model(monkeypatch)
    code, _, err = cli(compare_main, ["-i", str(src), "-o", str(out), "--gt", str(gt), "--config", str(config), *FAST],
                       capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"iqp: error: -o {out} "), err
    assert "choose a folder outside the inputs" in err
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["gt", "gt/a.png", "in",
                                                                                        "in/a.png"]


@pytest.mark.parametrize("which", ["plugin", "host"])
def test_export_onnx_file_over_a_file_it_reads_is_refused(model, tmp_path, capsys, which):
    config, host_file, plugin_file, _ = model
    target = tmp_path / f"{which}.onnx"
    target.write_bytes((plugin_file if which == "plugin" else host_file).read_bytes())
    before = target.read_bytes()
    argv = ["--config", str(config), "--onnx", str(target)]
    if which == "plugin":
        argv += ["--plugin", str(target)]
    else:
        (tmp_path / "w.yml").write_text(config.read_text().replace(str(host_file), str(target)))
        argv[1] = str(tmp_path / "w.yml")
    code, _, err = cli(export_main, argv, capsys)
    assert code == 2 and err == f"iqp: error: --onnx {target} is an input of this command: write it elsewhere\n"
    assert target.read_bytes() == before


def test_restore_file_output_over_its_input_is_refused_before_the_model_loads(model, tmp_path, capsys, monkeypatch):
    config, *_ = model
    src = tmp_path / "a.png"
    cv2.imwrite(str(src), rand_img(16, 16))
    before = src.read_bytes()
    no_model(monkeypatch)
    code, _, err = cli(restore_main, ["-i", str(src), "-o", str(src), "--config", str(config)], capsys)
    assert code == 2 and err == f"iqp: error: -o {src} is an input of this command: write it elsewhere\n"
    assert src.read_bytes() == before


# Case 15: an unreadable input among good ones


def test_compare_leaves_out_unreadable_inputs_named_up_front_and_in_the_summary(model, tmp_path, capsys, monkeypatch):
    """As ``iqp restore``: the bad file is named on stderr before the model loads, the report holds the others,
    the summary line and the page name it again, exit code 1."""
    config, *_ = model
    src, out = tmp_path / "in", tmp_path / "report"
    src.mkdir()
    for i, name in enumerate(("a.png", "c.png")):
        cv2.imwrite(str(src / name), rand_img(56, 56, seed=i))
    data = (src / "a.png").read_bytes()
    (src / "b.png").write_bytes(data[: len(data) // 2])
    before_load, load = [], compare.load_from_args
    monkeypatch.setattr(compare, "load_from_args", lambda args: before_load.append(capsys.readouterr()) or load(args))
    code, printed, err = cli(compare_main, ["-i", str(src), "-o", str(out), "--config", str(config), *FAST], capsys)
    assert code == 1
    assert f"iqp compare: skipped {src / 'b.png'}: cannot decode image {src / 'b.png'}" in before_load[0].err
    summary = printed.splitlines()[-1]
    assert summary.startswith("iqp compare: 2 images in ")
    assert summary.endswith(f"; unreadable, skipped: {src / 'b.png'}")
    assert sorted(p.name for p in (out / "images" / "input").iterdir()) == ["a.png", "c.png"]
    assert f"1 unreadable input left out: {src / 'b.png'}" in (out / "index.html").read_text()

    code, printed, err = cli(restore_main, ["-i", str(src), "-o", str(tmp_path / "restored"), "--config", str(config),
                                            "--device", "cpu"], capsys)
    assert code == 1 and printed.splitlines()[-1].endswith(f"; unreadable, skipped: {src / 'b.png'}")


def test_compare_with_no_readable_input_fails_in_one_line_before_the_model_loads(model, tmp_path, capsys,
                                                                                 monkeypatch):
    config, *_ = model
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "b.png"):
        (src / name).write_bytes(b"not an image")
    no_model(monkeypatch)
    code, _, err = cli(compare_main, ["-i", str(src), "-o", str(tmp_path / "r"), "--config", str(config), *FAST],
                       capsys)
    assert code == 2 and err.splitlines()[-1] == (f"iqp: error: no input could be read; unreadable, skipped: "
                                                  f"{src / 'a.png'}, {src / 'b.png'}")
    assert not (tmp_path / "r").exists()


# Case 16: the tile side of the check is the run's


def accepts(fn, *args) -> bool:
    """Whether ``fn(*args)`` returns rather than raising a user error."""
    try:
        fn(*args)
    except ValueError:
        return False
    return True


def test_tile_check_accepts_exactly_what_the_run_accepts(model):
    """For every --tile-above and --tile-overlap, the check with the model passes iff the run's tiling of a large
    input does (its sides rounded down to the host's window and the plug-in's patch, 8 here)."""
    *_, wrapper = model
    x = torch.zeros(1, 1, 100, 100)
    for above in (64, 100, 1100, 1500, 4095, 4096, 5000, 9000):
        side = tiling.tile_side(wrapper, 100, 100, None, above)
        for overlap in (0, 7, 8, 31, 32, 33, 63, 64, 66, 90):
            args = argparse.Namespace(tile=None, tile_above=above, tile_overlap=overlap)
            checked = accepts(tiling.check_tile_args, args, wrapper)
            assert checked == accepts(tiling.tiled, lambda t: t, x, side, overlap), (above, overlap, side, checked)


@pytest.mark.parametrize("command", [restore, compare], ids=["restore", "compare"])
def test_tile_sizes_that_slipped_through_fail_before_any_image(model, tmp_path, capsys, monkeypatch, command):
    """--tile-above 1500: the check used sqrt = 38 > overlap 32, the run tiles of 32 (38 rounded down to 8): the
    small first image was written, the large second one failed."""
    config, *_ = model
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), rand_img(16, 16))
    cv2.imwrite(str(src / "b.png"), rand_img(64, 64))
    monkeypatch.setattr(command, "run_batch", lambda *a, **k: pytest.fail("an image was restored"))
    argv = ["-i", str(src), "-o", str(out), "--config", str(config), "--tile-above", "1500"]
    code, _, err = cli(command.main, argv + (FAST if command is compare else ["--device", "cpu"]), capsys)
    assert code == 2 and err == ("iqp: error: --tile-overlap must be in [0, the side of the tiles --tile-above gives) "
                                 "= [0, 32), got 32\n")
    assert not out.exists()


# Case 17: one line is one line, in a fresh interpreter


@pytest.mark.parametrize("argv, message", [
    (["restore", "-i", "missing.png", "-o", "x.png", "--host", "SwinIR"], "input not found: missing.png"),
    (["compare", "-i", "missing.png", "-o", "r", "--host", "SwinIR"], "input not found: missing.png"),
    (["export", "--config", "missing.yml", "--onnx", "x.onnx"], "--config missing.yml: no such file"),
    (["train", "-opt", "missing.yml"], "missing.yml"),
])
def test_user_error_is_the_only_line_on_stderr(tmp_path, argv, message):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-m", "iqp_plugin.cli", *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("iqp: error:"), proc.stderr
    assert message in proc.stderr
    assert not list(tmp_path.iterdir())


def test_user_error_after_the_model_is_built_is_one_line_too(model, tmp_path):
    """The tile check runs once the model is built, where BasicSR's SwinIR warns about ``torch.meshgrid``."""
    config, *_ = model
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), rand_img(64, 64))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-m", "iqp_plugin.cli", "restore", "-i", str(src), "-o", str(tmp_path / "o"),
                           "--config", str(config), "--device", "cpu", "--tile-above", "1500"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr == ("iqp: error: --tile-overlap must be in [0, the side of the tiles --tile-above gives) = "
                           "[0, 32), got 32\n")


def test_unreadable_helper_names_five_files_at_most():
    assert restore.unreadable([]) == ""
    paths = [f"{i}.png" for i in range(7)]
    assert restore.unreadable(paths) == "; unreadable, skipped: 0.png, 1.png, 2.png, 3.png, 4.png (+2 more)"
