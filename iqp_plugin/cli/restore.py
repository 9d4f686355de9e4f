"""``iqp restore``: restore an image or a folder (recursive) with a host + IQP plug-in.

    iqp restore -i IN -o OUT (--config wrapper.yml | --host FILE | --host TYPE [--host-opt JSON] --host-checkpoint F)
                [--plugin F] [--allow-host-mismatch] [--score S] [--w W] [--tile T] [--tile-overlap O]
                [--tile-above PIXELS] [--device auto|cpu|cuda] [--batch N] [--overwrite]
                [--faces [--upscale N] [--only-center-face] [--bg-host CONFIG] [--detector-weights PATH]]

``--host FILE`` takes a host checkpoint alone: spandrel detects its architecture and options (``host: auto``),
and ``--plugin`` adds a plug-in trained on exactly that file (another one is an error unless
``--allow-host-mismatch``).

Names and formats are kept (``OUT/<relative path>``; a single input file may also go to an image path);
OUT may lie inside a folder IN (it is not searched for inputs), but may not be IN or a folder above it; an image
path OUT may not be IN nor a model file the command reads.
Inputs of more than ``--tile-above`` pixels (default 512 x 512) are restored in overlapping, blended tiles of
at most that many pixels, so that memory stays bounded; ``--tile T`` sets the tile side, ``--tile 0`` turns
tiling off. Images are read upright (EXIF orientation) and written without the tag;
RGBA keeps its alpha, grayscale stays grayscale, 16-bit PNG stays 16-bit. Existing outputs are skipped
unless ``--overwrite``; unreadable inputs are reported, skipped and named again in the summary line (as in
``iqp compare``). Exit code 1 when some input failed.
Every output is checked (not a folder, in a writable place) before the model loads; Ctrl-C keeps the images
written so far (the next run skips them).

Face hosts (CodeFormer, RestoreFormer) take aligned faces; an input of another size is resized to theirs and
back. ``--faces`` takes whole photos instead (:mod:`iqp_plugin.inference.faces`): every face is detected (RetinaFace,
weights from ``--detector-weights`` or facexlib's cache, never downloaded), aligned, restored and pasted back
over the photo resized by ``--upscale`` or restored by ``--bg-host CONFIG``; what was found is reported per
image (no face, faces too small, how many), and a photo without a face is written as its background.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from iqp_plugin.archs.wrapper import IQPWrapper
from iqp_plugin.cli import parsers, writing
from iqp_plugin.errors import InvalidInputError
from iqp_plugin.inference.faces import PhotoRestorer, check_face_args, photo_restorer_from_args
from iqp_plugin.inference.loading import host_kwargs, load_from_args
from iqp_plugin.inference.tiling import check_tile_args, run_batch
from iqp_plugin.io.files import IMAGE_SUFFIXES, check_outputs_apart, check_writable
from iqp_plugin.io.images import Picture, find_images, read_picture, write_picture
from iqp_plugin.prior.score_files import check_scores


def output_paths(src: str, dst: str, reads: list[str] = ()) -> list[tuple[Path, Path]]:
    """(input, output) file pairs; a single input file with ``dst`` ending in an image suffix maps to it (which may
    be neither that file nor one of the other files the command ``reads``).
    An output folder inside the input folder is not searched for inputs (earlier outputs are not inputs);
    an output folder that is the input folder or holds it is a ValueError (its outputs would be inputs), and
    so is an output that cannot be written (:func:`~iqp_plugin.io.files.check_writable`)."""
    items = find_images(src)
    if Path(src).is_file() and Path(dst).suffix.lower() in IMAGE_SUFFIXES:
        check_outputs_apart([src, *reads], files={"-o": dst})
        check_writable(dst)
        return [(items[0][1], Path(dst))]
    out = Path(dst).resolve()
    root = Path(src).resolve()
    if root.is_dir() and root.is_relative_to(out):
        where = "is the input folder" if root == out else f"holds the input folder {src}"
        raise InvalidInputError(f"-o {dst} {where}, so the restored files would land among the inputs: "
                         f"choose an -o outside it, e.g. {root}_restored")
    check_writable(dst, folder=True)
    pairs = [(path, Path(dst) / name) for name, path in items if not path.resolve().is_relative_to(out)]
    for _, path in pairs:
        check_writable(path, given=dst)
    return pairs


def unreadable(paths: list[Path]) -> str:
    """The end of a summary line naming the inputs that could not be read (the first five)."""
    if not paths:
        return ""
    more = f" (+{len(paths) - 5} more)" if len(paths) > 5 else ""
    return f"; unreadable, skipped: {', '.join(map(str, paths[:5]))}{more}"


def check_restore_args(args) -> Path | None:
    """The checks of the restoring options (score, batch, tiles, faces) made before anything loads; returns the
    face detector's weights file with ``--faces`` (:func:`iqp_plugin.inference.faces.check_face_args`)."""
    if args.score is not None:
        check_scores(args.score, "--score")
    if args.batch < 1:
        raise InvalidInputError("--batch must be >= 1")
    check_tile_args(args)
    return check_face_args(args)


def load_restorer(args, detector) -> tuple[IQPWrapper, dict, PhotoRestorer | None]:
    """The wrapper, its host arguments and (with ``--faces``) the photo restorer of the restoring options, with the
    tile side checked on the model before any image; shared by ``iqp restore`` and ``iqp app``."""
    wrapper = load_from_args(args)
    if args.score is not None and wrapper.plugin is None:
        raise InvalidInputError("--score needs a plug-in (--plugin F or a plugin block in the config)")
    kwargs = host_kwargs(wrapper, w=args.w)
    photos = photo_restorer_from_args(args, wrapper, detector, **kwargs) if args.faces else None
    tiled = photos.background if photos is not None else wrapper
    if tiled is not None:
        check_tile_args(args, tiled)  # the tile side the run will use, before any image
    return wrapper, kwargs, photos


def main(argv: list[str] | None = None) -> None:
    args = parsers.restore().parse_args(argv)
    detector = check_restore_args(args)
    pairs = output_paths(args.input, args.output, parsers.model_files(args))
    if any(src.resolve() == dst.resolve() for src, dst in pairs):
        raise InvalidInputError("the output would replace an input: choose another -o")
    wrapper, kwargs, photos = load_restorer(args, detector)

    start = time.perf_counter()
    counts = {"done": 0, "skipped": 0, "failed": 0, "faces": 0, "faceless": 0}
    failed: list[Path] = []
    pending: list[tuple[Path, Picture]] = []

    def flush() -> None:
        if not pending:
            return
        out = run_batch(wrapper, np.stack([pic.rgb for _, pic in pending]), args.score, args.tile,
                        args.tile_overlap, tile_above=args.tile_above, **kwargs)
        for (dst, pic), rgb in zip(pending, out, strict=False):
            write_picture(dst, Picture(rgb, pic.alpha, pic.gray, pic.bits))
            counts["done"] += 1
        pending.clear()

    writing(args.output)
    bar = tqdm(pairs, desc="restore", unit="img")
    for src, dst in bar:
        if dst.exists() and not args.overwrite:
            counts["skipped"] += 1
            continue
        try:
            pic = read_picture(src)
        except ValueError as err:
            tqdm.write(f"iqp restore: skipped {src}: {err}", file=sys.stderr)
            counts["failed"] += 1
            failed.append(src)
            continue
        if photos is not None:
            photo = photos(pic.rgb, {"out": {"score": args.score}})
            write_picture(dst, Picture(photo.images["out"], pic.alpha, pic.gray, pic.bits))
            tqdm.write(f"iqp restore: {src}: {photo.note}", file=sys.stderr)
            counts["done"] += 1
            counts["faces"] += photo.restored
            counts["faceless"] += not photo.restored
            continue
        if pending and pending[0][1].rgb.shape != pic.rgb.shape:
            flush()
        pending.append((dst, pic))
        if len(pending) == args.batch:
            flush()
    flush()
    bar.close()
    seconds = time.perf_counter() - start
    if photos is not None:
        print(f"iqp restore: {counts['faces']} faces restored; photos without a restored face (written as their "
              f"background): {counts['faceless']}")
    print(f"iqp restore: {counts['done']} done, {counts['skipped']} skipped (exist; --overwrite to redo), "
          f"{counts['failed']} failed in {seconds:.1f} s -> {args.output}" + unreadable(failed))
    if counts["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    from iqp_plugin.cli import run

    run(main)
