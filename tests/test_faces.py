"""``--faces``: whole photos through a face host (tiny random RestoreFormer + plug-in, 64 px faces, CPU).

Every step of the photo path runs for real except RetinaFace's forward pass: the detector is replaced by one that
returns the landmarks of faces embedded by known affine maps (in the coordinates of the image it is given, which
facexlib's helper has resized for detection)."""
import cv2
import numpy as np
import pytest
import torch

from iqp_plugin.cli import run
from iqp_plugin.cli.compare import main as compare_main
from iqp_plugin.cli.restore import main as restore_main
from iqp_plugin.inference import faces
from tests.conftest import save_model_files
from tests.test_export import TINY_RF, TINY_RF_PLUGIN, trained_like
from tests.test_restore import make_model

S = 64  # the tiny RestoreFormer's face size
#: FFHQ's 5-point template (facexlib's), at S px
TEMPLATE = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                     [201.26117, 371.41043], [313.08905, 371.15118]]) * S / 512


def smooth(h, w, seed, cells=8):
    """A smooth random RGB float32 image in [0.1, 0.9] (bicubic from a cells x cells grid)."""
    grid = np.random.default_rng(seed).random((cells, cells, 3)).astype(np.float32)
    return np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1) * 0.8 + 0.1


def similarity(scale, degrees, tx, ty):
    """2x3 map from the aligned face (S x S) into the photo: rotation about the face centre, scale, shift."""
    m = cv2.getRotationMatrix2D((S / 2, S / 2), degrees, scale)
    m[:, 2] += [tx, ty]
    return m


class FakeDetector:
    """RetinaFace's ``detect_faces`` answer for known photos: rows of box, score, 5 landmarks, in the coordinates
    of the resized image the helper passes (short side faces.DETECT_SIDE)."""

    def __init__(self):
        self.photos, self.calls = {}, 0

    def add(self, shape, rows):
        h, w = shape[:2]
        scale = min(h, w) / faces.DETECT_SIDE
        self.photos[(int(h / scale), int(w / scale))] = (np.asarray(rows, np.float32).reshape(-1, 15), scale)

    def detect_faces(self, image, conf_threshold=0.8):
        self.calls += 1
        rows, scale = self.photos.get(image.shape[:2], (np.zeros((0, 15), np.float32), 1.0))
        out = rows.copy()
        out[:, [0, 1, 2, 3, *range(5, 15)]] /= scale
        return out


def face_row(affine, landmarks=None):
    """A detection row for the face that ``affine`` put in the photo."""
    pts = (np.c_[TEMPLATE, np.ones(5)] @ affine.T) if landmarks is None else landmarks
    corners = np.array([[0, 0, 1], [S, 0, 1], [0, S, 1], [S, S, 1]]) @ affine.T
    return [*corners.min(0), *corners.max(0), 0.999, *pts.ravel()]


def make_photo(h, w, affines, seed=0):
    """A smooth background with aligned random faces embedded by ``affines``; returns (photo, faces)."""
    photo = smooth(h, w, seed, cells=6)
    crops = [smooth(S, S, seed + 10 + i) for i in range(len(affines))]
    for crop, m in zip(crops, affines, strict=False):
        cv2.warpAffine(crop, m, (w, h), dst=photo, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
    return photo, crops


def save_rgb(path, rgb):
    cv2.imwrite(str(path), cv2.cvtColor((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR))


def load_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).astype(np.float64) / 255


@pytest.fixture(scope="module")
def face_model(tmp_path_factory):
    """A tiny random RestoreFormer + plug-in (the plug-in changes the output), as files and a wrapper YAML."""
    folder = tmp_path_factory.mktemp("face_model")
    wrapper = trained_like(TINY_RF, TINY_RF_PLUGIN)
    config = save_model_files(folder, wrapper, TINY_RF, TINY_RF_PLUGIN, "faces.yml")[0]
    weights = folder / faces.DETECTOR_FILE
    weights.write_bytes(b"stand-in: load_detector is replaced by FakeDetector")
    return config, wrapper, weights


@pytest.fixture
def detector(monkeypatch):
    fake = FakeDetector()
    monkeypatch.setattr(faces, "load_detector", lambda path, device="cpu": fake)
    return fake


def restored_directly(wrapper, crop, **kw):
    """The host + plug-in on an aligned crop, by hand."""
    with torch.no_grad():
        y = wrapper(torch.from_numpy(crop).permute(2, 0, 1)[None].float() * 2 - 1, **kw)
    return ((y[0].permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1)


def psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((a - b) ** 2))


#: Faces in the 224 x 320 photo of the paste-back test: three restored (scaled x2 and turned 90 degrees, turned
#: 180 degrees, scaled x1.25 and turned -35 degrees) and one too small (x0.05: eyes 0.8 px apart). The first two map
#: the face's pixel grid onto the photo's, so the aligned crop is the embedded face exactly (checked); the third is
#: resampled twice (into the photo and back out).
PASTE_FACES = [similarity(2, 90, 40, 40), similarity(1, 180, 40, 150), similarity(1.25, -35, 188, 68),
               similarity(0.05, 10, 270, 190)]
MARGIN = 10  # face pixels inside each side of the aligned square: there the soft mask is 1 at these scales


def test_faces_pasted_back_exactly_where_they_were(face_model, detector, tmp_path, capsys):
    """Outside the pasted squares the output is the input (8-bit rounding aside); inside the masks, the face
    restored by hand from the aligned crop, warped back by the known affine. The host is a random VQ model, so a
    crop resampled at 0.01 px off would restore to other codes: the reference crop is cut at the known affine."""
    config, wrapper, weights = face_model
    h, w = 224, 320
    photo, crops = make_photo(h, w, PASTE_FACES)
    detector.add(photo.shape, [face_row(m) for m in PASTE_FACES])
    save_rgb(tmp_path / "photo.png", photo)
    photo = load_rgb(tmp_path / "photo.png").astype(np.float32)  # as written (8 bits)
    run(restore_main, ["-i", str(tmp_path / "photo.png"), "-o", str(tmp_path / "out"), "--config", str(config),
                       "--faces", "--upscale", "1", "--detector-weights", str(weights), "--device", "cpu"])
    note = capsys.readouterr().err
    assert "3 faces restored of 4 found; 1 too small (eyes under 5 px apart), left as they are" in note
    out = load_rgb(tmp_path / "out" / "photo.png")
    assert out.shape == photo.shape and detector.calls == 1

    covered = np.zeros((h, w), np.float32)
    inner = np.zeros((S, S), np.float32)
    inner[MARGIN:-MARGIN, MARGIN:-MARGIN] = 1
    for i, (face, m) in enumerate(zip(crops, PASTE_FACES[:3], strict=False)):
        covered = np.maximum(covered, cv2.warpAffine(np.ones((S, S), np.float32), m, (w, h)))
        crop = cv2.warpAffine(photo, cv2.invertAffineTransform(m), (S, S), flags=cv2.INTER_LINEAR)
        if i < 2:  # grid-preserving maps: the crop is the embedded (8-bit) face itself
            assert np.abs(crop - np.round(face * 255) / 255).max() < 1e-6
        inside = cv2.warpAffine(inner, m, (w, h), flags=cv2.INTER_NEAREST) > 0
        expected = cv2.warpAffine(restored_directly(wrapper, crop), m, (w, h), flags=cv2.INTER_LINEAR)
        value = psnr(out[inside], expected[inside])
        print(f"face {i}: inside psnr {value:.2f} dB over {inside.sum()} px; "
              f"input there {psnr(out[inside], photo[inside]):.2f} dB")
        assert value >= 35, (i, value)
        assert psnr(out[inside], photo[inside]) < value - 10  # the face was replaced, not left as it was
    # facexlib's soft mask reaches 1 px past the warped square (its even-sized erosion kernels sit off-centre)
    outside = cv2.dilate(covered, np.ones((3, 3), np.uint8)) == 0
    diff = np.abs(out[outside] - photo[outside]).max()
    print(f"outside max diff {diff * 255:.3f}/255 over {outside.sum()} px")
    assert diff <= 1 / 255 + 1e-6


def test_no_face_many_faces_and_odd_inputs_are_reported_and_kept(face_model, detector, tmp_path, capsys):
    """A folder of photos: no face (written unchanged), three faces with --only-center-face (one restored), an
    RGBA photo, a 16-bit one and an unreadable file (reported, the others go on); per-image notes on stderr."""
    config, _, weights = face_model
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    empty = smooth(100, 120, seed=3)
    save_rgb(src / "empty.png", empty)
    crowd_faces = [similarity(0.9, 5, 10, 10), similarity(0.9, -5, 75, 40), similarity(0.9, 0, 140, 70)]
    crowd, _ = make_photo(150, 230, crowd_faces, seed=4)
    detector.add(crowd.shape, [face_row(m) for m in crowd_faces])
    save_rgb(src / "crowd.png", crowd)
    rgba, _ = make_photo(120, 130, [similarity(1, 0, 30, 30)], seed=5)
    detector.add(rgba.shape, [face_row(similarity(1, 0, 30, 30))])
    alpha = np.linspace(0, 255, 130, dtype=np.float32)[None].repeat(120, 0)
    cv2.imwrite(str(src / "rgba.png"), np.dstack([cv2.cvtColor((rgba * 255).round().astype(np.uint8),
                                                               cv2.COLOR_RGB2BGR), alpha.round().astype(np.uint8)]))
    deep, _ = make_photo(110, 140, [similarity(1, 10, 40, 20)], seed=6)
    detector.add(deep.shape, [face_row(similarity(1, 10, 40, 20))])
    cv2.imwrite(str(src / "deep.png"), cv2.cvtColor((deep * 65535).round().astype(np.uint16), cv2.COLOR_RGB2BGR))
    (src / "broken.png").write_bytes(b"not an image")
    save_rgb(src / "strip.png", smooth(4, 900, seed=8))  # detection would enlarge it to 640 x 144000: capped

    with pytest.raises(SystemExit) as exc:
        run(restore_main, ["-i", str(src), "-o", str(out), "--config", str(config), "--faces", "--only-center-face",
                           "--detector-weights", str(weights), "--device", "cpu", "--upscale", "2"])
    assert exc.value.code == 1  # the unreadable file
    err = capsys.readouterr()
    notes = {line.split(": ", 2)[1].rsplit("/", 1)[-1]: line.split(": ", 2)[2] for line in err.err.splitlines()
             if line.startswith("iqp restore: ") and ": " in line[13:]}
    assert notes["empty.png"].startswith("no face found") and notes["empty.png"].endswith("the photo resized x2")
    assert notes["strip.png"].startswith("no face found")
    assert notes["crowd.png"] == "1 face restored of 3 found; 2 others left as they are (--only-center-face)"
    assert notes["rgba.png"] == notes["deep.png"] == "1 face restored"
    assert "broken.png" in err.err and "5 done" in err.out and "1 failed" in err.out
    assert "3 faces restored; photos without a restored face (written as their background): 2" in err.out

    got = load_rgb(out / "empty.png")  # no face: the photo resized by --upscale (Lanczos), nothing else
    assert got.shape == (200, 240, 3)
    assert np.abs(cv2.resize(got, (120, 100), interpolation=cv2.INTER_AREA) - load_rgb(src / "empty.png")).mean() < 0.01
    four = cv2.imread(str(out / "rgba.png"), cv2.IMREAD_UNCHANGED)
    assert four.shape == (240, 260, 4)
    assert np.abs(four[..., 3].astype(np.float32) - cv2.resize(alpha, (260, 240))).max() <= 1.0
    sixteen = cv2.imread(str(out / "deep.png"), cv2.IMREAD_UNCHANGED)
    assert sixteen.shape == (220, 280, 3) and sixteen.dtype == np.uint16
    crowd_out = load_rgb(out / "crowd.png")
    centre = cv2.resize(crowd_out, (230, 150), interpolation=cv2.INTER_AREA)
    # only the centre face (the second) changed
    changed = [np.abs(centre - load_rgb(src / "crowd.png"))[cv2.warpAffine(np.ones((S, S), np.float32), m, (230, 150))
                                                             .astype(bool)].mean() for m in crowd_faces]
    assert changed[1] > 5 * max(changed[0], changed[2]), changed


def test_missing_detector_weights_is_one_line_before_any_model_loads(face_model, tmp_path, capsys, monkeypatch):
    config, *_ = face_model
    save_rgb(tmp_path / "a.png", smooth(32, 32, seed=1))
    default = tmp_path / "facexlib" / "weights" / faces.DETECTOR_FILE
    monkeypatch.setattr(faces, "default_detector_path", lambda: default)
    monkeypatch.setattr("iqp_plugin.cli.restore.load_from_args", lambda args: pytest.fail("the model was loaded"))
    for extra, expected in (([], (f"iqp: error: --faces needs the face detector's weights {faces.DETECTOR_FILE} "
                                  f"(facexlib's RetinaFace, {faces.DETECTOR_URL}); none at {default}: download it "
                                  "there, or anywhere and pass --detector-weights PATH "
                                  "(nothing is downloaded for you)\n")),
                            (["--detector-weights", str(tmp_path / "nope.pth")],
                             (f"iqp: error: --detector-weights {tmp_path / 'nope.pth'} not found: give the path of "
                              f"facexlib's RetinaFace weights {faces.DETECTOR_FILE} ({faces.DETECTOR_URL})\n"))):
        with pytest.raises(SystemExit) as exc:
            run(restore_main, ["-i", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--config", str(config),
                               "--faces", *extra])
        assert exc.value.code == 2 and capsys.readouterr().err == expected
    with pytest.raises(SystemExit) as exc:
        run(restore_main, ["-i", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--config", str(config),
                           "--upscale", "2", "--only-center-face"])
    assert exc.value.code == 2
    assert "--upscale, --only-center-face go(es) with --faces" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_detector_loads_from_a_file_and_nothing_is_downloaded(tmp_path, monkeypatch):
    """A RetinaFace state dict (MobileNet-0.25, random, with DataParallel's 'module.' prefix) loads through
    --detector-weights; facexlib's helper is built around it, and its download function is never called."""
    import facexlib.utils.misc
    from facexlib.detection.retinaface import RetinaFace

    def no_download(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args}")

    for module in (facexlib.utils.misc, facexlib.detection, facexlib.parsing):
        monkeypatch.setattr(module, "load_file_from_url", no_download, raising=False)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    net = RetinaFace("mobile0.25", device=torch.device("cpu"))
    path = tmp_path / "detection_mobilenet0.25_Final.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    loaded = faces.load_detector(path)
    assert loaded.backbone == "mobilenet0.25"
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values(), strict=False))
    helper = faces.make_helper(loaded, 64)
    assert helper.face_det.detector is loaded and helper.face_parse is None
    helper.input_img = (smooth(80, 96, seed=2) * 255).astype(np.float32)
    with torch.no_grad():
        found = helper.get_face_landmarks_5(resize=faces.DETECT_SIDE, eye_dist_threshold=faces.MIN_EYE_DIST)
    assert found == len(helper.all_landmarks_5)  # the real forward pass ran (random weights: any count)
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="is not RetinaFace weights"):
        faces.load_detector(tmp_path / "other.pth")


def test_background_host_and_compare_report_with_faces(face_model, detector, tmp_path, capsys):
    """--bg-host (the tiny SwinIR x2) sets the scale and restores everything outside the faces; compare --faces
    makes host, host + IQP and sweep outputs by the same paste-back, which differ only inside the faces."""
    config, _, weights = face_model
    swinir_config, *_ = make_model(tmp_path)
    affine = similarity(1.2, 15, 30, 20)
    photo, _ = make_photo(112, 128, [affine], seed=7)
    detector.add(photo.shape, [face_row(affine)])
    save_rgb(tmp_path / "photo.png", photo)
    run(restore_main, ["-i", str(tmp_path / "photo.png"), "-o", str(tmp_path / "bg"), "--config", str(config),
                       "--faces", "--bg-host", str(swinir_config), "--detector-weights", str(weights),
                       "--device", "cpu"])
    run(restore_main, ["-i", str(tmp_path / "photo.png"), "-o", str(tmp_path / "swinir"), "--config",
                       str(swinir_config), "--device", "cpu"])
    with_faces, background = load_rgb(tmp_path / "bg" / "photo.png"), load_rgb(tmp_path / "swinir" / "photo.png")
    assert with_faces.shape == background.shape == (224, 256, 3)
    square = cv2.warpAffine(np.ones((S, S), np.float32), affine * 2, (256, 224))
    outside = cv2.dilate(square, np.ones((5, 5), np.uint8)) == 0
    assert np.abs(with_faces[outside] - background[outside]).max() <= 1 / 255 + 1e-6
    assert np.abs(with_faces[square > 0] - background[square > 0]).mean() > 0.02

    report = tmp_path / "report"
    run(compare_main, ["-i", str(tmp_path / "photo.png"), "-o", str(report), "--config", str(config), "--faces",
                       "--detector-weights", str(weights), "--metrics", "niqe", "--heldout", "", "--scores", "0.2,0.9",
                       "--device", "cpu"])
    assert "photo.png: 1 face restored" in capsys.readouterr().err
    page = (report / "index.html").read_text()
    assert "1 face restored" in page and "faces detected and pasted back" in page
    host, iqp = (load_rgb(report / "images" / kind / "photo.png") for kind in ("host", "iqp"))
    inside = cv2.warpAffine(np.ones((S, S), np.float32), affine, (128, 112)) > 0
    assert np.abs(host[~inside] - iqp[~inside]).max() <= 1 / 255 + 1e-6  # the same background under both
    assert np.abs(host[inside] - iqp[inside]).mean() > 0.01  # the plug-in changed the face
    for kind in ("input", "host", "iqp", "score_0.20", "score_0.90"):
        assert (report / "crops" / "photo" / f"{kind}.png").is_file()
