"""Score files: the CSV that ``iqp score`` writes and its JSON sidecar (normalisation constants, failures, file
signatures), read wherever scores are used (datasets, the training model, the benchmarks), beside the prior
whose numbers they hold (:mod:`iqp_plugin.prior.metrics`); and the check that a normalised score, read from such a
file or given on the command line, lies in [0, 1] (:func:`check_scores`)."""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

from iqp_plugin.errors import InvalidInputError
from iqp_plugin.prior.metrics import Normalizer

#: Keys every sidecar has: a .json at the sidecar's path without them is someone else's file.
_SIDECAR_KEYS = {"metrics", "weights", "lower_better", "norm", "ranges"}


def sidecar_path(csv_path: str | Path) -> Path:
    """The JSON with the normalisation constants beside a scores CSV."""
    return Path(csv_path).with_suffix(".json")


def read_sidecar(path: str | Path) -> dict:
    """The sidecar at ``path`` ({} when there is none); ValueError when the file there is not one of ours."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        side = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        side = None
    if not isinstance(side, dict) or not _SIDECAR_KEYS <= set(side):
        raise InvalidInputError(f"{path} exists and is not an iqp score sidecar; move it away or choose another -o "
                         "(the sidecar is the CSV's name with .json)")
    return side


def number(text: str, path: str | Path, line: int, name: str, column: str) -> float:
    """``text`` as a float; ValueError naming the file, line, image and column when it is not a finite number."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InvalidInputError(f"{path} line {line} ({name}): {column} {text!r} is not a number; correct or delete "
                                "that row, or score the folder again (--replace)")
    return value


def check_scores(scores: float | Iterable[float] | Mapping[str, float], what: str) -> None:
    """ValueError unless every normalised quality score lies in [0, 1] (NaN does not). ``scores`` is one score, a
    list, or {image name: score}; the message names ``what`` (``--score``, ``--scores``, a CSV) and the first score
    out of range, with its image."""
    named = scores.items() if isinstance(scores, Mapping) else enumerate(
        scores if isinstance(scores, Iterable) else [scores])
    for name, score in named:
        if not 0.0 <= score <= 1.0:
            where = f": {name} has {score}" if isinstance(scores, Mapping) else f", got {score}"
            raise InvalidInputError(f"{what} must lie in [0, 1] (the normalised quality scale){where}")


def load_scores(csv_path: str | Path) -> dict[str, float]:
    """{imagename: score} from a scores CSV, for datasets that condition on the prior; ValueError naming the
    file when a column is missing, and the line when a score is not a number."""
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing = sorted({"imagename", "score"} - set(reader.fieldnames or ()))
        if missing:
            raise InvalidInputError(f"{csv_path} needs the columns 'imagename' and 'score' (no {', '.join(missing)})")
        return {row["imagename"]: number(row["score"], csv_path, reader.line_num, row["imagename"], "score")
                for row in reader}


def failed_images(csv_path: str | Path) -> dict[str, str]:
    """{imagename: reason} of the images that could not be scored, from the sidecar of a scores CSV; {} when
    there is no sidecar of ours."""
    try:
        side = read_sidecar(sidecar_path(csv_path))
    except ValueError:
        return {}
    return {f["imagename"]: f["error"] for f in side.get("failed", [])}


def load_normalizer(sidecar: str | Path) -> Normalizer:
    """The normalisation of another scoring run, from its sidecar (``scores.json`` beside its CSV), so that new
    images are scored on the same scale as, e.g., the training set of a plug-in."""
    if not Path(sidecar).is_file():
        raise FileNotFoundError(f"--normalizer {sidecar}: no such file; pass the .json sidecar that `iqp score` "
                                "wrote beside the training set's CSV")
    read_sidecar(sidecar)  # ValueError when it is not one
    try:
        return Normalizer.load(sidecar)
    except InvalidInputError as err:
        raise InvalidInputError(f"--normalizer {err}") from None
