"""Whole photographs through a face host (``iqp restore --faces``, ``iqp compare --faces``).

Face hosts (CodeFormer, RestoreFormer) take aligned faces of one size (512 x 512 px for the official weights).
For a whole photo, facexlib's ``FaceRestoreHelper``, the helper of CodeFormer's and GFPGAN's own scripts, does
the rest, as there:

1. RetinaFace (ResNet-50) finds the faces and their 5 landmarks, on the photo resized to a short side of 640 px
   (a long side of at most 4096 px);
   faces whose eyes are under :data:`MIN_EYE_DIST` px apart are too small and left as they are;
2. each face is warped to the FFHQ 5-point template at the host's face size (similarity transform, LMEDS);
3. the host (+ plug-in) restores every aligned face, once per requested output (host alone, host + IQP, each
   score of a sweep), so that the outputs differ only where the restorer does;
4. every restored face is warped back (inverse affine, times ``--upscale``) and blended in with a soft square
   mask (eroded and blurred: facexlib's mask without a face-parsing network), over the background: the photo
   resized by ``--upscale`` (Lanczos), or restored by ``--bg-host CONFIG`` (any restorer config of this
   project, e.g. a SwinIR host; the same background under every output).

Outside the pasted masks the output is the background: with ``--upscale 1`` and no ``--bg-host``, the input
itself. A photo without a face gets the background only and a note; nothing stops the run.

Detection weights are never downloaded: ``--detector-weights PATH``, else facexlib's own cache file
(:func:`default_detector_path`, where GFPGAN and CodeFormer put it) is used, and a missing file is an error that
names it. The helper is built around that detector; its face-parsing network is not used (and not loaded).
"""
from __future__ import annotations

import argparse
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import torch

from iqp_plugin.errors import InvalidInputError
from iqp_plugin.inference import AUTO_TILE_ABOVE, TILE_OVERLAP
from iqp_plugin.inference.tiling import run_batch

#: RetinaFace weights of facexlib (its ``retinaface_resnet50``), and where facexlib itself downloads them from.
DETECTOR_FILE = "detection_Resnet50_Final.pth"
DETECTOR_URL = "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth"
#: The photo is resized to this short side for detection (as CodeFormer's script does): small photos are
#: enlarged, so that small faces are found, and large ones reduced, so that detection stays fast.
DETECT_SIDE = 640
#: ... unless that makes the long side longer than this (very long strips): then the long side is this.
DETECT_MAX_SIDE = 4096
#: RetinaFace's confidence threshold in facexlib's helper.
DETECT_CONFIDENCE = 0.97
#: Faces whose eye centres are closer than this many pixels are too small to restore (CodeFormer's threshold).
MIN_EYE_DIST = 5.0
#: Pasting works on values mapped to [PASTE_LO, PASTE_LO + PASTE_SPAN]: facexlib's paste ends in a cast to
#: uint16 when the image's maximum is over 256 (else uint8), which truncates; this range keeps every value over
#: 256 and under 65535, so the cast is always to uint16 and costs at most 1 / PASTE_SPAN.
PASTE_LO, PASTE_SPAN = 512.0, 64000.0


def default_detector_path() -> Path:
    """facexlib's cache file of the RetinaFace weights (``<site-packages>/facexlib/weights/``)."""
    from facexlib.utils.misc import ROOT_DIR

    return Path(ROOT_DIR) / "facexlib" / "weights" / DETECTOR_FILE


# ---------------------------------------------------------------- options

def check_face_args(args: argparse.Namespace) -> Path | None:
    """ValueError for face options that cannot work, before any model loads; the detector weights file
    (None without ``--faces``). A missing file is a FileNotFoundError that names it and how to give it."""
    if not args.faces:
        given = [flag for flag, value in (("--upscale", args.upscale), ("--only-center-face", args.only_center_face),
                                          ("--bg-host", args.bg_host), ("--detector-weights", args.detector_weights))
                 if value]
        if given:
            raise InvalidInputError(f"{', '.join(given)} go(es) with --faces (whole photos through a face host): "
                                    "add --faces")
        return None
    if args.upscale is not None and not 1 <= args.upscale <= 16:
        raise InvalidInputError(f"--upscale must be an integer from 1 to 16, got {args.upscale}")
    if args.bg_host and not Path(args.bg_host).is_file():
        raise FileNotFoundError(f"--bg-host config not found: {args.bg_host}. Give a restorer config (wrapper YAML, "
                                "as --config)")
    return detector_weights(args.detector_weights)


def detector_weights(path: str | None) -> Path:
    """The RetinaFace weights file: ``path``, else facexlib's cache file; FileNotFoundError (one line, naming the
    file, where to put it and how to pass it) when it is not there. Nothing is ever downloaded."""
    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--detector-weights {path} not found: give the path of facexlib's RetinaFace "
                                    f"weights {DETECTOR_FILE} ({DETECTOR_URL})")
        return Path(path)
    default = default_detector_path()
    if not default.is_file():
        raise FileNotFoundError(f"--faces needs the face detector's weights {DETECTOR_FILE} (facexlib's RetinaFace, "
                                f"{DETECTOR_URL}); none at {default}: download it there, or anywhere and pass "
                                f"--detector-weights PATH (nothing is downloaded for you)")
    return default


# ---------------------------------------------------------------- detector and helper
def load_detector(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """facexlib's RetinaFace with the weights in ``path`` (ResNet-50 or MobileNet-0.25, told apart by the keys),
    read safely (no pickled code runs; ``module.`` prefixes stripped); ValueError when they are not RetinaFace's."""
    from facexlib.detection.retinaface import RetinaFace

    from iqp_plugin.io.host_checkpoint import extract_state_dict, read_checkpoint

    state = extract_state_dict(read_checkpoint(str(path)))
    network = "mobile0.25" if any(k.startswith("body.stage1.") for k in state) else "resnet50"
    model = RetinaFace(network_name=network, half=False, device=torch.device(device))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = " ".join(str(err).strip().splitlines()[:2])
        raise InvalidInputError(f"{path} is not RetinaFace weights (facexlib's {DETECTOR_FILE} or "
                         f"detection_mobilenet0.25_Final.pth): {first}") from err
    return model.to(device).eval()


class _Recorder:
    """Wraps a detector and keeps its last raw detections (to count the faces the helper drops as too small)."""

    def __init__(self, detector):
        self.detector, self.last = detector, np.zeros((0, 15), np.float32)

    def detect_faces(self, image, conf_threshold=0.8, *args, **kwargs):
        self.last = np.asarray(self.detector.detect_faces(image, conf_threshold, *args, **kwargs)).reshape(-1, 15)
        return self.last


@contextmanager
def _no_model_loading(detector):
    """facexlib's helper builds its detector and its parsing network in ``__init__`` and downloads their weights
    when they are missing; here it gets the detector already loaded and no parsing network (not used), so that it
    never downloads anything."""
    import facexlib.utils.face_restoration_helper as frh

    with mock.patch.object(frh, "init_detection_model", lambda *a, **k: detector), \
            mock.patch.object(frh, "init_parsing_model", lambda *a, **k: None):
        yield frh.FaceRestoreHelper


def make_helper(detector, face_size: int, device: str | torch.device = "cpu"):
    """A facexlib ``FaceRestoreHelper`` for ``face_size`` faces around ``detector`` (any object with RetinaFace's
    ``detect_faces(bgr_image, confidence) -> (N, 15)``: box, score, 5 landmarks)."""
    with _no_model_loading(_Recorder(detector)) as helper_class:
        return helper_class(1, face_size=face_size, crop_ratio=(1, 1), save_ext="png", use_parse=False,
                            device=torch.device(device))


# ---------------------------------------------------------------- the photo path
def check_face_host(wrapper) -> int:
    """The face size of a face host; ValueError for a host that restores whole images."""
    if not wrapper.adapter.input_size:
        raise InvalidInputError(f"--faces needs a face host (CodeFormer, RestoreFormer), which restores aligned faces; "
                         f"{type(wrapper.host).__name__} restores whole images as they are: drop --faces")
    return wrapper.adapter.input_size


@dataclass
class Photo:
    """The outputs of one photo (name -> RGB float [0, 1] at ``upscale`` times its size) and what was found."""

    images: dict[str, np.ndarray]
    found: int = 0  # faces RetinaFace found
    restored: int = 0  # faces restored and pasted back
    too_small: int = 0  # found, but eyes under MIN_EYE_DIST px apart
    upscale: int = 1
    background: str = "the photo"  # what the output is outside the faces

    @property
    def note(self) -> str:
        """One line for people: what was done to this photo."""
        if not self.found:
            return (f"no face found (RetinaFace misses faces under about 16 px at a {DETECT_SIDE} px short side): "
                    f"written as {self.background}")
        parts = [f"{self.restored} face{'s' if self.restored != 1 else ''} restored"]
        if self.too_small:
            parts.append(f"{self.too_small} too small (eyes under {MIN_EYE_DIST:g} px apart), left as they are")
        left = self.found - self.restored - self.too_small
        if left > 0:
            parts.append(f"{left} other{'s' if left != 1 else ''} left as they are (--only-center-face)")
        if self.found > 1:
            parts[0] += f" of {self.found} found"
        return "; ".join(parts)


class PhotoRestorer:
    """Restore whole photos with a face host: detection, alignment, restoration, paste-back (module docstring).

    ``runs`` of :meth:`__call__` name the outputs wanted and their :func:`~iqp_plugin.inference.tiling.run_batch`
    options, e.g. ``{"host": {"plugin": False}, "iqp": {"score": 0.9}}``; detection, alignment and the
    background are computed once for all of them.
    """

    def __init__(self, wrapper, detector, upscale: int | None = None, only_center_face: bool = False,
                 background=None, batch: int = 4, tile: int | None = None, tile_overlap: int = TILE_OVERLAP,
                 tile_above: int = AUTO_TILE_ABOVE, **host_kwargs):
        size = check_face_host(wrapper)
        if tile and background is None:
            raise InvalidInputError("with --faces, --tile applies to the background host: add --bg-host CONFIG, "
                                    "or drop --tile")
        self.wrapper, self.upscale, self.only_center_face = wrapper, upscale, only_center_face
        self.background, self.batch, self.host_kwargs = background, max(1, batch), host_kwargs
        self.tiling = {"tile": tile, "overlap": tile_overlap, "tile_above": tile_above}
        self.helper = make_helper(detector, size, next(wrapper.parameters()).device)

    def _background(self, rgb: np.ndarray) -> tuple[np.ndarray, int]:
        """The background at the output size, and the upscale factor."""
        h, w = rgb.shape[:2]
        bg = rgb
        if self.background is not None:
            bg = run_batch(self.background, rgb[None], **self.tiling)[0]
        upscale = self.upscale or max(1, round(bg.shape[1] / w))
        size = (w * upscale, h * upscale)
        if bg.shape[1::-1] != size:
            shrink = bg.shape[1] > size[0]
            bg = cv2.resize(bg, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)
        return np.clip(bg, 0, 1).astype(np.float32), upscale

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray, runs: dict[str, dict]) -> Photo:
        """Outputs of an RGB float [0, 1] H x W x 3 photo, one per entry of ``runs`` (class docstring)."""
        helper = self.helper
        bg, upscale = self._background(rgb)
        helper.clean_all()
        helper.set_upscale_factor(upscale)
        helper.input_img = cv2.cvtColor(rgb.astype(np.float32), cv2.COLOR_RGB2BGR) * 255.0  # BGR [0, 255]
        short, long = sorted(rgb.shape[:2])
        side = DETECT_SIDE if long * DETECT_SIDE <= DETECT_MAX_SIDE * short else max(1, DETECT_MAX_SIDE * short // long)
        n = helper.get_face_landmarks_5(only_center_face=self.only_center_face, resize=side,
                                        eye_dist_threshold=MIN_EYE_DIST)
        raw = helper.face_det.last
        eye_dist = np.hypot(raw[:, 5] - raw[:, 7], raw[:, 6] - raw[:, 8])
        kept = ("the --bg-host output" if self.background is not None else
                f"the photo resized x{upscale}" if upscale > 1 else "the photo, unchanged")
        photo = Photo({}, found=len(raw), too_small=int((eye_dist < MIN_EYE_DIST).sum()), upscale=upscale,
                      background=kept)
        if not n:
            photo.images = {name: bg.copy() for name in runs}
            return photo
        helper.align_warp_face()
        faces = np.stack([cv2.cvtColor(face, cv2.COLOR_BGR2RGB) / 255.0 for face in helper.cropped_faces])
        faces = faces.astype(np.float32)
        paste_bg = cv2.cvtColor(bg, cv2.COLOR_RGB2BGR) * PASTE_SPAN + PASTE_LO
        for name, opts in runs.items():
            restored = np.concatenate([run_batch(self.wrapper, faces[i:i + self.batch], **opts, **self.host_kwargs)
                                       for i in range(0, len(faces), self.batch)])
            helper.restored_faces = [cv2.cvtColor(face, cv2.COLOR_RGB2BGR) * PASTE_SPAN + PASTE_LO for face in restored]
            helper.inverse_affine_matrices = []  # the paste shifts them in place: fresh ones for every output
            helper.get_inverse_affine()
            out = helper.paste_faces_to_input_image(upsample_img=paste_bg)
            photo.images[name] = np.clip(cv2.cvtColor((out.astype(np.float32) - PASTE_LO) / PASTE_SPAN,
                                                      cv2.COLOR_BGR2RGB), 0, 1)
        photo.restored = len(helper.cropped_faces)
        return photo


def photo_restorer_from_args(args: argparse.Namespace, wrapper, weights: Path, **host_kwargs) -> PhotoRestorer:
    """The :class:`PhotoRestorer` that :func:`iqp_plugin.cli.parsers.add_face_args` options describe (detector and
    background host loaded on the wrapper's device)."""
    from iqp_plugin.inference.loading import load_wrapper, wrapper_options

    device = next(wrapper.parameters()).device
    check_face_host(wrapper)  # before the detector and the background host load
    background = None
    if args.bg_host:
        net, plugin_file = wrapper_options(args.bg_host)
        background = load_wrapper(net, plugin_file, device, args.allow_host_mismatch)
        if background.adapter.input_size:
            raise InvalidInputError(f"--bg-host {args.bg_host} is a face host ({type(background.host).__name__}), "
                                    "which cannot restore a whole photo: give a restorer of any size, "
                                    "e.g. a SwinIR config")
    return PhotoRestorer(wrapper, load_detector(weights, device), args.upscale, args.only_center_face, background,
                         batch=getattr(args, "batch", 4), tile=args.tile, tile_overlap=args.tile_overlap,
                         tile_above=args.tile_above, **host_kwargs)

