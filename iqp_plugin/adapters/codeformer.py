"""CodeFormer (sczhou/CodeFormer, 512x512 faces, images in [-1, 1]) as a BasicSR arch, and its adapter.

The arch is spandrel-extra-arches' re-implementation (official parameter names, bit-identical output)
with the official constructor, registered in BasicSR's ``ARCH_REGISTRY`` as ``CodeFormer``.

Bottleneck: ``feat`` is ``lq_feat``, the encoder's (B, 256, 16, 16) output; ``z`` is ``quant_feat``, the
codebook entries the host's Transformer picks for it, before AdaIN. The decoder applies AdaIN of ``z``
to ``lq_feat`` (``adain=True``) and fuses the encoder skips with fidelity weight ``w`` when ``w > 0``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from spandrel_extra_arches.architectures.CodeFormer import CodeFormer as SpandrelCodeFormer
from spandrel_extra_arches.architectures.CodeFormer.__arch.codeformer import (
    AttnBlock,
    ResBlock,
    Upsample,
    adaptive_instance_normalization,
)

from iqp_plugin.adapters.base import Bottleneck, HostAdapter, rebuilt, register_adapter
from iqp_plugin.errors import InvalidInputError

#: submodules of a CodeFormer that its VQGAN checkpoint (``vqgan_path``) holds
VQGAN_MODULES = ("encoder", "quantize", "generator")


@ARCH_REGISTRY.register()
class CodeFormer(SpandrelCodeFormer):
    """CodeFormer with the official constructor. ``forward(x, weight=0.5)`` returns ``(image, logits)``.

    ``vqgan_path``: a stage-1 VQGAN checkpoint whose ``params_ema`` is loaded into the encoder,
    codebook and generator (strictly, as the official code does; read with ``weights_only=True``).
    """

    def __init__(self, dim_embd=512, n_head=8, n_layers=9, codebook_size=1024, latent_size=256,
                 connect_list=("32", "64", "128", "256"), fix_modules=("quantize", "generator"), vqgan_path=None):
        super().__init__(dim_embd=dim_embd, n_head=n_head, n_layers=n_layers, codebook_size=codebook_size,
                         latent_size=latent_size, connect_list=list(connect_list),
                         fix_modules=None if fix_modules is None else list(fix_modules))
        if vqgan_path is not None:
            state = torch.load(vqgan_path, map_location="cpu", weights_only=True)["params_ema"]
            missing, unexpected = self.load_state_dict(state, strict=False)
            missing = [k for k in missing if k.split(".")[0] in VQGAN_MODULES]
            if missing or unexpected:
                raise RuntimeError(f"{vqgan_path} is not a CodeFormer VQGAN checkpoint: missing keys {missing[:8]}, "
                                   f"unexpected keys {unexpected[:8]}")

    def forward(self, x, weight=0.5, w=None, **kwargs):
        """Restore ``x`` with fidelity ``weight``; ``w`` is the official name for it and wins when given."""
        return super().forward(x, weight=weight if w is None else w, **kwargs)


@register_adapter
class CodeFormerAdapter(HostAdapter):
    """CodeFormer split at its 16x16 code grid. Host kwargs: ``w`` (alias ``weight``) and ``adain``."""

    name = "codeformer"
    host_types = ("CodeFormer",)
    spandrel_ids = ("CodeFormer",)
    image_range = (-1.0, 1.0)
    host_args = {"w": "CodeFormer's fidelity weight"}
    input_size = 512
    default_recipe = "lean"  # a codebook face host: the lean plug-in (no benchmark row yet)

    @classmethod
    def from_descriptor(cls, descriptor, **opt) -> CodeFormerAdapter:
        """The registered :class:`CodeFormer` with the hyper-parameters spandrel read (all but ``n_head``,
        which no tensor shape shows: spandrel assumes the official 8)."""
        return cls(rebuilt(CodeFormer, descriptor, **descriptor.model.hyperparameters), **opt)

    @property
    def channels(self) -> int:
        """Channels of the code grid (256)."""
        return self.host.quantize.embedding.embedding_dim

    def encode(self, x: torch.Tensor, w: float = 0.5, adain: bool = True, weight: float | None = None) -> Bottleneck:
        """Encoder with skips (``ctx['skips']``), Transformer and codebook look-up, as the host's forward.

        ``ctx`` also holds ``lq_feat`` and the Transformer's ``logits`` (B, h*w, K).
        """
        if tuple(x.shape[-2:]) != (self.input_size,) * 2:
            raise InvalidInputError(f"CodeFormer takes {self.input_size}x{self.input_size} inputs "
                                    f"(its code grid is fixed), got {tuple(x.shape[-2:])}")
        host = self.host
        skip_at = [host.fuse_encoder_block[size] for size in host.connect_list]
        skips = {}
        for i, block in enumerate(host.encoder.blocks):
            x = block(x)
            if i in skip_at:
                skips[str(x.shape[-1])] = x
        lq_feat = x
        n, c, height, width = lq_feat.shape
        pos_emb = host.position_emb.unsqueeze(1).repeat(1, n, 1)
        query = host.feat_emb(lq_feat.flatten(2).permute(2, 0, 1))
        for layer in host.ft_layers:
            query = layer(query, query_pos=pos_emb)
        logits = host.idx_pred_layer(query).permute(1, 0, 2)
        _, top_idx = torch.topk(F.softmax(logits, dim=2), 1, dim=2)
        quant_feat = host.quantize.get_codebook_feat(top_idx, shape=[n, height, width, c]).detach()
        return Bottleneck(feat=lq_feat, z=quant_feat, ctx={"skips": skips, "lq_feat": lq_feat, "logits": logits})

    def decode(self, b: Bottleneck, w: float = 0.5, adain: bool = True, weight: float | None = None) -> torch.Tensor:
        """AdaIN of ``z`` to ``lq_feat`` (if ``adain``), then the generator with skip fusion (if ``w > 0``)."""
        w = w if weight is None else weight
        host = self.host
        x = adaptive_instance_normalization(b.z, b.ctx["lq_feat"]) if adain else b.z
        fuse_at = [host.fuse_generator_block[size] for size in host.connect_list]
        for i, block in enumerate(host.generator.blocks):
            x = block(x)
            if i in fuse_at and w > 0:
                size = str(x.shape[-1])
                x = host.fuse_convs_dict[size](b.ctx["skips"][size].detach(), x, w)
        return x

    def codebook(self) -> torch.Tensor:
        """The host's (1024, 256) codebook, in ``lq_feat`` space."""
        return self.host.quantize.embedding.weight

    def decoder_blocks(self) -> list[torch.nn.Module]:
        """The generator's residual, attention and upsampling blocks, and the skip-fusion blocks."""
        blocks = [b for b in self.host.generator.blocks if isinstance(b, (ResBlock, AttnBlock, Upsample))]
        return [*blocks, *self.host.fuse_convs_dict.values()]
