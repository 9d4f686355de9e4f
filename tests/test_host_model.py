"""VQHostModel: trains a codebook host (RestoreFormer) with its own codebook loss, which SRModel drops."""
import pytest
import torch

from iqp_plugin.models.vq_host_model import VQHostModel

HOST = dict(type="RestoreFormer", resolution=32, ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[16],
            head_size=2, n_embed=16, embed_dim=8, z_channels=8, fix_codebook=False)


def options(tmp_path, **network):
    return {"name": "t", "model_type": "VQHostModel", "num_gpu": 0, "is_train": True, "dist": False, "scale": 1,
            "network_g": {**HOST, **network}, "path": {"pretrain_network_g": None, "models": str(tmp_path)},
            "train": {"ema_decay": 0, "optim_g": {"type": "Adam", "lr": 1e-2}, "scheduler": {"type": "MultiStepLR",
                      "milestones": [100], "gamma": 0.5}, "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0},
                      "codebook_weight": 1.0}}


def test_codebook_learns_and_output_is_an_image(tmp_path):
    torch.manual_seed(0)
    model = VQHostModel(options(tmp_path))
    codebook = model.net_g.quantize.embedding.weight
    before = codebook.detach().clone()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    model.feed_data({"lq": x, "gt": x})
    model.optimize_parameters(1)
    assert not torch.equal(codebook.detach(), before)  # SRModel would leave the codebook as initialised
    assert set(model.log_dict) == {"l_pix", "l_codebook"} and model.log_dict["l_codebook"] > 0
    model.test()
    assert model.output.shape == x.shape


def test_a_host_without_encode_is_refused(tmp_path):
    opt = options(tmp_path)
    opt["network_g"] = {"type": "SwinIR", "upscale": 1, "img_size": 16, "window_size": 8, "embed_dim": 12,
                        "depths": [1], "num_heads": [2], "upsampler": "", "in_chans": 3}
    with pytest.raises(ValueError, match="use model_type SRModel"):
        VQHostModel(opt)
