"""A minimal WebDriver client for Debian's headless Chromium (``chromium`` + ``chromium-driver``), standard library
only: start chromedriver, open a page, run scripts, drive the pointer, take screenshots.

Chromium runs offline and stateless: a fresh profile folder, no sandbox (root in CI), no GPU, and none of its
background traffic (component updates, sync, QUIC, first-run pages)."""
from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1"]
#: W3C WebDriver's key for element references in JSON
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def missing() -> str | None:
    """Why the browser cannot run here, or None."""
    for path, _package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} not found: apt-get install chromium chromium-driver (.ci/run installs them)"
    return None


class Browser:
    """One headless Chromium session through chromedriver; use as a context manager."""

    def __init__(self, width: int = 1400, height: int = 900, timeout: float = 30.0):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.profile = tempfile.mkdtemp(prefix="iqp-chromium-")
        self.driver = subprocess.Popen([str(CHROMEDRIVER), f"--port={port}"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        self.sid = None
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    if self._call("GET", "/status", timeout=2)["value"].get("ready"):
                        break
                except (urllib.error.URLError, ConnectionError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("chromedriver did not start")
                time.sleep(0.1)
            options = {"binary": str(CHROMIUM),
                       "args": [*FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}"]}
            caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}}
            self.sid = self._call("POST", "/session", caps, timeout=60)["value"]["sessionId"]
        except BaseException:
            self.close()
            raise

    def _call(self, method: str, path: str, body: dict | None = None, timeout: float = 60) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"WebDriver {method} {path}: {err.read().decode(errors='replace')[:500]}") from err

    def cmd(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.sid}{path}", body)["value"]

    # ---- page
    def open(self, url: str) -> None:
        self.cmd("POST", "/url", {"url": url})

    def run(self, script: str, *args):
        """Run ``script`` (a function body; ``arguments`` holds ``args``) in the page; its return value."""
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css: str) -> dict:
        """A WebDriver element reference (pass it to :meth:`run` as an argument)."""
        return self.cmd("POST", "/element", {"using": "css selector", "value": css})

    def cdp(self, command: str, params: dict | None = None):
        """A Chrome DevTools Protocol command through chromedriver."""
        return self.cmd("POST", "/goog/cdp/execute", {"cmd": command, "params": params or {}})

    # ---- input
    def drag(self, element: dict, dx_from: float, dx_to: float) -> None:
        """Press the mouse at ``dx_from`` px right of ``element``'s centre, move to ``dx_to``, release."""
        moves = [{"type": "pointerMove", "duration": 0, "origin": element, "x": int(dx_from), "y": 0},
                 {"type": "pointerDown", "button": 0},
                 *({"type": "pointerMove", "duration": 20, "origin": element,
                    "x": int(dx_from + (dx_to - dx_from) * k / 4), "y": 0} for k in range(1, 5)),
                 {"type": "pointerUp", "button": 0}]
        self.cmd("POST", "/actions", {"actions": [{"type": "pointer", "id": "mouse",
                                                   "parameters": {"pointerType": "mouse"}, "actions": moves}]})
        self.cmd("DELETE", "/actions")

    # ---- screenshots
    def element_png(self, element: dict) -> bytes:
        return base64.b64decode(self.cmd("GET", f"/element/{element[ELEMENT]}/screenshot"))

    def page_png(self, width: int) -> bytes:
        """The whole page, ``width`` CSS px wide (device scale 1), as PNG bytes."""
        self.cdp("Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1,
                                                        "mobile": False})
        height = int(self.run("return Math.ceil(document.documentElement.scrollHeight);"))
        self.cdp("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                        "mobile": False})
        shot = self.cdp("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                   "clip": {"x": 0, "y": 0, "width": width, "height": height,
                                                            "scale": 1}})
        return base64.b64decode(shot["data"])

    def close(self) -> None:
        if self.sid:
            try:
                self._call("DELETE", f"/session/{self.sid}", timeout=20)
            except (RuntimeError, OSError):
                pass
            self.sid = None
        if self.driver.poll() is None:
            self.driver.terminate()
            try:
                self.driver.wait(10)
            except subprocess.TimeoutExpired:
                self.driver.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
