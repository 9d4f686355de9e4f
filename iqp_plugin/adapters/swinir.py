"""SwinIR (basicsr's registered arch, official parameter names).

Bottleneck: ``res = conv_after_body(forward_features(conv_first(x))) + conv_first(x)`` at input
resolution, C = embed_dim; ``feat = z = res``. The rest of the host (upsampler, or the global image
residual of the denoising/JPEG models) is the decoder. Inputs whose sides are not multiples of the
window size are reflect-padded at the bottom and right and the output cropped, as the official model's
``forward`` does (``check_image_size``).

BasicSR's SwinIR builds the real-world upsampler (``nearest+conv``) only at x4; the official code also
has x2 and x8. A hand-written ``host: {type: SwinIR, upsampler: nearest+conv}`` at another scale is refused
before it is built; with ``host: auto`` such a checkpoint runs on spandrel's SwinIR (the official code).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY

from iqp_plugin.adapters.base import Bottleneck, HostAdapter, rebuilt, register_adapter
from iqp_plugin.errors import InvalidInputError


@register_adapter
class SwinIRAdapter(HostAdapter):
    name = "swinir"
    host_types = ("SwinIR",)
    spandrel_ids = ("SwinIR",)
    image_range = (0.0, 1.0)

    @classmethod
    def from_descriptor(cls, descriptor, **opt) -> SwinIRAdapter:
        """BasicSR's registered SwinIR with the hyper-parameters spandrel read. ``img_range`` is no tensor
        shape: spandrel takes 255 for window size 7 (the official JPEG models) and 1 otherwise."""
        hp = dict(descriptor.model.hyperparameters)
        hp.pop("norm_layer")  # always nn.LayerNorm, BasicSR's default
        if hp.pop("start_unshuffle") != 1:
            raise InvalidInputError("this SwinIR pixel-unshuffles its input (conv_first.1), which BasicSR's SwinIR "
                                    "cannot: use adapter: hook")
        if hp["upsampler"] == "nearest+conv" and hp["upscale"] != 4:  # BasicSR's SwinIR asserts x4 here
            return cls(descriptor.model, **opt)
        return cls(rebuilt(ARCH_REGISTRY.get("SwinIR"), descriptor, **hp), **opt)

    @classmethod
    def check_host_opt(cls, opt: dict) -> None:
        """Refuse the real-world upsampler at a scale other than 4, which BasicSR's SwinIR cannot build."""
        upscale = opt.get("upscale", 2)  # BasicSR's default
        if opt.get("upsampler") == "nearest+conv" and upscale != 4:
            raise InvalidInputError(f"host: BasicSR's SwinIR supports upsampler nearest+conv only at upscale 4, not "
                                    f"{upscale}: for an official real-world SwinIR x{upscale} checkpoint use "
                                    "host: auto with host_checkpoint: FILE (iqp restore --host FILE), which runs "
                                    "the official SwinIR")

    @property
    def channels(self) -> int:
        return self.host.embed_dim

    @property
    def size_multiple(self) -> int:
        return self.host.layers[0].residual_group.blocks[0].window_size

    def encode(self, x: torch.Tensor) -> Bottleneck:
        host = self.host
        h, w = x.shape[-2:]
        win = self.size_multiple
        pad_w, pad_h = -w % win, -h % win
        if pad_w or pad_h:  # reflect as the official code; replicate where the image is too small to reflect
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if pad_w < w and pad_h < h else "replicate")
        x = (x - host.mean.type_as(x)) * host.img_range
        first = host.conv_first(x)
        res = host.conv_after_body(host.forward_features(first)) + first
        return Bottleneck(feat=res, z=res, ctx={"x": x, "size": (h, w)})

    def decode(self, b: Bottleneck) -> torch.Tensor:
        host, x = self.host, b.z
        if host.upsampler == "pixelshuffle":
            x = host.conv_last(host.upsample(host.conv_before_upsample(x)))
        elif host.upsampler == "pixelshuffledirect":
            x = host.upsample(x)
        elif host.upsampler == "nearest+conv":  # one conv_up<i> per doubling: x2, x4 or x8
            x = host.conv_before_upsample(x)
            for i in range(1, host.upscale.bit_length()):
                conv = getattr(host, f"conv_up{i}")
                x = host.lrelu(conv(F.interpolate(x, scale_factor=2, mode="nearest")))
            x = host.conv_last(host.lrelu(host.conv_hr(x)))
        else:
            x = b.ctx["x"] + host.conv_last(x)
        x = x / host.img_range + host.mean.type_as(x)
        h, w = b.ctx["size"]
        return x[..., : h * host.upscale, : w * host.upscale]
