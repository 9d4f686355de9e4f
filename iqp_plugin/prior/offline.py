"""Create pyiqa metrics without internet.

pyiqa downloads each metric's parameter file on first use. Here: NIQE's file is built from the
parameters basicsr ships, PIQE and entropy need no file, BRISQUE works when the user has its
(GPL-3) SVM file, and any other missing file ends in one error that names the file and the
folder to put it in, never in a network traceback.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np

from iqp_plugin.errors import MissingWeightsError
from iqp_plugin.io.files import atomic_path

NIQE_FILE = "niqe_modelparameters.mat"
BRISQUE_FILE = "brisque_svm_weights.pth"

#: NR metrics that start with no download, and what each needs.
OFFLINE_METRICS = {
    "niqe": f"{NIQE_FILE}, built from basicsr's niqe_pris_params.npz",
    "piqe": "nothing",
    "entropy": "nothing (no gradient)",
    "brisque": f"{BRISQUE_FILE} from the user (GPL-3 parameters, not shipped)",
}




def cache_dir() -> Path:
    """pyiqa's weight folder (``$TORCH_HOME/hub/pyiqa`` by default), read when called."""
    from pyiqa.utils import download_util

    return Path(download_util.DEFAULT_CACHE_DIR)


def build_niqe_params(folder: str | Path | None = None) -> Path:
    """Write pyiqa's NIQE parameter file from basicsr's pristine-image model, once, atomically."""
    import basicsr.metrics
    import scipy.io

    folder = Path(folder) if folder is not None else cache_dir()
    target = folder / NIQE_FILE
    if target.is_file():
        return target
    params = np.load(Path(basicsr.metrics.__file__).parent / "niqe_pris_params.npz")
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        scipy.io.savemat(f, {"mu_prisparam": params["mu_pris_param"], "cov_prisparam": params["cov_pris_param"]})
    return target


def ensure_offline_metric(name: str) -> None:
    """Prepare ``name`` to start without network: build NIQE's file; check that BRISQUE's file is there."""
    if name == "niqe":
        build_niqe_params()
    elif name == "brisque" and not (cache_dir() / BRISQUE_FILE).is_file():
        raise MissingWeightsError(
            f"metric 'brisque' needs {BRISQUE_FILE} (GPL-3 SVM parameters, not shipped with iqp-plugin): "
            f"put it in {cache_dir()}"
        )


@contextmanager
def no_downloads(name: str):
    """Turn any download pyiqa or torch.hub would start into a MissingWeightsError naming file and folder."""
    import huggingface_hub.constants
    import pyiqa.utils.download_util
    import torch.hub

    def refuse(url, dst, *args, **kwargs):
        dst = Path(dst)
        raise MissingWeightsError(
            f"metric '{name}' needs the weight file {dst.name}, which is not on this machine: "
            f"download it from {url} and put it in {dst.parent}"
        )

    with mock.patch.object(pyiqa.utils.download_util, "download_url_to_file", refuse), \
            mock.patch.object(torch.hub, "download_url_to_file", refuse), \
            mock.patch.object(huggingface_hub.constants, "HF_HUB_OFFLINE", True):
        yield


def create_metric(name: str, **kwargs):
    """``pyiqa.create_metric`` that never downloads (see the module docstring)."""
    import pyiqa

    ensure_offline_metric(name)
    with no_downloads(name):
        return pyiqa.create_metric(name, **kwargs)
