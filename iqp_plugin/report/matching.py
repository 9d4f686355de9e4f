"""The GT of each input of ``iqp compare``: found by the project's pairing rule
(:func:`iqp_plugin.io.images.pair_key`) and checked against the output's size before anything is written."""
from __future__ import annotations

from pathlib import Path

from iqp_plugin.errors import InvalidInputError
from iqp_plugin.io.images import find_images, pair_key, read_picture


def match_gt(names: list[str], gt_dir: str) -> dict[str, Path]:
    """GT file of every input name (same relative path, else same name without LR/HR tokens)."""
    gts = dict(find_images(gt_dir))
    by_key = {pair_key(n): p for n, p in gts.items()}
    found = {n: gts.get(n) or by_key.get(pair_key(n)) for n in names}
    missing = [n for n, p in found.items() if p is None]
    if missing:
        raise InvalidInputError(f"no GT in {gt_dir} for {len(missing)} input(s), e.g. {', '.join(missing[:3])}")
    return found


def check_gt_sizes(items: list[tuple[str, Path]], gts: dict[str, Path], scale: tuple[float, float]) -> None:
    """ValueError naming the first GT whose size is not its input's times ``scale`` (output / input size per side,
    measured on one image), so that a wrong GT stops the run before anything is written."""
    for name, path in items:
        h, w = read_picture(path).rgb.shape[:2]
        out_h, out_w = round(h * scale[0]), round(w * scale[1])
        gt_h, gt_w = read_picture(gts[name]).rgb.shape[:2]
        if (gt_h, gt_w) != (out_h, out_w):
            factor = f"{scale[1]:g}x" if scale[0] == scale[1] else f"{scale[1]:g}x{scale[0]:g} times"
            raise InvalidInputError(f"GT {gts[name]} is {gt_w}x{gt_h}, but the output of {name} will be "
                                    f"{out_w}x{out_h} ({factor} its {w}x{h} input): give GT images of the output's "
                                    "size")
