"""``iqp app`` (the Gradio page of the ``[app]`` extra).

In a real headless Chromium (skipped without Gradio or Chromium): an uploaded image is restored, the score slider
changes what is shown, the downloaded file is byte for byte ``iqp restore --score 0.95``'s, a corrupt file gets a
message on the page, and nothing is fetched from outside the app. Without the page: tiled inputs and ``--faces``
give ``iqp restore``'s files too, and help and argument errors load neither torch nor Gradio."""
import shutil
import subprocess
import sys
import time
import urllib.request

import cv2
import numpy as np
import pytest
import torch

from iqp_plugin import IQPWrapper
from iqp_plugin.cli import run
from iqp_plugin.cli.restore import main as restore_main
from tests import browser
from tests.conftest import REPO, TINY_PLUGIN, TINY_SWINIR, save_model_files
from tests.test_faces import PASTE_FACES, detector, face_model, face_row, make_photo, save_rgb  # noqa: F401
from tests.test_restore import rand_img


def test_help_and_argument_errors_load_neither_torch_nor_gradio():
    code = ("import sys\nfrom iqp_plugin.cli.parsers import app as parser\n"
            "try:\n    parser().parse_args(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
            "print(code, any(m in sys.modules for m in ('torch', 'gradio')))")
    for argv in (["--help"], ["--port", "x"]):
        out = subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, text=True,
                             timeout=120).stdout.split()
        assert out[-2:] in (["0", "False"], ["2", "False"]), out


def test_without_gradio_one_line_names_the_extra(monkeypatch, capsys):
    from iqp_plugin.cli import app as cli_app

    monkeypatch.setattr(cli_app.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit) as exit_:
        run(cli_app.main, ["--config", "missing.yml"])  # refused before the model loads
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and "[app]" in err, err


def app_model(*argv: str):
    from iqp_plugin.cli.app import AppModel
    from iqp_plugin.cli.parsers import app as parser

    return AppModel(parser().parse_args([*argv, "--device", "cpu"]))


def test_large_inputs_and_whole_photos_give_iqp_restores_file(face_model, detector, tmp_path):  # noqa: F811
    """Without the page: tiles (an input over --tile-above) and --faces write what ``iqp restore`` writes."""
    wrapper = IQPWrapper(host=TINY_SWINIR, plugin=TINY_PLUGIN).eval()
    torch.nn.init.normal_(wrapper.plugin.out_conv.weight, std=0.5)  # zero-initialised: the host's output otherwise
    config = save_model_files(tmp_path, wrapper, TINY_SWINIR, TINY_PLUGIN)[0]
    large = tmp_path / "large.png"
    cv2.imwrite(str(large), rand_img(40, 48, seed=7))
    face_config, _, weights = face_model
    photo, _ = make_photo(224, 320, PASTE_FACES[:2])
    save_rgb(tmp_path / "photo.png", photo)
    detector.add(photo.shape, [face_row(m) for m in PASTE_FACES[:2]])
    for src, options in ((large, ["--config", str(config), "--tile-above", "1024", "--tile-overlap", "8"]),
                         (tmp_path / "photo.png", ["--config", str(face_config), "--faces", "--detector-weights",
                                                   str(weights)])):
        reference = tmp_path / f"reference_{src.name}"
        run(restore_main, ["-i", str(src), "-o", str(reference), "--score", "0.9", "--device", "cpu", *options])
        model = app_model(*options)
        try:
            view = model.restore(src, 0.9)
            assert view.after.read_bytes() == reference.read_bytes(), src.name
            assert view.before.read_bytes() != reference.read_bytes()  # the host alone
            assert ("2 faces restored" in view.note) == (src == tmp_path / "photo.png"), view.note
        finally:
            model.close()
        assert not model.work.exists()


@pytest.fixture
def app(tmp_path):
    """``iqp app`` on a tiny random SwinIR + plug-in (output layer and score conditioning opened, so that the score
    shows) at a free loopback port (``--port 0``), stopped when the test ends."""
    pytest.importorskip("gradio", reason="Gradio is not installed: the [app] extra (pip install -e '.[app]')")
    if browser.missing():
        pytest.skip(browser.missing())
    from iqp_plugin.cli.app import serve

    torch.manual_seed(0)
    plugin = {**TINY_PLUGIN, "code_temperature": 0}  # each code chosen outright: the score moves the output more
    wrapper = IQPWrapper(host=TINY_SWINIR, plugin=plugin).eval()
    torch.nn.init.normal_(wrapper.plugin.out_conv.weight, std=0.1)
    for name, param in wrapper.plugin.named_parameters():  # the score's path, zero-initialised as the output layer
        if ("modulation" in name or "score_embed" in name) and name.endswith("weight"):
            torch.nn.init.normal_(param, std=1.0)
    config = save_model_files(tmp_path, wrapper, TINY_SWINIR, plugin)[0]
    running = serve(["--config", str(config), "--port", "0", "--device", "cpu", "--score", "0.5"],
                    block=False)
    try:
        yield running, config
    finally:
        running.close()


def wait_for(b, script: str, what: str, timeout: float = 30.0):
    """Poll ``script`` in the page until it returns something truthy."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = b.run(script)
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; page text: {b.run('return document.body.innerText;')}")


def upload(b, *paths) -> None:
    """Pick files in the page's file input, as a user does in the file dialog."""
    element = b.find("#iqp-files input[type=file]")
    b.cmd("POST", f"/element/{element[browser.ELEMENT]}/value", {"text": "\n".join(map(str, paths))})


def set_score(b, value: float) -> None:
    """Type a score over the one in the slider's number box (Ctrl+A) and click it: the pointer's release is
    Gradio's 'release'."""
    box = b.find("#iqp-score input[type=number]")[browser.ELEMENT]
    b.cmd("POST", f"/element/{box}/value", {"text": "\ue009a\ue000" + str(value)})
    b.cmd("POST", f"/element/{box}/click", {})


SHOWN = ("const i = document.querySelectorAll('#iqp-result img'); "
         "return i.length == 2 && i[1].complete && i[1].src.includes(arguments[0]) ? [i[0].src, i[1].src] : null;")


def shown(b, name: str) -> tuple[str, str]:
    end = time.monotonic() + 30
    while time.monotonic() < end:
        found = b.run(SHOWN, name)
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"the result never showed {name}: {b.run('return document.body.innerText;')}")


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).astype(np.float32)


def test_app_in_headless_chromium(app, tmp_path):
    running, config = app
    photo, broken, downloads = tmp_path / "photo.png", tmp_path / "broken.png", tmp_path / "downloads"
    cv2.imwrite(str(photo), rand_img(48, 56, seed=5))
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(64)))  # a PNG header and nothing after it
    downloads.mkdir()
    reference = tmp_path / "reference.png"
    run(restore_main, ["-i", str(photo), "-o", str(reference), "--config", str(config), "--score", "0.95",
                       "--device", "cpu"])

    with browser.Browser(width=1400) as b:
        b.cdp("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        b.open(running.url + "/")
        wait_for(b, "return document.querySelector('#iqp-files input[type=file]');", "the page")
        upload(b, photo)
        shown(b, "photo_iqp0.50.png")
        set_score(b, 0.1)
        _, low = shown(b, "photo_iqp0.10.png")
        set_score(b, 0.95)
        host, high = shown(b, "photo_iqp0.95.png")
        assert float(np.abs(decode(fetch(low)) - decode(fetch(high))).mean()) > 0.5  # the score changes the result
        assert fetch(high) == reference.read_bytes()  # what is shown is the restored file itself
        assert float(np.abs(decode(fetch(host)) - decode(fetch(high))).mean()) > 1  # host | host + IQP

        label = wait_for(b, "const d = document.querySelector('#iqp-download'); "
                            "return d && !d.disabled && d.innerText.includes('0.95') ? d.innerText : null;",
                         "the download button")
        assert "photo_iqp0.95.png" in label
        b.run("document.querySelector('#iqp-download').click();")
        target = downloads / "photo_iqp0.95.png"
        end = time.monotonic() + 30
        while not target.is_file() and time.monotonic() < end:
            time.sleep(0.2)
        assert target.is_file(), list(downloads.iterdir())
        assert target.read_bytes() == reference.read_bytes()  # byte for byte iqp restore --score 0.95

        shot = b.page_png(1400)
        (tmp_path / "app.png").write_bytes(shot)

        upload(b, broken)  # added to the list and shown first: its message replaces the result
        message = wait_for(b, "const m = document.querySelector('#iqp-message .iqp-error'); "
                              "return m ? m.innerText : null;", "the error message")
        assert "broken.png" in message and "cannot decode" in message.lower(), message
        text = b.run("return document.body.innerText;")
        assert "Traceback" not in text and "/tmp/" not in message
        assert not b.run("return document.querySelectorAll('#iqp-result img').length;")

        fetched = b.run("return performance.getEntriesByType('resource').map(e => e.name)"
                        ".concat(Array.from(document.querySelectorAll('[src],link[href]')).map(e => e.src || e.href));")
        outside = [url for url in fetched if not url.startswith((running.url + "/", "data:", "blob:"))]
        assert not outside, outside  # no CDN fonts, scripts or analytics
    assert running.url.startswith("http://127.0.0.1:")
    print(f"screenshot: {tmp_path / 'app.png'}")
    shutil.rmtree(downloads)
