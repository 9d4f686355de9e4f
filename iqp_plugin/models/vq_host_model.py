"""``VQHostModel``: BasicSR model that trains a codebook face host (RestoreFormer, RestoreFormer++) itself.

BasicSR's ``SRModel`` cannot train these hosts: their ``forward`` returns ``(image, None)`` and drops the
vector-quantiser's codebook and commitment loss, without which the codebook never learns. This model
calls the host's own ``encode`` (``quant, codebook_loss, info, hs``) and ``decode(quant, hs)`` and adds
``codebook_weight * codebook_loss`` to the pixel loss. Build the host with ``fix_codebook: false``.

    model_type: VQHostModel
    network_g: {type: RestoreFormer, resolution: 128, ch: 32, ch_mult: [1, 2, 2, 4], fix_codebook: false, ...}
    train:
      pixel_opt: {type: L1Loss, loss_weight: 1.0}
      codebook_weight: 1.0

Everything else (options, EMA, checkpoints, resume, validation) is ``SRModel``'s.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import MODEL_REGISTRY

from iqp_plugin.errors import InvalidInputError


@MODEL_REGISTRY.register()
class VQHostModel(SRModel):
    """SRModel for hosts with ``encode() -> (quant, codebook_loss, info, hs)`` and ``decode(quant, hs)``."""

    def init_training_settings(self):
        net = self.net_g.module if hasattr(self.net_g, "module") else self.net_g
        if not (hasattr(net, "encode") and hasattr(net, "decode")):
            raise InvalidInputError(f"VQHostModel trains codebook hosts with encode/decode (RestoreFormer); "
                             f"{type(net).__name__} has none: use model_type SRModel.")
        self.codebook_weight = float(self.opt["train"].get("codebook_weight", 1.0))
        super().init_training_settings()

    def optimize_parameters(self, current_iter):
        net = self.net_g.module if hasattr(self.net_g, "module") else self.net_g
        self.optimizer_g.zero_grad()
        quant, codebook_loss, _, hs = net.encode(self.lq)
        self.output = net.decode(quant, hs)
        losses = OrderedDict(l_pix=self.cri_pix(self.output, self.gt),
                             l_codebook=self.codebook_weight * codebook_loss)
        sum(losses.values()).backward()
        self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict(losses)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def test(self):
        net = self.net_g_ema if hasattr(self, "net_g_ema") else self.net_g
        net.eval()
        with torch.no_grad():
            self.output = net(self.lq)[0]
        self.net_g.train()
