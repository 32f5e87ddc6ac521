"""vf-backends-diffusion's declarations beyond the shared contract: coverage, self- and cross-attention in the
UNet, joint and single-stream blocks, unknown families and the nox matrix."""

from __future__ import annotations


import pytest

from vf_core import UnknownFamilyError, VectorFitConfig, get_vectorfit_model
from vf_core.plugins import list_families
from vf_core.targets import identify_family
from vf_backends_diffusion.families import FAMILIES

diffusers = pytest.importorskip("diffusers")

REQUIRED = {"unet2d-condition", "transformer2d", "dit", "sd3", "flux"}


def test_required_families_are_registered():
    registered = {name for name, f in list_families().items() if f.backend == "diffusion"}
    assert REQUIRED <= registered, f"missing: {sorted(REQUIRED - registered)}"
    assert registered == {f.name for f in FAMILIES}


def _modules_by_role(vf, layer):
    out: dict = {}
    for vec in vf.vectors.select(kind="sigma", layer=layer):
        out.setdefault(vec.role, []).append(vec.module.split(".transformer_blocks.0.", 1)[-1])
    return {role: sorted(mods) for role, mods in out.items()}


def test_unet_targets_self_and_cross_attention_and_geglu_feed_forward():
    vf = get_vectorfit_model(list_families()["unet2d-condition"].tiny_model(), VectorFitConfig())
    assert _modules_by_role(vf, 0) == {
        "q": ["attn1.to_q", "attn2.to_q"], "k": ["attn1.to_k", "attn2.to_k"], "v": ["attn1.to_v", "attn2.to_v"],
        "o": ["attn1.to_out.0", "attn2.to_out.0"], "f1": ["ff.net.0.proj"], "f2": ["ff.net.2"]}
    names = list(vf.decomposed_layers())
    assert not any(".resnets." in n or "proj_in" in n or "proj_out" in n or "time_emb" in n for n in names)


def test_flux_single_stream_blocks_have_q_k_v_f1_f2():
    vf = get_vectorfit_model(list_families()["flux"].tiny_model(), VectorFitConfig())
    single = [v for v in vf.vectors.select(kind="sigma") if v.module.startswith("single_transformer_blocks.0.")]
    assert sorted((v.role, v.module.rsplit(".", 1)[-1]) for v in single) == [
        ("f1", "proj_mlp"), ("f2", "proj_out"), ("k", "to_k"), ("q", "to_q"), ("v", "to_v")]


def test_sd3_joint_block_targets_both_streams():
    vf = get_vectorfit_model(list_families()["sd3"].tiny_model(), VectorFitConfig())
    roles = {v.module.split(".", 2)[-1]: v.role for v in vf.vectors.select(kind="sigma", layer=0)}
    assert roles["attn.add_q_proj"] == "q" and roles["attn.to_add_out"] == "o"
    assert roles["ff_context.net.0.proj"] == "f1" and roles["ff_context.net.2"] == "f2"


def test_unknown_family_raises_a_clear_error():
    model = diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                                  block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                  up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4)
    assert identify_family(model) is None
    with pytest.raises(UnknownFamilyError) as info:
        get_vectorfit_model(model, VectorFitConfig())
    message = str(info.value)
    assert "UNet2DModel" in message and "target_modules" in message and "unet2d-condition" in message
    vf = get_vectorfit_model(model, VectorFitConfig(target_modules={"q": ["to_q"], "k": ["to_k"], "v": ["to_v"]}))
    assert {v.role for v in vf.vectors} == {"q", "k", "v"}
