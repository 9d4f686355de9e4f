"""The page of ``iqp app`` (Gradio, the ``[app]`` extra): widgets and events only; every restoration goes
through :class:`iqp_plugin.cli.app.AppModel`, the calls of ``iqp restore``.

Offline: analytics are off (``GRADIO_ANALYTICS_ENABLED=False``, set before Gradio is imported), the theme uses
system fonts only (no web fonts), the footer links, run history, MCP server, share link and server-side rendering
are off, and every script, style and image comes from the app's own server. Uploads and Gradio's copies of the
results live in the model's work folder (unless ``GRADIO_TEMP_DIR`` is set), which is removed when the app stops.
"""
from __future__ import annotations

import html
import os
import time
from dataclasses import dataclass
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio reads it: no telemetry, no version check
#: Gradio's folder for uploads and the copies it serves, if the user chose one; else the app's work folder
USER_TEMP_DIR = os.environ.get("GRADIO_TEMP_DIR")

import gradio as gr  # noqa: E402

from iqp_plugin.errors import IQPError  # noqa: E402
from iqp_plugin.io.files import IMAGE_SUFFIXES  # noqa: E402

SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif"]
MONO_FONTS = ["ui-monospace", "Consolas", "Menlo", "monospace"]
CSS = "#iqp-message .iqp-error {color: #b91c1c; font-weight: 600;} #iqp-message p {margin: 0;}"


def theme() -> gr.themes.Base:
    """Gradio's default theme on system fonts (its own fonts would be fetched; these never are)."""
    return gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS)


def _error(name: str, err: Exception, path: str) -> str:
    """One line for the page: the error with the upload's temporary path shortened to its name."""
    text = str(err).replace(str(path), name)
    text = text if name in text else f"{name}: {text}"
    return text[:1].upper() + text[1:]


def build(model) -> gr.Blocks:
    """The page for an :class:`~iqp_plugin.cli.app.AppModel`."""
    plug = model.has_plugin
    what = f"{model.host_name} + IQP" if plug else f"{model.host_name} alone (no plug-in loaded)"
    # Gradio's copies of the uploads and results: those a day old hourly, all of them when the app stops
    with gr.Blocks(title="iqp app", analytics_enabled=False, delete_cache=(3600, 86400)) as page:
        gr.Markdown(f"## iqp app: {what}\nDrop one or more images, move the score and release it: the image is "
                    "restored again at that score. Drag the line over the result to compare the host alone (left) "
                    "with host + IQP (right).")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                files = gr.File(label="Images", file_count="multiple", type="filepath", elem_id="iqp-files",
                                file_types=sorted(IMAGE_SUFFIXES))
                shown = gr.Dropdown(label="Shown image", choices=[], visible=False, elem_id="iqp-shown")
                score = gr.Slider(0, 1, value=model.score if plug else 0.5, step=0.01, interactive=plug,
                                  label="Score", info="the quality asked of the plug-in; 0.95: like the best 5% of "
                                  "its training targets", elem_id="iqp-score")
                alone = gr.Checkbox(label="Host alone", value=not plug, interactive=plug, elem_id="iqp-host-alone")
                download = gr.DownloadButton("Download the restored PNG", interactive=False, elem_id="iqp-download")
                every = gr.Button("Restore every image at this score", elem_id="iqp-every")
                restored = gr.File(label="Restored files", file_count="multiple", visible=False,
                                   elem_id="iqp-restored")
                message = gr.HTML(elem_id="iqp-message")
                known = gr.State([])  # the uploads seen so far: a new upload is shown first
            with gr.Column(scale=2):
                result = gr.ImageSlider(label="host | host + IQP", type="filepath", format="png", interactive=False,
                                        elem_id="iqp-result", max_height=720)

        def choices(paths):
            paths = list(paths or [])
            names = [Path(p).name for p in paths]
            return [(f"{i + 1}. {n}" if names.count(n) > 1 else n, p)
                    for i, (n, p) in enumerate(zip(names, paths, strict=True))]

        def show(paths, chosen, value, host_alone):
            if not paths:
                return None, gr.DownloadButton(value=None, interactive=False), ""
            path = chosen if chosen in paths else paths[0]
            name = Path(path).name
            value = model.score if value is None else float(value)  # None: an emptied number box
            try:
                view = model.restore(path, value, host_alone)
            except (IQPError, OSError, ValueError) as err:
                text = _error(name, err, path)
                gr.Warning(text)
                return (None, gr.DownloadButton(value=None, interactive=False),
                        f"<p class='iqp-error'>{html.escape(text)}</p>")
            label = ("input | host alone" if host_alone or not plug
                     else f"host | host + IQP at score {value:.2f}")
            return (gr.ImageSlider(value=(str(view.before), str(view.after)), label=label),
                    gr.DownloadButton(value=str(view.after), interactive=True, label=f"Download {view.after.name}"),
                    f"<p>{html.escape(view.note)}</p>")

        def uploaded(paths, seen, value, host_alone):
            options = choices(paths)
            new = [p for p in paths or [] if p not in seen]
            first = new[0] if new else options[0][1] if options else None
            return (gr.Dropdown(choices=options, value=first, visible=len(options) > 1), list(paths or []),
                    *show(paths, first, value, host_alone))

        def restore_every(paths, value, host_alone):
            done, failed, start = [], [], time.perf_counter()
            for path in paths or []:
                try:
                    done.append(str(model.restore(path, value, host_alone).after))
                except (IQPError, OSError, ValueError) as err:
                    failed.append(_error(Path(path).name, err, path))
            lines = [f"{len(done)} restored in {time.perf_counter() - start:.1f} s", *failed]
            for line in lines[1:]:
                gr.Warning(line)
            text = "".join(f"<p class='{'iqp-error' if i else ''}'>{html.escape(t)}</p>" for i, t in enumerate(lines))
            return gr.File(value=done or None, visible=bool(done)), text

        view = [result, download, message]
        files.change(uploaded, [files, known, score, alone], [shown, known, *view])
        for event in (shown.input, score.release, alone.input):  # a change while restoring: restored next
            event(show, [files, shown, score, alone], view, trigger_mode="always_last")
        every.click(restore_every, [files, score, alone], [restored, message])
    return page


@dataclass
class App:
    """A running page: its address, and :meth:`close` to stop it."""

    page: gr.Blocks
    model: object
    url: str

    def wait(self) -> None:
        """Serve until Ctrl-C (KeyboardInterrupt)."""
        while True:
            time.sleep(1)

    def close(self, wait: float = 5.0) -> bool:
        """Stop the server, wait up to ``wait`` seconds for a restoration still running, remove the model's work
        folder; whether none was left running."""
        self.page.close(verbose=False)
        idle = self.model.idle(wait)
        self.model.close()
        return idle


def launch(model, bind: str = "127.0.0.1", port: int = 7860) -> App:
    """Start the page for ``model`` at ``bind:port`` in a background thread."""
    os.environ["GRADIO_TEMP_DIR"] = USER_TEMP_DIR or str(model.work / "gradio")  # uploads go where close() cleans
    page = build(model)
    page.queue(default_concurrency_limit=1)
    try:
        _, url, _ = page.launch(server_name=bind, server_port=port, prevent_thread_lock=True, quiet=True,
                                show_error=True, share=False, inbrowser=False, footer_links=[], run_history=False,
                                ssr_mode=False, pwa=False, mcp_server=False, enable_monitoring=False, theme=theme(),
                                css=CSS, allowed_paths=[str(model.work)])
    except OSError as err:  # Gradio's message names its own options
        raise OSError(f"cannot serve on {bind}:{port} (the port is in use, or the address is not one of this "
                      "machine's): choose another --port (0: any free one) or --bind") from err
    return App(page, model, url.rstrip("/"))
