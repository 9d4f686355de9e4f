"""RestoreFormer and RestoreFormer++ (512x512 faces, images in [-1, 1]) as BasicSR archs, and their adapter.

``RestoreFormer`` is spandrel's re-implementation, which has GFPGAN's constructor, defaults and parameter
names (``gfpgan/archs/restoreformer_arch.py``), registered as is.

``RestoreFormerPP`` reproduces ``VQVAEGANMultiHeadTransformer`` of wzhouxiff/RestoreFormerPlusPlus,
file ``RestoreFormer/modules/vqvae/vqvae_arch.py`` (defaults from ``gradio_demo/RestoreFormer_arch.py``
and ``configs/RestoreFormerPlusPlus.yaml``: ``head_size=4``, ``ex_multi_scale_num=1``). It differs from
RestoreFormer only in the decoder: each extra scale doubles the last attention resolution
(``[16] -> [16, 32]``), so ``decoder.up.<level>.attn.*`` exist at 32 px too, and a decoder level whose
encoder feature has no ``block_<i>_atten`` entry cross-attends to ``block_<i>`` (the encoder's feature
before down-sampling). The official ``RestoreFormer++.ckpt`` loads strictly once the Lightning
``vqvae.`` prefix is stripped (``iqp_plugin.io.host_checkpoint`` does that).

Input range: both official inference scripts (RestoreFormer++ ``RestoreFormer/RestoreFormer.py``, GFPGAN
``gfpgan/utils.py``) normalise RGB in [0, 1] with mean 0.5, std 0.5, i.e. feed [-1, 1], and read the
output with ``min_max=(-1, 1)``.

Bottleneck: ``feat`` is ``quant_conv(encoder(x)['out'])`` (B, 256, 16, 16), ``z`` its nearest-neighbour
quantisation; the decoder gets ``post_quant_conv(z)`` and cross-attends to the encoder features
``ctx['hs']``.
"""
from __future__ import annotations

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from spandrel.architectures.RestoreFormer import RestoreFormer
from spandrel.architectures.RestoreFormer.__arch.restoreformer_arch import (
    MultiHeadAttnBlock,
    MultiHeadDecoderTransformer,
    ResnetBlock,
    Upsample,
)

from iqp_plugin.adapters.base import Bottleneck, HostAdapter, register_adapter

ARCH_REGISTRY.register(RestoreFormer)


class MultiScaleDecoder(MultiHeadDecoderTransformer):
    """RestoreFormer++ decoder: a level without ``block_<i>_atten`` in ``hs`` attends to ``block_<i>``."""

    def forward(self, z, hs):
        fallback = {f"{key}_atten": value for key, value in hs.items() if key.startswith("block_")}
        return super().forward(z, {**fallback, **hs})


@ARCH_REGISTRY.register()
class RestoreFormerPP(RestoreFormer):
    """RestoreFormer++: RestoreFormer's arguments (same defaults) except ``head_size=4``, plus
    ``ex_multi_scale_num`` (1), the number of extra decoder scales with cross-attention."""

    def __init__(self, *, head_size=4, ex_multi_scale_num=1, **kwargs):
        super().__init__(head_size=head_size, **kwargs)
        hp = self.hyperparameters
        attn_resolutions = list(hp["attn_resolutions"])
        for _ in range(ex_multi_scale_num):  # the official rule: [16] -> [16, 32] -> [16, 64] ...
            attn_resolutions = [attn_resolutions[0], attn_resolutions[-1] * 2]
        self.decoder = MultiScaleDecoder(
            ch=hp["ch"], out_ch=hp["out_ch"], ch_mult=hp["ch_mult"], num_res_blocks=hp["num_res_blocks"],
            attn_resolutions=attn_resolutions, dropout=hp["dropout"], in_channels=hp["in_channels"],
            resolution=hp["resolution"], z_channels=hp["z_channels"], enable_mid=hp["enable_mid"],
            head_size=head_size)
        self.decoder.requires_grad_(not hp["fix_decoder"])
        if hp["fix_encoder"]:  # the official ++ code also freezes quant_conv
            self.quant_conv.requires_grad_(False)
        self.hyperparameters = {**hp, "ex_multi_scale_num": ex_multi_scale_num}


@register_adapter
class RestoreFormerAdapter(HostAdapter):
    """RestoreFormer / RestoreFormer++ split at the quantiser. The hosts take no extra kwargs."""

    name = "restoreformer"
    host_types = ("RestoreFormer", "RestoreFormerPP")
    #: spandrel builds the registered ``RestoreFormer`` itself, assuming the official layout (attention at 16 px
    #: of a 512 px input) and ``head_size`` 8; it takes RestoreFormer++ files for RestoreFormer and cannot
    #: rebuild them (configure ``RestoreFormerPP`` by hand)
    spandrel_ids = ("RestoreFormer",)
    image_range = (-1.0, 1.0)
    default_recipe = "lean"  # a codebook face host: the lean plug-in (no benchmark row yet)

    @property
    def input_size(self) -> int:
        """The aligned face size the host was built for (``resolution``, 512 for the official models)."""
        return self.host.hyperparameters["resolution"]

    @property
    def channels(self) -> int:
        """Channels of the code grid (``embed_dim``, 256)."""
        return self.host.quantize.embedding.embedding_dim

    def encode(self, x: torch.Tensor) -> Bottleneck:
        """Encoder features ``hs`` (kept in ``ctx``), ``quant_conv`` and the host's quantiser."""
        hs = self.host.encoder(x)
        h = self.host.quant_conv(hs["out"])
        return Bottleneck(feat=h, z=self.host.quantize(h)[0], ctx={"hs": hs})

    def decode(self, b: Bottleneck) -> torch.Tensor:
        """``post_quant_conv`` and the decoder, cross-attending to the encoder features."""
        return self.host.decoder(self.host.post_quant_conv(b.z), b.ctx["hs"])

    def codebook(self) -> torch.Tensor:
        """The host's (n_embed, embed_dim) codebook, in ``feat`` space."""
        return self.host.quantize.embedding.weight

    def decoder_blocks(self) -> list[torch.nn.Module]:
        """The decoder's residual, cross-attention and upsampling blocks."""
        return [m for m in self.host.decoder.modules() if isinstance(m, (ResnetBlock, MultiHeadAttnBlock, Upsample))]
