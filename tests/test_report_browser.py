"""The ``iqp compare`` report in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``): every image
loads, nothing comes from the network, the before/after slider works when dragged, and a 1400 px wide screenshot
of the whole page is saved beside the report (``screenshot.png``). Skipped where Chromium is not installed."""
import shutil

import cv2
import numpy as np
import pytest
import torch

from iqp_plugin import IQPWrapper
from iqp_plugin.cli import run
from iqp_plugin.cli.compare import main as compare_main
from tests import browser
from tests.conftest import TINY_PLUGIN, TINY_SWINIR, save_model_files
from tests.test_restore import rand_img

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))


def strong_model(folder):
    """A tiny random SwinIR x2 and a plug-in that changes its output visibly (output layer opened wide)."""
    torch.manual_seed(0)
    wrapper = IQPWrapper(host=TINY_SWINIR, plugin=TINY_PLUGIN).eval()
    torch.nn.init.normal_(wrapper.plugin.out_conv.weight, std=0.5)
    return save_model_files(folder, wrapper, TINY_SWINIR, TINY_PLUGIN)[0]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A report of two images (with GT and a two-score sweep), then copied elsewhere: it must open from the copy."""
    tmp = tmp_path_factory.mktemp("report")
    config = strong_model(tmp)
    src, gt = tmp / "in", tmp / "gt"
    src.mkdir()
    gt.mkdir()
    for i, (h, w) in enumerate([(48, 56), (48, 48)]):  # outputs of 96 px and more, for NIQE
        cv2.imwrite(str(src / f"photo {i}.png"), rand_img(h, w, seed=30 + i))  # a space in the name: links are quoted
        cv2.imwrite(str(gt / f"photo {i}.png"), rand_img(2 * h, 2 * w, seed=40 + i))
    run(compare_main, ["-i", str(src), "-o", str(tmp / "made"), "--config", str(config), "--gt", str(gt),
                       "--metrics", "niqe", "--heldout", "", "--scores", "0.3,0.9", "--device", "cpu"])
    copied = tmp / "copied" / "report"
    shutil.copytree(tmp / "made", copied)
    shutil.rmtree(tmp / "made")
    return copied


def load(png: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).astype(np.float32)


def test_report_in_headless_chromium(report):
    page = (report / "index.html").read_text()
    assert "http://" not in page and "https://" not in page and "<link" not in page
    with browser.Browser(width=1400) as b:
        b.open((report / "index.html").as_uri())
        images = b.run("return Array.from(document.images)"
                       ".map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);")
        # 2 images x (2 slider layers + 4 detail crops + 3 sweep crops) + the sweep plot
        assert len(images) == 2 * (2 + 4 + 3) + 1
        broken = [src for src, complete, width in images if not (complete and width > 0)]
        assert not broken, f"images that did not load: {broken}"
        links = b.run("return Array.from(document.querySelectorAll('[src],[href]')).map(e => e.src || e.href);")
        local = (report.as_uri() + "/", "#")
        assert links and all(url.startswith(local) or url.split("#")[0] == (report / "index.html").as_uri()
                             for url in links), links  # every link resolves inside the copied folder

        # the slider: drag it to either end and compare what is visible with the two outputs
        first = b.find(".ba")
        width = b.run("return arguments[0].getBoundingClientRect().width;", first)
        value = "return arguments[0].querySelector('input').value;"
        assert float(b.run(value, first)) == 50
        b.drag(first, 0, -width / 2 + 1)
        assert float(b.run(value, first)) <= 2
        shown_left = load(b.element_png(first))  # slider at the left end: host + IQP everywhere
        b.drag(first, -width / 2 + 1, width / 2 - 1)
        assert float(b.run(value, first)) >= 98
        shown_right = load(b.element_png(first))  # at the right end: the host everywhere
        h, w = shown_left.shape[:2]
        host, iqp = (cv2.resize(cv2.imread(str(report / "images" / kind / "photo 0.png")), (w, h),
                                interpolation=cv2.INTER_NEAREST).astype(np.float32) for kind in ("host", "iqp"))
        centre = (slice(h // 8, -h // 8), slice(w // 8, -w // 8))  # away from the labels, knob and rounded corners

        def distance(a, b_):
            return float(np.abs(a[centre] - b_[centre]).mean())

        assert distance(shown_left, shown_right) > 5
        assert distance(shown_left, iqp) < distance(shown_left, host) / 2
        assert distance(shown_right, host) < distance(shown_right, iqp) / 2

        b.run("const r = arguments[0].querySelector('input'); r.value = 50; r.dispatchEvent(new Event('input')); "
              "r.blur();", first)  # the screenshot shows the slider as a reader first sees it
        shot = b.page_png(1400)
    (report / "screenshot.png").write_bytes(shot)
    image = load(shot)
    assert image.shape[1] == 1400 and image.shape[0] > 900
    print(f"screenshot: {report / 'screenshot.png'} ({image.shape[1]}x{image.shape[0]})")
