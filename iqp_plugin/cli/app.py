"""``iqp app``: a local web page to restore your own photos and move the quality score live (Gradio, the
``[app]`` extra).

    iqp app (--config wrapper.yml | --host FILE [--plugin F] | --host TYPE --host-checkpoint F [--plugin F])
            [--port N] [--bind ADDR] [--score S] [--w W] [--tile T] [--tile-overlap O] [--tile-above PIXELS]
            [--device auto|cpu|cuda] [--faces [--upscale N] [--only-center-face] [--bg-host CONFIG]
            [--detector-weights PATH]]

The page restores with the calls of ``iqp restore`` and its options (:class:`AppModel`): ``read_picture``, then
``run_batch`` with the same tiling options (or, with ``--faces``, the same :class:`PhotoRestorer`), then
``write_picture`` to a PNG. The file the page offers for an image and a score is therefore byte for byte the file
``iqp restore --score S -o OUT.png`` writes. The server binds 127.0.0.1 unless ``--bind`` says otherwise; the page
loads nothing from the network (:mod:`iqp_plugin.app`).

This module imports argparse only at the top, so that ``--help`` and argument errors return before torch and
Gradio load.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from iqp_plugin.cli import parsers


@dataclass
class View:
    """What the page shows for one image: the slider's two sides, the restored file and a line about it."""

    before: Path  # the host's output, or the input with "host alone"
    after: Path  # the restored file (PNG), host + IQP or the host alone
    note: str


class AppModel:
    """The wrapper and the ``iqp restore`` options of one ``iqp app``; restores uploaded files into PNGs in a
    work folder of its own (removed by :meth:`close`). One restoration runs at a time."""

    def __init__(self, args: argparse.Namespace):
        from iqp_plugin.cli.restore import check_restore_args, load_restorer

        detector = check_restore_args(args)
        self.args = args
        self.wrapper, self.kwargs, self.photos = load_restorer(args, detector)
        plugin = self.wrapper.plugin
        self.has_plugin = plugin is not None
        self.score = args.score if args.score is not None else (plugin.cfg["target_score"] if plugin else None)
        self.host_name = type(self.wrapper.host).__name__
        self.work = Path(tempfile.mkdtemp(prefix="iqp-app-"))
        self._lock = threading.Lock()
        self._done: dict[tuple, tuple[Path, str]] = {}  # (input file, mtime, score) -> restored file, note

    def close(self) -> None:
        """Remove the work folder."""
        shutil.rmtree(self.work, ignore_errors=True)

    def idle(self, timeout: float) -> bool:
        """Whether no restoration runs, waiting up to ``timeout`` seconds for the one that does."""
        if not self._lock.acquire(timeout=timeout):
            return False
        self._lock.release()
        return True

    def _folder(self, src: Path) -> Path:
        folder = self.work / hashlib.sha1(str(src.resolve()).encode()).hexdigest()[:12]
        folder.mkdir(exist_ok=True)  # not the work folder itself: once closed, it stays removed
        return folder

    def _restore(self, pic, score: float | None, plugin: bool):
        """RGB of ``pic`` restored exactly as ``iqp restore`` does (one image per batch), and a note."""
        import numpy as np

        from iqp_plugin.inference.tiling import run_batch

        if self.photos is not None:
            photo = self.photos(pic.rgb, {"out": {"score": score} if plugin else {"plugin": False}})
            return photo.images["out"], photo.note
        args = self.args
        out = run_batch(self.wrapper, np.stack([pic.rgb]), score, args.tile, args.tile_overlap,
                        tile_above=args.tile_above, plugin=plugin, **self.kwargs)
        return out[0], ""

    def restore(self, path: str | Path, score: float | None = None, host_alone: bool = False) -> View:
        """Restore one input file; :class:`~iqp_plugin.errors.InvalidInputError` for a file that cannot be read.
        With ``host_alone`` (or without a plug-in) the result is the host's output and the slider's other side
        the input."""
        from iqp_plugin.io.images import Picture, read_picture, write_picture

        src = Path(path)
        pic = read_picture(src)  # the error names the file; the page shows it
        folder = self._folder(src)
        host_alone = host_alone or not self.has_plugin
        score = None if host_alone else (self.score if score is None else float(score))
        start = time.perf_counter()
        with self._lock:
            key = (str(src.resolve()), src.stat().st_mtime_ns)

            def restored(score: float | None, name: str) -> tuple[Path, str]:
                """The file of ``score`` (None: the host alone), restored once per input and score."""
                done = self._done.get((*key, score))
                if done is None or not done[0].exists():
                    rgb, note = self._restore(pic, score, plugin=score is not None)
                    write_picture(folder / name, Picture(rgb, pic.alpha, pic.gray, pic.bits))
                    done = self._done[(*key, score)] = folder / name, note
                return done

            host, _ = restored(None, f"{src.stem}_host.png")
            if host_alone:
                before = folder / f"{src.stem}_input.png"
                write_picture(before, Picture(pic.rgb, pic.alpha, pic.gray, pic.bits))
                after, note = host, ""
            else:
                tag = f"{score:.2f}" if round(score, 2) == score else repr(score)  # one name per score
                after, note = restored(score, f"{src.stem}_iqp{tag}.png")
                before = host
        h, w = pic.rgb.shape[:2]
        what = f"{self.host_name} alone" if host_alone else f"{self.host_name} + IQP at score {score:.2f}"
        line = f"{src.name}: {w}x{h}, {what}, {time.perf_counter() - start:.1f} s"
        return View(before, after, f"{line}; {note}" if note else line)


def serve(argv: list[str] | None = None, block: bool = True):
    """Load the model, start the page; with ``block`` serve until Ctrl-C, else return the running
    :class:`iqp_plugin.app.App` (its ``close()`` stops it)."""
    from iqp_plugin.errors import InvalidInputError

    args = parsers.app().parse_args(argv)
    if not 0 <= args.port < 65536:
        raise InvalidInputError(f"--port must be in [0, 65535] (0: any free port), got {args.port}")
    if args.port == 0:
        with socket.socket() as s:
            s.bind((args.bind, 0))
            args.port = s.getsockname()[1]
    if importlib.util.find_spec("gradio") is None:
        raise InvalidInputError("iqp app needs Gradio, the [app] extra: pip install 'iqp-plugin[app]' "
                                "(or make install)")
    start = time.perf_counter()
    model = AppModel(args)
    try:
        from iqp_plugin import app

        running = app.launch(model, args.bind, args.port)
    except BaseException:
        model.close()
        raise
    print(f"iqp app: {running.url} ({model.host_name}{' + IQP' if model.has_plugin else ' alone'}, ready in "
          f"{time.perf_counter() - start:.1f} s); Ctrl-C to stop", flush=True)
    if not block:
        return running
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # kill: stop as on Ctrl-C (the work folder removed)
    try:
        running.wait()
    except KeyboardInterrupt:
        print("iqp app: stopped", flush=True)
    finally:
        if not running.close():  # a server thread is still inside torch: exit without waiting for its image
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
    return None


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    try:
        serve(argv)
    except KeyboardInterrupt:  # before the page was up
        print("iqp app: stopped", flush=True)


if __name__ == "__main__":
    import iqp_plugin
    from iqp_plugin.cli import run

    iqp_plugin.register()
    run(main)
