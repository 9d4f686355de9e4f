"""The options of every ``iqp`` command: one parser builder per command, the option groups that several
commands share, and the defaults they give (tiling).

This module imports argparse only, so that ``iqp --help``, ``iqp <command> --help`` and argument errors
return before torch is loaded (see :mod:`iqp_plugin.cli`). Each command's ``main(argv)`` parses with its builder.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from iqp_plugin.inference import AUTO_TILE_ABOVE, TILE_OVERLAP


def train() -> argparse.ArgumentParser:
    """``iqp train``: BasicSR's own training options (BasicSR parses them again when training starts)."""
    p = argparse.ArgumentParser(prog="iqp train", description="Train with a BasicSR option YAML.")
    p.add_argument("-opt", required=True, help="option YAML (see configs/)")
    p.add_argument("--launcher", choices=("none", "pytorch", "slurm"), default="none", help="job launcher")
    p.add_argument("--auto_resume", action="store_true", help="resume from the newest readable training state")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--local_rank", type=int, default=0)
    p.add_argument("--force_yml", nargs="+", default=None, help="override YAML keys: --force_yml a:b=1 c=x")
    return p


def score() -> argparse.ArgumentParser:
    """``iqp score``."""
    p = argparse.ArgumentParser(prog="iqp score", description="Score image folders with an NR-IQA prior into a "
                                "CSV, and summarise such a CSV.")
    p.add_argument("-i", "--input", action="append", help="image folder (repeatable; searched recursively)")
    p.add_argument("-o", "--output", help="scores CSV; an existing folder or a path ending in / means "
                   "FOLDER/scores.csv. An existing CSV is merged with (its rows kept, new and changed images "
                   "scored); an interrupted run resumes from its partial files")
    p.add_argument("--replace", action="store_true",
                   help="drop the CSV's earlier rows: it then holds only the images of this run")
    p.add_argument("--metrics", default="offline",
                   help="named prior or comma list of pyiqa NR metrics (default: offline = niqe)")
    p.add_argument("--weights", help="comma list of weights, one per metric (default: equal)")
    p.add_argument("--batch", type=int, default=16, help="images per batch (only same-size images share one)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--norm", choices=("minmax", "fixed", "rank"), default="rank",
                   help="map raw scores to [0,1] by rank among the scored images (the default, the recipes': robust to "
                        "long tails and outliers; 0.95 = as good as the best 5%%), by the dataset's min-max (the IQPIR "
                        "authors') or by pyiqa's nominal range")
    p.add_argument("--normalizer", metavar="SIDECAR", help="normalise with another run's constants (its .json "
                   "sidecar, e.g. the training set's), so that these images land on the same scale")
    p.add_argument("--summary", metavar="CSV", help="summarise a scores CSV instead of scoring")
    p.add_argument("--top", type=float, default=20.0, help="percent of images above the HQ threshold")
    return p


def export() -> argparse.ArgumentParser:
    """``iqp export``."""
    p = argparse.ArgumentParser(prog="iqp export", description="Export host + plug-in as one ONNX graph.")
    p.add_argument("--config", required=True, help="wrapper YAML (network_g block or bare IQPWrapper options)")
    p.add_argument("--onnx", required=True, help="the .onnx file to write")
    p.add_argument("--plugin", help="plug-in checkpoint (net_g_*.pth); default: the config's plugin_checkpoint")
    quality = p.add_mutually_exclusive_group()
    quality.add_argument("--score", type=float, help="quality folded into the graph, in [0, 1] (default: the "
                                                     "plug-in's target score)")
    quality.add_argument("--score-input", action="store_true", help="make the score a graph input (batch, M)")
    p.add_argument("--size", type=int, help="fix H = W = N (default: dynamic where the host allows it)")
    p.add_argument("--host-only", action="store_true", help="export the host without the plug-in (before/after)")
    p.add_argument("--w", type=float, help="CodeFormer's fidelity weight folded into the graph (default 0.5)")
    return p


def restore() -> argparse.ArgumentParser:
    """``iqp restore``."""
    p = argparse.ArgumentParser(prog="iqp restore", description="Restore images with a host + IQP plug-in.")
    p.add_argument("-i", "--input", required=True, help="image file or folder (searched recursively)")
    p.add_argument("-o", "--output", required=True, help="output folder (or image path for a single file)")
    add_model_args(p)
    p.add_argument("--score", type=float, help="quality asked of the plug-in, in [0, 1] (default: its target)")
    p.add_argument("--w", type=float, help="CodeFormer's fidelity weight (0: quality .. 1: fidelity)")
    add_tile_args(p)
    add_face_args(p)
    p.add_argument("--batch", type=int, default=1,
                   help="images of the same size restored together (with --faces: faces of one photo)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    return p


def compare() -> argparse.ArgumentParser:
    """``iqp compare``."""
    p = argparse.ArgumentParser(prog="iqp compare",
                                description="Host alone vs host + plug-in: grids, metrics, plot, HTML report.")
    p.add_argument("-i", "--input", required=True, help="image file or folder (searched recursively)")
    p.add_argument("-o", "--output", required=True, help="report folder")
    add_model_args(p)
    p.add_argument("--gt", help="folder of ground-truth images (adds PSNR/SSIM and a GT column)")
    p.add_argument("--metrics", default="offline", help="the prior's NR metrics: a prior name or 'niqe,piqe'")
    p.add_argument("--heldout", default="piqe", help="NR metrics not in the prior, comma-separated ('' for none)")
    p.add_argument("--score", type=float, help="score asked of the plug-in in the table (default: its target)")
    p.add_argument("--scores", default="0.5,0.7,0.9", help="conditioning scores of the sweep plot")
    add_tile_args(p)
    add_face_args(p)
    return p


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The options that choose the wrapper and the device (shared by restore and compare)."""
    g = parser.add_argument_group("model")
    g.add_argument("--config", help="wrapper YAML (network_g block or bare IQPWrapper options)")
    g.add_argument("--host", help="host checkpoint (architecture and options detected by spandrel), or a host "
                                  "arch type, e.g. SwinIR, with --host-opt and --host-checkpoint (instead of --config)")
    g.add_argument("--host-opt", help="options of --host TYPE as JSON, e.g. '{\"upscale\": 4}'")
    g.add_argument("--host-checkpoint", help="host weights (params_ema / params / state_dict / safetensors)")
    g.add_argument("--plugin", help="plug-in checkpoint written by training (net_g_*.pth)")
    g.add_argument("--allow-host-mismatch", action="store_true",
                   help="run a plug-in on host weights other than those it was trained with (warn, not fail)")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def model_files(args: argparse.Namespace) -> list[str]:
    """The files that the options of :func:`add_model_args` and :func:`add_face_args` name (those given)."""
    names = ("config", "host_checkpoint", "plugin", "bg_host", "detector_weights")
    files = [v for v in (getattr(args, n, None) for n in names) if v]
    host = getattr(args, "host", None)
    return files + [host] if host and Path(host).is_file() else files


def add_tile_args(parser: argparse.ArgumentParser) -> None:
    """``--tile``, ``--tile-overlap`` and ``--tile-above`` (shared by restore and compare)."""
    g = parser.add_argument_group("tiling (hosts that take any size; face hosts never tile)")
    g.add_argument("--tile", type=int, default=None,
                   help="restore in tiles of this many input pixels a side; 0: whole images "
                        "(default: tiles for inputs over --tile-above pixels)")
    g.add_argument("--tile-overlap", type=int, default=TILE_OVERLAP,
                   help=f"overlap of neighbouring tiles, input pixels (default {TILE_OVERLAP})")
    g.add_argument("--tile-above", type=int, default=AUTO_TILE_ABOVE, metavar="PIXELS",
                   help=f"without --tile, inputs of more pixels than this are restored in square tiles of at most "
                        f"this many pixels (default {AUTO_TILE_ABOVE} = 512x512)")


def add_face_args(parser: argparse.ArgumentParser) -> None:
    """``--faces`` and its options (shared by restore and compare)."""
    g = parser.add_argument_group("whole photos (face hosts)")
    g.add_argument("--faces", action="store_true",
                   help="inputs are whole photos: detect every face, align it to the FFHQ template, restore it and "
                        "paste it back (face hosts; without it, inputs are aligned faces)")
    g.add_argument("--upscale", type=int, metavar="N",
                   help="with --faces: output size = N x input size (default: the --bg-host's scale, else 1)")
    g.add_argument("--only-center-face", action="store_true",
                   help="with --faces: restore only the face nearest the centre")
    g.add_argument("--bg-host", metavar="CONFIG",
                   help="with --faces: restorer config (as --config, e.g. a SwinIR host) for everything but the faces; "
                        "default: the photo resized by --upscale")
    g.add_argument("--detector-weights", metavar="PATH",
                   help="with --faces: RetinaFace weights, facexlib's detection_Resnet50_Final.pth "
                        "(default: that file in facexlib's weights folder)")


#: The port of ``iqp app`` without ``--port`` (Gradio's own default).
DEFAULT_PORT = 7860


def app() -> argparse.ArgumentParser:
    """``iqp app``."""
    p = argparse.ArgumentParser(prog="iqp app", description="A local web page: restore your images with host + "
                                "plug-in and move the score live (needs the [app] extra).")
    add_model_args(p)
    p.add_argument("--score", type=float, help="the slider's first score, in [0, 1] (default: the plug-in's target)")
    p.add_argument("--w", type=float, help="CodeFormer's fidelity weight (0: quality .. 1: fidelity)")
    add_tile_args(p)
    add_face_args(p)
    p.add_argument("--batch", type=int, default=1, help="with --faces: faces of one photo restored together "
                                                         "(as iqp restore --batch)")
    g = p.add_argument_group("server")
    g.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port of the page (default {DEFAULT_PORT}; 0: any free one)")
    g.add_argument("--bind", default="127.0.0.1", metavar="ADDR",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    return p
