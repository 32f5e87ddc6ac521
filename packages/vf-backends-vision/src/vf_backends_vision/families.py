"""Architecture families of timm models and the modules that play each role.

timm models have no ``config.model_type``: a family recognises a model by its exact class name or by the
``architecture`` of its ``pretrained_cfg`` (``default_cfg`` on older timm), e.g. ``"deit_small_patch16_224"``.
Roles are given relative to a block (``block_pattern``). Each family builds a tiny random model for the shared
contract tests (:mod:`vf_core.testing`); timm is imported only inside those factories.

Conventions:

- ViT, DeiT, BEiT and Swin fuse ``q, k, v`` in one ``attn.qkv`` linear: it is split per role (three slices of
  equal size), each decomposed on its own. ``attn.proj`` plays ``o``, ``mlp.fc1`` ``f1``, ``mlp.fc2`` ``f2``; a
  gated MLP's input projections all play ``f1`` (SwiGLU's ``fc1_g`` and ``fc1_x``, ViTamin's GeGluMlp ``w0`` and
  ``w1``, whose ``w2`` plays ``f2``).
- ConvNeXt has no attention: only ``f1``/``f2`` (``mlp.fc1``/``mlp.fc2``, linear or 1x1 convolutions).
- EfficientNet / MobileNet inverted-residual blocks: the 1x1 expansion convolution ``conv_pw`` plays ``f1`` and
  the 1x1 projection ``conv_pwl`` plays ``f2`` (a 1x1 convolution is a linear map per pixel). Depthwise
  convolutions have no single matrix and are never targeted.

Example:
    >>> from vf_backends_vision.families import FAMILIES
    >>> [f.name for f in FAMILIES][:3]
    ['timm-deit', 'timm-vit', 'timm-beit']
"""

from __future__ import annotations

from typing import Any, Callable

from vf_core.families import Family, FusedModule

__all__ = ["FAMILIES", "timm_architecture"]


def timm_architecture(model: Any) -> str:
    """The ``architecture`` of a timm model's ``pretrained_cfg`` (or ``default_cfg``), or ``""``."""
    for attr in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, attr, None)
        if isinstance(cfg, dict) and cfg.get("architecture"):
            return str(cfg["architecture"])
        arch = getattr(cfg, "architecture", None)  # timm's PretrainedCfg dataclass
        if arch:
            return str(arch)
    return ""


def _timm(classes: tuple[str, ...], arch_prefixes: tuple[str, ...] = ()) -> Callable[[Any], bool]:
    """A predicate: the model's class is exactly one of ``classes``, or its timm architecture starts with one
    of ``arch_prefixes`` (class names are matched exactly so that, e.g., ``SwinTransformerV2`` is not taken
    for ``SwinTransformer``)."""

    def matches(model: Any) -> bool:
        if type(model).__name__ in classes:
            return True
        arch = timm_architecture(model)
        return bool(arch_prefixes) and arch.startswith(arch_prefixes)

    return matches


def _tiny(name: str, **kwargs):
    """A factory of a seeded, tiny ``timm.create_model(name, pretrained=False, **kwargs)`` in eval mode."""

    def build():
        import timm
        import torch

        torch.manual_seed(0)
        return timm.create_model(name, pretrained=False, **kwargs).eval()

    return build


def _image_input(size: int = 32):
    def make(model):
        import torch

        gen = torch.Generator().manual_seed(0)
        return (torch.randn(2, 3, size, size, generator=gen),), {}

    return make


# the MLP under timm's spellings: Mlp and GluMlp (fc1, fc2), SwiGLU (fc1_g, fc1_x, fc2), GeGluMlp (w0, w1, w2: ViTamin);
# a block holds one of them, and the paths it lacks are skipped
_VIT_ROLES = {"o": ("attn.proj",), "f1": ("mlp.fc1", "mlp.fc1_g", "mlp.fc1_x", "mlp.w0", "mlp.w1"),
              "f2": ("mlp.fc2", "mlp.w2")}
_QKV = {"attn.qkv": FusedModule(("q", "k", "v"))}
_TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=3)

DEIT = Family(
    name="timm-deit",
    backend="vision",
    block_pattern=r"(?:.*\.)?blocks\.\d+",
    roles=_VIT_ROLES,
    fused=_QKV,
    heads=("head", "head_dist"),
    matches=_timm(("VisionTransformerDistilled",), ("deit",)),
    tiny_model=_tiny("deit_tiny_distilled_patch16_224", **_TINY_VIT),
    example_input=_image_input(32),
    notes="timm DeiT (deit_*, distilled or not): ViT's blocks; the distillation head 'head_dist' is trained"
          " with 'head'. Declared before timm-vit, which would otherwise claim a plain DeiT (a VisionTransformer).",
)

VIT = Family(
    name="timm-vit",
    backend="vision",
    block_pattern=r"(?:.*\.)?blocks\.\d+",
    roles=_VIT_ROLES,
    fused=_QKV,
    heads=("head",),
    matches=_timm(("VisionTransformer",)),
    tiny_model=_tiny("vit_tiny_patch16_224", **_TINY_VIT),
    example_input=_image_input(32),
    notes="timm VisionTransformer (vit_*): fused attn.qkv split into q, k, v; attn.proj (o), mlp.fc1 (f1),"
          " mlp.fc2 (f2). The patch embedding is not targeted.",
)

BEIT = Family(
    name="timm-beit",
    backend="vision",
    block_pattern=r"(?:.*\.)?blocks\.\d+",
    roles=_VIT_ROLES,
    fused=_QKV,
    heads=("head",),
    matches=_timm(("Beit",)),
    tiny_model=_tiny("beit_base_patch16_224", **_TINY_VIT),
    example_input=_image_input(32),
    notes="timm BEiT: fused attn.qkv split into q, k, v; attn.proj (o), mlp.fc1 (f1), mlp.fc2 (f2). BEiT's qkv"
          " has no bias of its own: the q and v biases are the attention's q_bias/v_bias parameters, which stay"
          " frozen, so q, k, v train singular values only. With those biases BEiT computes"
          " F.linear(x, attn.qkv.weight, qkv_bias) instead of calling attn.qkv, so the decomposed layer must"
          " expose its current 'weight' (requested from vf-core; until then the forward pass fails).",
)

SWIN = Family(
    name="timm-swin",
    backend="vision",
    block_pattern=r"(?:.*\.)?layers\.\d+\.blocks\.\d+",
    roles=_VIT_ROLES,
    fused=_QKV,
    heads=("head",),
    matches=_timm(("SwinTransformer",)),
    tiny_model=_tiny("swin_tiny_patch4_window7_224", img_size=32, patch_size=4, window_size=4, embed_dim=16,
                     depths=(1, 1), num_heads=(2, 4), num_classes=3),
    example_input=_image_input(32),
    notes="timm Swin Transformer (v1): the window attention's fused qkv is split into q, k, v; attn.proj (o),"
          " mlp.fc1 (f1), mlp.fc2 (f2). Blocks are numbered across stages. Patch merging is not targeted."
          " SwinTransformerV2 is not declared (it reads qkv.weight directly).",
)

CONVNEXT = Family(
    name="timm-convnext",
    backend="vision",
    block_pattern=r"(?:.*\.)?stages\.\d+\.blocks\.\d+",
    roles={"f1": ("mlp.fc1",), "f2": ("mlp.fc2",)},
    heads=("head",),
    matches=_timm(("ConvNeXt",)),
    tiny_model=_tiny("convnext_atto", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), num_classes=3,
                     ls_init_value=1.0),  # the default 1e-6 layer scale would hide the MLPs from the tests
    example_input=_image_input(32),
    notes="timm ConvNeXt: no attention, so only the MLP roles: mlp.fc1 (f1) and mlp.fc2 (f2), linear layers"
          " or 1x1 convolutions (conv_mlp=True). The 7x7 depthwise convolution is not targeted.",
)

EFFICIENTNET = Family(
    name="timm-efficientnet",
    backend="vision",
    # stage 0 holds depthwise-separable blocks (conv_dw then a 1x1 *projection* also named conv_pw): left out
    block_pattern=r"(?:.*\.)?blocks\.(?!0\.)\d+\.\d+",
    roles={"f1": ("conv_pw",), "f2": ("conv_pwl",)},
    heads=("classifier",),
    matches=_timm(("EfficientNet", "EfficientNetFeatures", "MobileNetV3", "MobileNetV3Features")),
    tiny_model=_tiny("tf_efficientnet_lite0", num_classes=3),
    example_input=_image_input(32),
    notes="timm EfficientNet / EfficientNet-Lite / MobileNetV2 / MobileNetV3 / MnasNet inverted-residual blocks:"
          " the 1x1 expansion conv_pw plays f1 and the 1x1 projection conv_pwl plays f2 (no attention). The"
          " depthwise-separable blocks of stage 0, whose 1x1 projection is also named conv_pw, and the"
          " depthwise convolutions are not targeted. These 1x1 convolutions have no bias (batch norm follows),"
          " so only singular values train unless add_missing_bias=True.",
)

# order matters: the first family whose predicate accepts a model wins (DeiT before ViT)
FAMILIES: list[Family] = [DEIT, VIT, BEIT, SWIN, CONVNEXT, EFFICIENTNET]
