"""The shared family contract (vf_core.testing) for every family vf-backends-diffusion declares."""

from vf_core.testing import FamilyContract


class TestDiffusionFamilies(FamilyContract):
    backend = "diffusion"
    # Flux's single-stream blocks project the concatenated attention and MLP outputs with one proj_out (f2):
    # they have no separate attention output projection (o). The DDPM UNet (unet2d) has two kinds of blocks: ResNet
    # blocks (conv1, conv2: f1, f2 only) and attention blocks (q, k, v, o only).
    partial_blocks = {
        "flux": {r"(?:.*\.)?single_transformer_blocks\.\d+": ("o",)},
        "unet2d": {r".*\.(?:resnets\.\d+|(?:down|up)samplers\.\d+|resnet_(?:down|up))": ("q", "k", "v", "o"),
                   r".*\.attentions\.\d+": ("f1", "f2")},
    }
    # SD3's last block (context_pre_only) computes text queries whose attention output it discards: add_q_proj
    # gets a zero gradient there.
    zero_grad_ok = {"sd3": r".*\.attn\.add_q_proj\.(sigma|bias)"}
