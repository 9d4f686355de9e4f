"""``IQPModel``: BasicSR model that fine-tunes only the IQP plug-in of an ``IQPWrapper``, in three stages.

    model_type: IQPModel
    stage: codebook | predictor | quality
    network_g: {type: IQPWrapper, host: {...}, host_checkpoint: ..., plugin: {...}}
    path: {pretrain_network_g: <plug-in file of the previous stage>}
    train:
      hq_threshold: 0.8          # stage 1: HQ codebook from targets scoring at or above this ...
      hq_top_percent: 20         # ... or from the top q% of the score CSV (dataset option score_csv)
      ce_common_weight: 0.5      # stage 2/3: cross-entropy on both index predictions
      ce_hq_weight: 0.5
      feat_weight: 1.0           # MSE between predicted codes and the GT's codes
      pixel_opt: {type: L1Loss, loss_weight: 0.1}   # optional, on the decoded image
      quality_opt: {type: QualityLoss, metrics: [niqe], loss_weight: 0.15}   # stage 3
      quality_mode: discrete     # or 'continuous' (the over-optimisation ablation)
      quality_trains: predictor  # stage 3 trains the code prediction only; 'plugin': W_o too (ablation)
      ema_decay: 0.995

1. ``codebook``: GT images go through the frozen host encoder; their features on the code grid update the
   common codebook (all targets) and the HQ codebook (targets with score >= threshold only) by EMA
   k-means. The HQ branch learns the residual ``t - common[nearest(t)]`` so that ``common + hq``
   reconstructs HQ features. No optimiser.
2. ``predictor``: LQ images, conditioned on their target's score, train the Transformer to predict
   the GT's code indices in both codebooks (cross-entropy) and their code features (MSE). Without
   ``datasets:train:score_csv`` every target gets the plug-in's default score, with a warning.
3. ``quality``: stage 2's losses plus ``QualityLoss`` on the image decoded from the predicted codes
   at the inference target score; straight-through over the code choice ('discrete'), or with the
   plug-in output left unquantised ('continuous'). The injection ``W_o`` that turns codes into the host's
   features stays as stage 2 left it (``quality_trains: predictor``), as the paper's decoder does, so the
   NR-IQA loss can move the output only between codes; ``quality_trains: plugin`` trains ``W_o`` too, and
   the loss can then write a pattern of its own through it (benchmarks/RESULTS.md).

The host never enters an optimiser and stays in eval mode. Checkpoints (``net_g_<iter>.pth``) hold the
plug-in only, in the format of :mod:`iqp_plugin.io.plugin_checkpoint`.
"""
from __future__ import annotations

import copy
import os
import warnings
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models.base_model import BaseModel
from basicsr.utils import get_root_logger, tensor2img
from basicsr.utils.registry import MODEL_REGISTRY
from tqdm import tqdm

from iqp_plugin.errors import CheckpointError, InvalidInputError
from iqp_plugin.io import plugin_checkpoint
from iqp_plugin.io.plugin_checkpoint import PluginCheckpoint, host_record
from iqp_plugin.models import training
from iqp_plugin.prior.score_files import load_scores
from iqp_plugin.report.metrics import full_reference

STAGES = ("codebook", "predictor", "quality")


def _all_gather(x: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def hq_threshold(train_opt: dict, score_csv: str | None) -> float:
    """The score at or above which a target feeds the HQ codebook (absolute or top-q% of the CSV)."""
    if train_opt.get("hq_top_percent") is not None:
        if not score_csv:
            raise InvalidInputError("train:hq_top_percent needs datasets:train:score_csv to take the quantile from.")
        scores = np.array(list(load_scores(score_csv).values()), dtype=np.float64)
        return float(np.quantile(scores, 1 - float(train_opt["hq_top_percent"]) / 100))
    if train_opt.get("hq_threshold") is None:
        raise InvalidInputError("stage codebook needs train:hq_threshold (e.g. 0.8) or train:hq_top_percent (e.g. 20).")
    return float(train_opt["hq_threshold"])


@MODEL_REGISTRY.register()
class IQPModel(BaseModel):
    """Plug-in-only training of an IQPWrapper (see the module docstring for the stages)."""

    def __init__(self, opt: dict):
        super().__init__(opt)
        self.stage = opt.get("stage")
        if self.stage not in STAGES:
            raise InvalidInputError(f"IQPModel needs stage: one of {', '.join(STAGES)} (got {self.stage!r}).")
        self.net_g = build_network(opt["network_g"]).to(self.device)
        if type(self.net_g).__name__ != "IQPWrapper" or self.net_g.plugin is None:
            raise InvalidInputError("IQPModel trains the plug-in of network_g: type: IQPWrapper "
                                    "with a plugin: {...} entry.")
        self.plugin = self.net_g.plugin
        self.plugin_ema = copy.deepcopy(self.plugin).requires_grad_(False).eval()
        self.print_network(self.net_g)
        load_path = opt["path"].get("pretrain_network_g")
        if load_path:
            self.load_plugin(load_path, opt["path"].get("param_key_g", "params"))
        self.skipped_steps = 0
        if self.is_train:
            self.init_training_settings()

    # ---------------------------------------------------------------- setup
    def init_training_settings(self) -> None:
        train_opt = self.opt["train"]
        self.net_g.train()
        self.plugin.mode = "continuous" if train_opt.get("quality_mode") == "continuous" else "straight_through"
        self.plugin_ema.mode = self.plugin.mode  # validation decodes as the run trains
        self.ema_decay = train_opt.get("ema_decay", 0.995)
        self.log_dict = OrderedDict()
        if self.stage == "codebook":
            self.threshold = hq_threshold(train_opt, self.opt["datasets"]["train"].get("score_csv"))
            get_root_logger().info(f"HQ codebook threshold: score >= {self.threshold:.4f}")
            return
        if not self.opt["datasets"].get("train", {}).get("score_csv"):
            message = (f"stage {self.stage} without datasets:train:score_csv: every target is conditioned on the "
                       f"plug-in's default score ({self.plugin.cfg['target_score']}), so the score learns no meaning; "
                       "set it to the CSV that `iqp score` writes")
            warnings.warn(message, stacklevel=2)
            get_root_logger().warning(message)
        self.pixel_loss = build_loss(train_opt["pixel_opt"]).to(self.device) if train_opt.get("pixel_opt") else None
        self.quality_loss = None
        if self.stage == "quality":
            if not train_opt.get("quality_opt"):
                raise InvalidInputError("stage quality needs train:quality_opt "
                                        "(e.g. {type: QualityLoss, metrics: [niqe]}).")
            q_opt = {"image_range": list(self.net_g.adapter.image_range), **train_opt["quality_opt"]}
            self.quality_loss = build_loss(q_opt).to(self.device)
            trains = train_opt.get("quality_trains", "predictor")
            if trains not in ("predictor", "plugin"):
                raise InvalidInputError(f"train:quality_trains must be 'predictor' (the code choice only) or 'plugin' "
                                 f"(the injection too), got {trains!r}.")
            if trains == "predictor":
                self.plugin.freeze_injection()
        optim = dict(train_opt["optim_g"])
        optim_type = optim.pop("type")
        params = [p for p in self.plugin.parameters() if p.requires_grad]
        self.optimizer_g = self.get_optimizer(optim_type, params, **optim)
        self.optimizers.append(self.optimizer_g)
        self.setup_schedulers()

    def model_to_device(self, net):
        """No DDP: only the plug-in trains, its gradients are averaged by hand (see ``_sync_grads``)."""
        return net.to(self.device)

    # ---------------------------------------------------------------- training
    def feed_data(self, data: dict) -> None:
        self.lq = data["lq"].to(self.device)
        self.gt = data["gt"].to(self.device) if "gt" in data else None
        self.score = data["score"].to(self.device) if "score" in data else None

    def _gt_features(self) -> torch.Tensor:
        """Host-encoder features of the clean targets on the plug-in's code grid, (B, N, C) (pooled to tokens, or
        per pixel with ``codes: pixel``): the GT itself for hosts whose
        input and output sizes agree, the GT downscaled to the LQ size (no degradation) for SR hosts."""
        gt = self.gt
        if gt.shape[-2:] != self.lq.shape[-2:]:
            gt = F.interpolate(gt, size=self.lq.shape[-2:], mode="bicubic", antialias=True, align_corners=False)
        with torch.no_grad():
            return self.plugin.code_features(self.net_g.adapter.features(gt))

    def optimize_parameters(self, current_iter: int) -> None:
        if self.stage == "codebook":
            self._update_codebooks()
        else:
            self._gradient_step()

    def _update_codebooks(self) -> None:
        if self.score is None:
            raise InvalidInputError("stage codebook needs scores: set datasets:train:score_csv (made by `iqp score`).")
        feats, score = self._gt_features(), self.score
        if self.opt.get("dist"):  # every rank updates the codebooks with the whole global batch
            feats, score = _all_gather(feats), _all_gather(score)
        selected = score >= self.threshold
        logs = self.plugin.codebook.update(feats.flatten(0, 1), feats[selected].flatten(0, 1))
        logs["hq_fraction"] = float(selected.float().mean())
        self.log_dict = OrderedDict(logs)
        self.plugin_ema.load_state_dict(self.plugin.state_dict())

    def _gradient_step(self) -> None:
        self.optimizer_g.zero_grad(set_to_none=True)
        losses = self.losses()
        total = sum(losses.values())
        if not torch.isfinite(total):
            self._skip_step("loss", losses)
            return
        total.backward()
        self._sync_grads()
        grads = [p.grad for p in self.plugin.parameters() if p.grad is not None]
        if not all(torch.isfinite(g).all() for g in grads):
            self._skip_step("gradient", losses)
            return
        self.optimizer_g.step()
        self.model_ema(self.ema_decay)
        self.log_dict = self.reduce_loss_dict(losses)

    def losses(self) -> OrderedDict:
        """The stage's losses for the current batch (the quality stage adds the NR-IQA loss)."""
        train_opt = self.opt["train"]
        feats = self._gt_features()
        idx_c, idx_h, target_codes = self.plugin.codebook.targets(feats.flatten(0, 1))
        out, aux = self.net_g.restore(self.lq, score=self.score)
        losses = OrderedDict()
        losses["l_ce_common"] = (train_opt.get("ce_common_weight", 0.5)
                                 * F.cross_entropy(aux.logits_common.flatten(0, 1), idx_c))
        losses["l_ce_hq"] = train_opt.get("ce_hq_weight", 0.5) * F.cross_entropy(aux.logits_hq.flatten(0, 1), idx_h)
        losses["l_feat"] = train_opt.get("feat_weight", 1.0) * F.mse_loss(aux.codes.flatten(0, 1), target_codes)
        if self.pixel_loss is not None:
            losses["l_pix"] = self.pixel_loss(out, self.gt)
        if self.quality_loss is not None:
            target_out = self.net_g(self.lq, score=None)  # the plug-in's inference target score
            losses["l_quality"] = self.quality_loss(target_out)
        return losses

    def _skip_step(self, what: str, losses: dict) -> None:
        self.skipped_steps += 1
        values = {k: float(v.detach()) for k, v in losses.items()}
        warnings.warn(f"non-finite {what} {values}: step skipped, weights unchanged ({self.skipped_steps} so far)",
                      stacklevel=2)
        get_root_logger().warning(f"Skipped a step with a non-finite {what}: {values}")
        self.optimizer_g.zero_grad(set_to_none=True)
        self.log_dict = OrderedDict(skipped_steps=float(self.skipped_steps))

    def _sync_grads(self) -> None:
        if not self.opt.get("dist"):
            return
        world = torch.distributed.get_world_size()
        for p in self.plugin.parameters():
            if p.requires_grad:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                torch.distributed.all_reduce(p.grad)
                p.grad /= world

    def model_ema(self, decay: float = 0.995) -> None:
        ema = dict(self.plugin_ema.named_parameters())
        for name, param in self.plugin.named_parameters():
            if param.requires_grad:  # a frozen part keeps its own average (see quality_trains)
                ema[name].data.mul_(decay).add_(param.data, alpha=1 - decay)
        for (_name, buf), ema_buf in zip(self.plugin.named_buffers(), self.plugin_ema.buffers(), strict=False):
            ema_buf.copy_(buf)

    def get_current_learning_rate(self) -> list[float]:
        return [g["lr"] for g in self.optimizers[0].param_groups] if self.optimizers else [0.0]

    def setup_schedulers(self) -> None:
        if self.opt["train"].get("scheduler"):
            super().setup_schedulers()

    # ---------------------------------------------------------------- checkpoints
    def save(self, epoch: int, current_iter: int) -> None:
        """Write ``models/net_g_<iter>.pth`` with the plug-in only, atomically, then the training state; a file that
        cannot be written stops the run (:func:`iqp_plugin.models.training.write_checkpoint`)."""
        if self.opt["rank"] == 0:
            label = "latest" if current_iter == -1 else current_iter
            path = os.path.join(self.opt["path"]["models"], f"net_g_{label}.pth")
            ckpt = PluginCheckpoint(
                params=self.plugin.state_dict(), params_ema=self.plugin_ema.state_dict(), stage=self.stage,
                plugin_opt=self._plugin_options(),
                host=host_record(self.opt["network_g"]["host"], self.net_g.host_checkpoint))
            training.write_checkpoint(lambda: plugin_checkpoint.write(path, ckpt), path)
        self.save_training_state(epoch, current_iter)

    def _plugin_options(self) -> dict:
        return {"preset": self.plugin.cfg["preset"], **(self.opt["network_g"].get("plugin") or {})}

    def load_plugin(self, path: str, param_key: str = "params") -> None:
        """Load a plug-in checkpoint written by :meth:`save` (``params`` or ``params_ema``); one that does not fit the
        plug-in raises :class:`CheckpointError` naming the file and the options that changed."""
        ckpt = plugin_checkpoint.read(path)
        weights = ckpt.params_ema if param_key == "params_ema" and ckpt.params_ema else ckpt.params
        try:
            self.plugin.load_state_dict(weights, strict=True)
            self.plugin_ema.load_state_dict(ckpt.params_ema or weights, strict=True)
        except RuntimeError as err:
            diff = training.state_mismatch(self.plugin.state_dict(), weights)
            now = self._plugin_options()
            changed = [k for k in sorted(set(ckpt.plugin_opt) | set(now)) if ckpt.plugin_opt.get(k) != now.get(k)]
            saved = ", ".join(f"{k}: {ckpt.plugin_opt.get(k, 'default')!r} (now {now.get(k, 'default')!r})"
                              for k in changed)
            raise CheckpointError(f"{path} does not fit network_g:plugin: {diff}" + (f"; it was saved with {saved}"
                                  if saved else "") + f". {training.mismatch_fix(self.opt)}.", reason=diff) from err
        get_root_logger().info(f"Loaded plug-in [{param_key}] from {path} (stage {ckpt.stage}).")

    # ---------------------------------------------------------------- validation
    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img=False):
        """Host alone vs host + plug-in (EMA weights) on the validation set: PSNR, SSIM, sharpness ratio and NR
        metrics."""
        from iqp_plugin.prior.metrics import create_prior

        val_opt = self.opt["val"]
        nr = create_prior(val_opt.get("nr_metrics", ["niqe"])).create_metrics(self.device)
        lo, hi = self.net_g.adapter.image_range
        live = self.net_g.plugin
        self.net_g.plugin = self.plugin_ema
        sums: dict[str, list[float]] = {}
        try:
            for data in tqdm(dataloader, desc="validation", unit="img", leave=False):
                self.feed_data(data)
                with torch.no_grad():
                    outputs = {"host": self.net_g.adapter.run(self.lq), "iqp": self.net_g(self.lq)}
                for name, out in outputs.items():
                    out01 = ((out - lo) / (hi - lo)).clamp(0, 1)
                    for metric, module in nr.items():
                        sums.setdefault(f"{name}_{metric}", []).append(float(module(out01).mean()))
                    if self.gt is not None:
                        img = tensor2img(out, rgb2bgr=False, min_max=(lo, hi))
                        gt = tensor2img(self.gt, rgb2bgr=False, min_max=(lo, hi))
                        for metric, value in full_reference(img, gt).items():  # PSNR, SSIM, sharpness ratio
                            sums.setdefault(f"{name}_{metric}", []).append(value)
        finally:
            self.net_g.plugin = live
        means = {k: float(np.mean(v)) for k, v in sums.items()}
        name = dataloader.dataset.opt["name"]
        get_root_logger().info(f"Validation {name} @ {current_iter}: "
                               + ", ".join(f"{k}: {v:.4f}" for k, v in means.items()))
        if tb_logger:
            for k, v in means.items():
                tb_logger.add_scalar(f"metrics/{name}/{k}", v, current_iter)
        self.val_results = means

    def dist_validation(self, dataloader, current_iter, tb_logger, save_img=False):
        if self.opt["rank"] == 0:
            self.nondist_validation(dataloader, current_iter, tb_logger, save_img)
