"""``iqp restore`` and the shared inference pieces on a tiny random SwinIR host and plug-in (CPU); every image
reader upright under an EXIF orientation."""
import json
import os
import warnings

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import ExifTags, Image, ImageOps

from iqp_plugin import IQPWrapper
from iqp_plugin.cli import restore, run
from iqp_plugin.cli.restore import main as restore_main
from iqp_plugin.data import datasets
from iqp_plugin.inference import tiling as running
from iqp_plugin.io import exif, images
from iqp_plugin.prior import scoring
from iqp_plugin.report import pictures
from tests.conftest import TINY_PLUGIN, TINY_SWINIR, save_model_files


def make_model(folder):
    """Write a random tiny SwinIR host, a plug-in checkpoint (training format) and a wrapper YAML.

    The plug-in's zero-initialised output layer is opened, so host + IQP differs from the host alone.
    Returns (config path, host checkpoint, plug-in checkpoint, the wrapper).
    """
    torch.manual_seed(0)
    wrapper = IQPWrapper(host=TINY_SWINIR, plugin=TINY_PLUGIN).eval()
    torch.nn.init.normal_(wrapper.plugin.out_conv.weight, std=0.05)
    config, host_file, plugin_file = save_model_files(folder, wrapper, TINY_SWINIR, TINY_PLUGIN)
    return config, host_file, plugin_file, wrapper


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("model"))


def rand_img(h, w, c=3, dtype=np.uint8, seed=0):
    top = 65535 if dtype == np.uint16 else 255
    base = cv2.resize(np.random.default_rng(seed).random((h // 4, w // 4, c)).astype(np.float32), (w, h))
    return (base.reshape(h, w, c) * top).round().astype(dtype)


def direct(wrapper, rgb, **kw):
    """The wrapper called by hand on an RGB [0, 1] image."""
    with torch.no_grad():
        y = wrapper(torch.from_numpy(rgb).permute(2, 0, 1)[None].float(), **kw)
    return y.clamp(0, 1)[0].permute(1, 2, 0).numpy()


def test_restore_folder_formats_skips_and_failures(model, tmp_path, capsys):
    config, _, _, wrapper = model
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    rgb = rand_img(20, 28, seed=1)
    cv2.imwrite(str(src / "rgb.png"), rgb)
    rgba = rand_img(24, 24, 4, seed=2)
    cv2.imwrite(str(src / "rgba.png"), rgba)
    cv2.imwrite(str(src / "sub" / "gray.jpg"), rand_img(24, 32, 1, seed=3)[..., 0])
    cv2.imwrite(str(src / "deep.png"), rand_img(16, 24, dtype=np.uint16, seed=4))
    cv2.imwrite(str(src / "exists.png"), rgb)
    data = (src / "rgb.png").read_bytes()
    (src / "broken.png").write_bytes(data[: len(data) // 2])
    out.mkdir()
    (out / "exists.png").write_bytes(b"keep me")

    with pytest.raises(SystemExit) as exc:
        run(restore_main, ["-i", str(src), "-o", str(out), "--config", str(config), "--device", "cpu", "--batch", "2"])
    assert exc.value.code == 1  # one input failed
    err = capsys.readouterr()
    assert "broken.png" in err.err and "4 done, 1 skipped" in err.out and "1 failed" in err.out
    assert (out / "exists.png").read_bytes() == b"keep me"
    assert not (out / "broken.png").exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]

    got = cv2.imread(str(out / "rgb.png"), cv2.IMREAD_UNCHANGED)
    expected = direct(wrapper, cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB).astype(np.float32) / 255)
    assert got.shape == (40, 56, 3)
    assert np.abs(cv2.cvtColor(got, cv2.COLOR_BGR2RGB) / 255.0 - expected).max() <= 1 / 255 + 1e-6
    alpha = cv2.imread(str(out / "rgba.png"), cv2.IMREAD_UNCHANGED)
    assert alpha.shape == (48, 48, 4)
    resized = cv2.resize(rgba[..., 3].astype(np.float32) / 255, (48, 48), interpolation=cv2.INTER_LINEAR)
    assert np.abs(alpha[..., 3] / 255.0 - resized).max() <= 1 / 255 + 1e-6
    gray = cv2.imread(str(out / "sub" / "gray.jpg"), cv2.IMREAD_UNCHANGED)
    assert gray.shape == (48, 64) and gray.dtype == np.uint8
    deep = cv2.imread(str(out / "deep.png"), cv2.IMREAD_UNCHANGED)
    assert deep.shape == (32, 48, 3) and deep.dtype == np.uint16

    run(restore_main, ["-i", str(src / "rgb.png"), "-o", str(out / "exists.png"), "--config", str(config),
                       "--device", "cpu", "--overwrite", "--score", "0.3"])
    assert cv2.imread(str(out / "exists.png")).shape == (40, 56, 3)


def test_output_folder_inside_the_input_folder_is_not_an_input(model, tmp_path):
    config, *_ = model
    cv2.imwrite(str(tmp_path / "a.png"), rand_img(16, 16))
    for _ in range(2):
        run(restore_main, ["-i", str(tmp_path), "-o", str(tmp_path / "out"), "--config", str(config),
                           "--device", "cpu"])
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")) == ["a.png", "out/a.png"]


def test_plugin_file_alone_and_host_flags(model, tmp_path):
    _, host_file, plugin_file, wrapper = model
    src = tmp_path / "a.png"
    cv2.imwrite(str(src), rand_img(16, 16))
    run(restore_main, ["-i", str(src), "-o", str(tmp_path / "p"), "--plugin", str(plugin_file), "--device", "cpu"])
    run(restore_main, ["-i", str(src), "-o", str(tmp_path / "h"), "--host", "SwinIR", "--host-opt",
                       json.dumps({k: v for k, v in TINY_SWINIR.items() if k != "type"}),
                       "--host-checkpoint", str(host_file), "--plugin", str(plugin_file), "--device", "cpu"])
    assert (tmp_path / "p" / "a.png").read_bytes() == (tmp_path / "h" / "a.png").read_bytes()
    other = tmp_path / "other_host.pth"
    torch.save({"params": {k: v + 0.01 if v.is_floating_point() else v
                             for k, v in wrapper.host.state_dict().items()}}, other)
    mismatched = ["-i", str(src), "-o", str(tmp_path / "o"), "--plugin", str(plugin_file),
                  "--host-checkpoint", str(other), "--device", "cpu"]
    with pytest.raises(SystemExit) as exc:
        run(restore_main, mismatched)
    assert exc.value.code == 2 and not (tmp_path / "o").exists()
    with pytest.warns(UserWarning, match="trained on host weights"):
        run(restore_main, [*mismatched, "--allow-host-mismatch"])


def test_tiling_matches_whole_image(model):
    """64x64 input, tiles of 32 with overlap 16 (origins on the 8-px window grid): only the seams differ
    (SwinIR's shifted windows and the plug-in's global attention see less context there). Measured max
    |diff| 0.001 for the host alone (mean 3e-5) and 0.013 with this random plug-in of the pixel recipe (mean
    6e-4; its 2x2-pixel tokens attend over four times as many tokens in the whole image as in a tile), on outputs
    spanning about 0.35. Tolerance: host max 0.005, mean 5e-4; with the plug-in max 0.02, mean 1e-3."""
    *_, wrapper = model
    rgb = rand_img(64, 64, seed=5).astype(np.float32)[None] / 255
    for plugin in (False, True):
        whole = running.run_batch(wrapper, rgb, plugin=plugin)
        tiles = running.run_batch(wrapper, rgb, tile=32, overlap=16, plugin=plugin)
        diff = np.abs(whole - tiles)
        assert whole.shape == tiles.shape == (1, 128, 128, 3)
        bound = (0.02, 1e-3) if plugin else (0.005, 5e-4)
        assert diff.max() < bound[0] and diff.mean() < bound[1], (plugin, diff.max(), diff.mean())
    x = torch.rand(1, 3, 40, 24)  # normalised blending reproduces a pointwise map exactly
    assert torch.allclose(running.tiled(lambda t: t * 2, x, 16, 4), x * 2, atol=1e-6)
    thin = torch.rand(1, 3, 10, 200)  # thinner than the overlap: one crop across, tiles along
    assert torch.allclose(running.tiled(lambda t: t * 2, thin, 64, 16), thin * 2, atol=1e-6)
    batch = np.concatenate([rgb, rgb[:, ::-1].copy()])
    assert np.allclose(running.run_batch(wrapper, batch), np.concatenate(
        [running.run_batch(wrapper, b[None]) for b in batch]), atol=1e-5)


def test_atomic_write_leaves_nothing_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "x.png"

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        images.write_picture(target, images.Picture(np.zeros((8, 8, 3), np.float32)))
    assert list(tmp_path.iterdir()) == []


def test_written_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        images.write_picture(tmp_path / "x.png", images.Picture(np.zeros((8, 8, 3), np.float32)))
    finally:
        os.umask(umask)
    assert (tmp_path / "x.png").stat().st_mode & 0o777 == 0o644


def test_unreadable_inputs_are_value_errors(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "dir.png").mkdir()
    for name in ("empty.png", "dir.png"):
        with pytest.raises(ValueError, match="cannot (read|decode) image"):
            images.read_picture(tmp_path / name)


@pytest.mark.parametrize("case, message", [
    ("missing", "input not found"),
    ("score", "--score must lie in [0, 1]"),
    ("host_arch", "does not fit SwinIR"),
    ("plugin_arch", "does not fit the plug-in"),
    ("w", "--w is not an option of this host, SwinIR; it takes no host option"),
    ("untrained", "names no trained one"),
    ("option", "IQPWrapper has no option 'host_chekpoint' (did you mean: host_checkpoint?)"),
])
def test_user_errors_exit_2(model, tmp_path, capsys, case, message):
    config, host_file, _, _ = model
    src = tmp_path / "a.png"
    cv2.imwrite(str(src), rand_img(16, 16))
    args = ["-i", str(src), "-o", str(tmp_path / "out"), "--config", str(config), "--device", "cpu"]
    if case == "missing":
        args[1] = str(tmp_path / "nope")
    elif case == "score":
        args += ["--score", "1.5"]
    elif case == "host_arch":
        other = IQPWrapper(host={**TINY_SWINIR, "embed_dim": 12}).host
        torch.save({"params": other.state_dict()}, tmp_path / "other.pth")
        host_opt = json.dumps({k: v for k, v in TINY_SWINIR.items() if k != "type"})
        args = args[:4] + ["--host", "SwinIR", "--host-opt", host_opt, "--host-checkpoint", str(tmp_path / "other.pth")]
    elif case == "plugin_arch":
        args += ["--plugin", str(host_file)]
    elif case in ("untrained", "option"):
        net = yaml.safe_load(config.read_text())["network_g"]
        net = {**net, "plugin": TINY_PLUGIN} if case == "untrained" else {**net, "host_chekpoint": "x.pth"}
        (tmp_path / "bad.yml").write_text(yaml.safe_dump({"network_g": net}))
        args[5] = str(tmp_path / "bad.yml")
    else:
        args += ["--w", "0.5"]
    with pytest.raises(SystemExit) as exc:
        run(restore_main, args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("iqp: error:") and message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["same", "parent"])
def test_output_that_is_or_holds_the_input_folder_is_refused(model, tmp_path, capsys, monkeypatch, where):
    config, *_ = model
    src = tmp_path / "photos" / "in"
    src.mkdir(parents=True)
    cv2.imwrite(str(src / "a.png"), rand_img(16, 16))
    out = src if where == "same" else tmp_path / "photos"
    monkeypatch.setattr(restore, "load_from_args", lambda args: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit) as exc:
        run(restore_main, ["-i", str(src), "-o", str(out), "--config", str(config), "--device", "cpu"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1
    what = "is the input folder" if where == "same" else f"holds the input folder {src}"
    assert f"iqp: error: -o {out} {what}, so the restored files would land among the inputs: " \
           f"choose an -o outside it, e.g. {src}_restored" in err
    assert list(tmp_path.rglob("*.png")) == [src / "a.png"]


def with_orientation(path, rgb, orientation, **save):
    """Save ``rgb`` (stored as is) with the EXIF orientation tag ``orientation``."""
    tags = Image.Exif()
    tags[ExifTags.Base.Orientation] = orientation
    Image.fromarray(rgb).save(path, exif=tags.tobytes(), **save)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_upright_turns_as_pil_does(tmp_path, orientation):
    rgb = rand_img(6, 10, seed=orientation)
    with_orientation(tmp_path / "x.png", rgb, orientation)
    data = (tmp_path / "x.png").read_bytes()
    assert exif.exif_orientation(data) == orientation
    with Image.open(tmp_path / "x.png") as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(exif.upright(rgb, orientation), expected)
    np.testing.assert_array_equal(scoring.load_image(tmp_path / "x.png")[0].permute(1, 2, 0).numpy() * 255,
                                  expected.astype(np.float32))
    np.testing.assert_array_equal(images.read_picture(tmp_path / "x.png").rgb * 255, expected.astype(np.float32))
    np.testing.assert_array_equal(datasets.read_image(tmp_path / "x.png")[..., ::-1] * 255, expected.astype(np.float32))


def test_phone_photo_with_orientation_6_is_restored_and_scored_upright(model, tmp_path):
    """A JPEG stored 16 high and 24 wide, tagged 'rotate 90 degrees clockwise to view' (6), is 24 x 16 upright."""
    config, _, _, wrapper = model
    src = tmp_path / "phone.jpg"
    with_orientation(src, rand_img(16, 24), 6, quality=95)
    view = cv2.cvtColor(cv2.imread(str(src), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)  # OpenCV's own upright view
    assert view.shape == (24, 16, 3)

    run(restore_main, ["-i", str(src), "-o", str(tmp_path / "out.png"), "--config", str(config), "--device", "cpu"])
    restored = cv2.cvtColor(cv2.imread(str(tmp_path / "out.png")), cv2.COLOR_BGR2RGB)
    expected = (direct(wrapper, view.astype(np.float32) / 255) * 255).round()
    assert restored.shape == (48, 32, 3) and np.abs(restored - expected).max() <= 1

    assert pictures.load_u8(src).tolist() == view.tolist()
    assert scoring.load_image(src)[0].shape == (3, 24, 16)
    assert datasets.read_image(src).shape == (24, 16, 3)


# ---------------------------------------------------------------- outputs checked before the model loads; Ctrl-C
def run_cli(entry, argv, capsys):
    """``entry`` through the top-level handler: (exit code, stderr)."""
    with pytest.raises(SystemExit) as exc:
        try:
            run(entry, argv)
        except KeyboardInterrupt:
            pytest.fail("Ctrl-C escaped the top-level handler (a traceback)")
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize("case", ["read_only", "file_output_is_a_folder", "output_in_folder_is_a_folder",
                                  "output_folder_is_a_file"])
def test_unwritable_outputs_fail_before_the_model_loads(model, tmp_path, request, capsys, monkeypatch, case):
    config, *_ = model
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), rand_img(16, 16))
    if case == "read_only":
        folder = request.getfixturevalue("read_only_folder")
        args, message = ["-i", str(src), "-o", str(folder / "out")], f"-o {folder / 'out'}: cannot write in {folder}"
    elif case == "file_output_is_a_folder":
        (tmp_path / "b.png").mkdir()
        args = ["-i", str(src / "a.png"), "-o", str(tmp_path / "b.png")]
        message = f"-o {tmp_path / 'b.png'} is a folder, not a file"
    elif case == "output_in_folder_is_a_folder":
        (tmp_path / "out" / "a.png").mkdir(parents=True)
        args, message = (["-i", str(src), "-o", str(tmp_path / "out"), "--overwrite"],
                         f"-o {tmp_path / 'out'}: {tmp_path / 'out' / 'a.png'} is a folder, not a file")
    else:
        (tmp_path / "out").write_text("notes")
        args, message = ["-i", str(src), "-o", str(tmp_path / "out")], f"-o {tmp_path / 'out'} is a file, not a folder"
    monkeypatch.setattr(restore, "load_from_args", lambda args: pytest.fail("the model was loaded"))
    code, err = run_cli(restore_main, [*args, "--config", str(config), "--device", "cpu"], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"iqp: error: {message}")


def test_ctrl_c_says_where_the_partial_work_is(model, tmp_path, capsys, monkeypatch):
    config, *_ = model
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(src / name), rand_img(16, 16))
    real, calls = restore.run_batch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(restore, "run_batch", interrupted)
    code, err = run_cli(restore_main, ["-i", str(src), "-o", str(out), "--config", str(config), "--device", "cpu"],
                        capsys)
    assert code == 130 and err.splitlines()[-1] == f"iqp: interrupted, partial work kept in {out}"
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]  # the finished image, no temporary file
    code, err = run_cli(lambda argv: (_ for _ in ()).throw(KeyboardInterrupt), [], capsys)
    assert code == 130 and err == "iqp: interrupted, partial work kept in the outputs written so far\n"


@pytest.mark.parametrize("source", ["config", "plugin_record"])
def test_missing_host_checkpoint_is_an_error_before_anything_else(model, tmp_path, capsys, source):
    config, host_file, plugin_file, _ = model
    cv2.imwrite(str(tmp_path / "a.png"), rand_img(16, 16))
    missing = tmp_path / "moved" / "host.pth"
    if source == "config":
        opt = yaml.safe_load(config.read_text())
        opt["network_g"]["host_checkpoint"] = str(missing)
        (tmp_path / "w.yml").write_text(yaml.safe_dump(opt))
        choice = ["--config", str(tmp_path / "w.yml")]
    else:  # --plugin alone: the host is the one the plug-in file records, moved away since
        ckpt = torch.load(plugin_file, weights_only=True)
        ckpt["host"]["checkpoint"] = str(missing)
        torch.save(ckpt, tmp_path / "plugin.pth")
        choice = ["--plugin", str(tmp_path / "plugin.pth")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, err = run_cli(restore_main, ["-i", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), *choice,
                                           "--device", "cpu"], capsys)
    assert not [w for w in caught if "results may be poor" in str(w.message)]
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"iqp: error: host checkpoint not found: {missing}")
    assert "--host-checkpoint" in err and not (tmp_path / "out").exists()
