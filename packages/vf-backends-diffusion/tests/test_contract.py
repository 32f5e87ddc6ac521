"""The shared family contract (vf_core.testing) for every family vf-backends-diffusion declares."""

from vf_core.testing import FamilyContract


class TestDiffusionFamilies(FamilyContract):
    backend = "diffusion"
    # Flux's single-stream blocks project the concatenated attention and MLP outputs with one proj_out (f2):
    # they have no separate attention output projection (o).
    partial_blocks = {"flux": {r"(?:.*\.)?single_transformer_blocks\.\d+": ("o",)}}
    # SD3's last block (context_pre_only) computes text queries whose attention output it discards: add_q_proj
    # gets a zero gradient there.
    zero_grad_ok = {"sd3": r".*\.attn\.add_q_proj\.(sigma|bias)"}
