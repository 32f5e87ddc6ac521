"""vf-backends-diffusion's declarations beyond the shared contract: coverage, self- and cross-attention in the
UNet, the DDPM UNet's ResNet and attention blocks, joint and single-stream blocks, unknown families and the nox
matrix."""

from __future__ import annotations


import pytest

from vf_core import UnknownFamilyError, VectorFitConfig, get_vectorfit_model
from vf_core.plugins import list_families
from vf_core.targets import identify_family
from vf_core.testing import block_of
from vf_backends_diffusion.families import FAMILIES

diffusers = pytest.importorskip("diffusers")

REQUIRED = {"unet2d-condition", "unet2d", "transformer2d", "dit", "sd3", "flux"}


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


def _roles_by_block(vf) -> dict[str, dict[str, str]]:
    """block prefix -> {module path relative to the block: role}, in model order."""
    family = vf.family
    out: dict[str, dict[str, str]] = {}
    for vec in vf.vectors.select(kind="sigma"):
        prefix = block_of(family, vec.module)
        out.setdefault(prefix, {})[vec.module[len(prefix) + 1:]] = vec.role
    return out


RESNET = {"conv1": "f1", "conv2": "f2"}
ATTENTION = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "o"}


def test_unet2d_resnet_blocks_play_f1_f2_and_attention_blocks_q_k_v_o():
    vf = get_vectorfit_model(list_families()["unet2d"].tiny_model(), VectorFitConfig())
    assert vf.family.name == "unet2d"
    blocks = _roles_by_block(vf)
    assert blocks == {
        "down_blocks.0.resnets.0": RESNET,
        "down_blocks.1.attentions.0": ATTENTION, "down_blocks.1.resnets.0": RESNET,
        "up_blocks.0.attentions.0": ATTENTION, "up_blocks.0.attentions.1": ATTENTION,
        "up_blocks.0.resnets.0": RESNET, "up_blocks.0.resnets.1": RESNET,
        "up_blocks.1.resnets.0": RESNET, "up_blocks.1.resnets.1": RESNET,
        "mid_block.attentions.0": ATTENTION, "mid_block.resnets.0": RESNET, "mid_block.resnets.1": RESNET}
    assert [v.layer for v in vf.vectors.select(kind="sigma", role="f1")][:2] == [0, 2]  # numbered in model order
    left_out = ("time_emb_proj", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "conv_in",
                "conv_out", "time_embedding", "class_embedding")
    assert not [n for n in vf.decomposed_layers() if any(part in n for part in left_out)]


def test_unet2d_without_attention_trains_its_resnet_blocks():
    from vf_backends_diffusion.testing import tiny_unet2d

    vf = get_vectorfit_model(tiny_unet2d(class_conditional=False, attention=False), VectorFitConfig())
    assert vf.family.name == "unet2d"
    assert {v.role for v in vf.vectors.select(kind="sigma")} == {"f1", "f2"}
    assert all(roles == RESNET for roles in _roles_by_block(vf).values())
    assert len(_roles_by_block(vf)) == 8  # down 1 + 1, up 2 + 2 (one more than down), mid 2


def test_unet2d_resnet_samplers_are_resnet_blocks():
    model = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                  block_out_channels=(8, 16), down_block_types=("AttnDownBlock2D",) * 2,
                                  up_block_types=("AttnUpBlock2D",) * 2, norm_num_groups=4, attention_head_dim=4,
                                  downsample_type="resnet", upsample_type="resnet")  # only Attn*Block2D take them
    blocks = _roles_by_block(get_vectorfit_model(model, VectorFitConfig()))
    assert blocks["down_blocks.0.downsamplers.0"] == RESNET and blocks["up_blocks.0.upsamplers.0"] == RESNET


def test_unknown_family_raises_a_clear_error():
    # no family declares the VAE; without its mid-block attention it has no attention or MLP to infer roles from
    model = diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                                    down_block_types=("DownEncoderBlock2D",) * 2,
                                    up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4,
                                    mid_block_add_attention=False)
    assert identify_family(model) is None
    with pytest.raises(UnknownFamilyError) as info:
        get_vectorfit_model(model, VectorFitConfig())
    message = str(info.value)
    assert "AutoencoderKL" in message and "target_modules" in message and "unet2d-condition" in message
    vf = get_vectorfit_model(model, VectorFitConfig(target_modules={"f1": ["conv1"], "f2": ["conv2"]}))
    assert {v.role for v in vf.vectors} == {"f1", "f2"}


def test_undeclared_model_with_attention_gets_inferred_roles():
    """The VAE's mid-block attention (to_q, to_k, to_v, to_out.0) is recognised without a family."""
    model = diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                                    down_block_types=("DownEncoderBlock2D",) * 2,
                                    up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4)
    vf = get_vectorfit_model(model, VectorFitConfig())
    assert vf.family.origin == "inferred" and {v.role for v in vf.vectors} == {"q", "k", "v", "o"}


@pytest.mark.parametrize("config", [
    {"class_embed_type": "timestep"},
    {"class_embed_type": "identity"},
    {"time_embedding_type": "learned", "num_train_timesteps": 50, "sample_size": (8, 4)},
], ids=["timestep-labels", "identity-labels", "learned-time-rectangular"])
def test_unet2d_example_input_fits_its_conditioning(config):
    family = list_families()["unet2d"]
    model = diffusers.UNet2DModel(**{
        "sample_size": 8, "in_channels": 1, "out_channels": 1, "layers_per_block": 1, "block_out_channels": (8, 16),
        "down_block_types": ("DownBlock2D",) * 2, "up_block_types": ("UpBlock2D",) * 2, "norm_num_groups": 4,
        "add_attention": False, **config}).eval()
    args, kwargs = family.example_input(model)
    assert ("class_labels" in kwargs) == ("class_embed_type" in config)
    assert model(*args, **kwargs).sample.shape == kwargs["sample"].shape
    assert get_vectorfit_model(model, VectorFitConfig()).family.name == "unet2d"
