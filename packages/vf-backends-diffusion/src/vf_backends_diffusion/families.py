"""Architecture families of diffusers models and the modules that play each role.

diffusers models have no ``config.model_type``: a family recognises a model by its exact class name. Roles are
given relative to a transformer block (``block_pattern``); in the text-conditioned UNet (``UNet2DConditionModel``)
the ResNet blocks, time embeddings and ``proj_in``/``proj_out`` are not targeted. The DDPM UNet (``UNet2DModel``)
has no transformer blocks: its blocks are the ResNet blocks and the attention blocks themselves. Each family builds
a tiny random model for the shared contract tests (:mod:`vf_core.testing`); diffusers is imported only inside
those factories.

Conventions:

- Attention (diffusers' ``Attention``): ``to_q, to_k, to_v`` play ``q, k, v`` and ``to_out.0`` plays ``o``, for
  self-attention (``attn1``) and cross-attention (``attn2``, whose ``to_k``/``to_v`` read the text encoder's
  states) alike; a UNet transformer block therefore has two vectors per attention role.
- Feed-forward (diffusers' ``FeedForward``): ``ff.net.0.proj`` plays ``f1`` (for GEGLU it computes the hidden
  and gate halves in one matrix, decomposed as one), ``ff.net.2`` plays ``f2``.
- Joint (MM-DiT) blocks of SD3 and Flux: the text stream's ``add_q_proj, add_k_proj, add_v_proj`` play
  ``q, k, v``, ``to_add_out`` plays ``o`` and ``ff_context`` the MLP roles, next to the image stream's.
- Flux's single-stream blocks: ``attn.to_q/k/v`` (q, k, v), ``proj_mlp`` (f1) and ``proj_out`` (f2), which
  projects the concatenated attention and MLP outputs; these blocks have no separate ``o``.
- The DDPM UNet (``UNet2DModel``): in each ResNet block (``...resnets.N``; also a ResNet down/up-sampler,
  ``...downsamplers.N``, ``...upsamplers.N``, ``resnet_down``, ``resnet_up``) the first 3x3 convolution ``conv1``
  plays ``f1`` and the second ``conv2`` plays ``f2`` (a ``k x k`` kernel is decomposed as ``(out, in*k*k)``); each
  attention block (``...attentions.N``, one ``Attention`` over the pixels) has ``to_q, to_k, to_v, to_out.0``
  (q, k, v, o). A ResNet block thus has only f1/f2 and an attention block only q/k/v/o; a UNet without
  attention blocks still has every ResNet block to train.

Example:
    >>> from vf_backends_diffusion.families import FAMILIES
    >>> unet = next(f for f in FAMILIES if f.name == "unet2d-condition")
    >>> unet.role_of("attn2.to_k"), unet.role_of("ff.net.0.proj")
    ('k', 'f1')
    >>> ddpm = next(f for f in FAMILIES if f.name == "unet2d")
    >>> ddpm.role_of("conv1"), ddpm.role_of("to_out.0")
    ('f1', 'o')
"""

from __future__ import annotations

from typing import Any, Callable

from vf_core.families import Family

__all__ = ["FAMILIES"]


def _classes(*names: str) -> Callable[[Any], bool]:
    """A predicate matching exact class names (``Family.class_names`` also accepts prefixes)."""

    def matches(model: Any) -> bool:
        return type(model).__name__ in names

    return matches


def _tiny(model_cls: str, **config):
    """A factory of a seeded, tiny ``diffusers.<model_cls>(**config)`` in eval mode."""

    def build():
        import diffusers
        import torch

        torch.manual_seed(0)
        return getattr(diffusers, model_cls)(**config).eval()

    return build


def _randn(gen, *shape):
    import torch

    return torch.randn(*shape, generator=gen)


def _unet_input(model):
    import torch

    gen = torch.Generator().manual_seed(0)
    cfg = model.config
    size = cfg.sample_size
    return (), {"sample": _randn(gen, 2, cfg.in_channels, size, size), "timestep": torch.tensor([10, 500]),
                "encoder_hidden_states": _randn(gen, 2, 5, cfg.cross_attention_dim)}


def _unet2d_input(model):
    """A noisy batch of two for a ``UNet2DModel``, with ``class_labels`` when it has a class embedding."""
    import torch

    gen = torch.Generator().manual_seed(0)
    cfg = model.config
    size = cfg.sample_size if cfg.sample_size is not None else 8
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    steps = torch.tensor([10, 500])
    if cfg.time_embedding_type == "learned":  # an embedding table of num_train_timesteps rows
        steps = torch.tensor([0, cfg.num_train_timesteps - 1])
    kwargs = {"sample": _randn(gen, 2, cfg.in_channels, height, width), "timestep": steps}
    if model.class_embedding is not None:
        if cfg.class_embed_type == "identity":  # the labels are already embeddings
            kwargs["class_labels"] = _randn(gen, 2, model.time_embedding.linear_2.out_features)
        else:
            kwargs["class_labels"] = torch.tensor([1, min(3, (cfg.num_class_embeds or 4) - 1)])
    return (), kwargs


def _tiny_unet2d():
    from .testing import tiny_unet2d

    return tiny_unet2d(class_conditional=True, attention=True)


def _transformer2d_input(model):
    import torch

    gen = torch.Generator().manual_seed(0)
    cfg = model.config
    return (), {"hidden_states": _randn(gen, 2, cfg.in_channels, 8, 8),
                "encoder_hidden_states": _randn(gen, 2, 5, cfg.cross_attention_dim)}


def _dit_input(model):
    import torch

    gen = torch.Generator().manual_seed(0)
    cfg = model.config
    return (), {"hidden_states": _randn(gen, 2, cfg.in_channels, cfg.sample_size, cfg.sample_size),
                "timestep": torch.tensor([10, 500]), "class_labels": torch.tensor([1, 3])}


def _sd3_input(model):
    import torch

    gen = torch.Generator().manual_seed(0)
    cfg = model.config
    return (), {"hidden_states": _randn(gen, 2, cfg.in_channels, cfg.sample_size, cfg.sample_size),
                "encoder_hidden_states": _randn(gen, 2, 5, cfg.joint_attention_dim),
                "pooled_projections": _randn(gen, 2, cfg.pooled_projection_dim),
                "timestep": torch.tensor([10, 500])}


def _flux_input(model):
    import torch

    gen = torch.Generator().manual_seed(0)
    cfg = model.config
    image_tokens, text_tokens = 16, 5
    img_ids = torch.zeros(image_tokens, 3)
    img_ids[:, 1] = torch.arange(image_tokens) // 4
    img_ids[:, 2] = torch.arange(image_tokens) % 4
    return (), {"hidden_states": _randn(gen, 2, image_tokens, cfg.in_channels),
                "encoder_hidden_states": _randn(gen, 2, text_tokens, cfg.joint_attention_dim),
                "pooled_projections": _randn(gen, 2, cfg.pooled_projection_dim),
                "timestep": torch.tensor([0.1, 0.7]), "img_ids": img_ids, "txt_ids": torch.zeros(text_tokens, 3)}


_ATTN = {
    "q": ("attn1.to_q", "attn2.to_q"),
    "k": ("attn1.to_k", "attn2.to_k"),
    "v": ("attn1.to_v", "attn2.to_v"),
    "o": ("attn1.to_out.0", "attn2.to_out.0"),
    "f1": ("ff.net.0.proj",),
    "f2": ("ff.net.2",),
}

_JOINT = {
    "q": ("attn.to_q", "attn.add_q_proj"),
    "k": ("attn.to_k", "attn.add_k_proj"),
    "v": ("attn.to_v", "attn.add_v_proj"),
    "o": ("attn.to_out.0", "attn.to_add_out"),
    "f1": ("ff.net.0.proj", "ff_context.net.0.proj"),
    "f2": ("ff.net.2", "ff_context.net.2"),
}

# Flux adds its single-stream blocks: proj_mlp (f1) and proj_out (f2, over the concatenated attention and MLP)
_FLUX = {**_JOINT, "f1": _JOINT["f1"] + ("proj_mlp",), "f2": _JOINT["f2"] + ("proj_out",)}

UNET = Family(
    name="unet2d-condition",
    backend="diffusion",
    block_pattern=r"(?:.*\.)?transformer_blocks\.\d+",
    roles=_ATTN,
    matches=_classes("UNet2DConditionModel"),
    tiny_model=_tiny("UNet2DConditionModel", sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                     block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                     attention_head_dim=4, norm_num_groups=4),
    example_input=_unet_input,
    notes="Stable Diffusion 1.x/2.x UNets (UNet2DConditionModel): in every BasicTransformerBlock, self-attention"
          " attn1 and cross-attention attn2 (to_q, to_k, to_v, to_out.0) and the GEGLU feed-forward ff.net.0.proj"
          " (f1) and ff.net.2 (f2). Blocks are numbered in model order (down, up, then mid block, as"
          " named_modules lists them). ResNet blocks, proj_in/proj_out and time embeddings are not targeted.",
)

UNET2D = Family(
    name="unet2d",
    backend="diffusion",
    block_pattern=r"(?:.*\.)?(?:(?:resnets|attentions|downsamplers|upsamplers)\.\d+|resnet_down|resnet_up)",
    roles={"q": ("to_q",), "k": ("to_k",), "v": ("to_v",), "o": ("to_out.0",), "f1": ("conv1",), "f2": ("conv2",)},
    matches=_classes("UNet2DModel"),
    tiny_model=_tiny_unet2d,
    example_input=_unet2d_input,
    notes="The DDPM UNet (UNet2DModel), unconditional or class-conditional, with or without attention blocks."
          " Every ResNet block (resnets.N of the down, mid and up blocks, and the ResNet samplers of"
          " downsample_type/upsample_type='resnet' and of the skip blocks) is a block whose 3x3 convolutions conv1"
          " (f1) and conv2 (f2) are decomposed as (out, in*3*3) matrices; every attention block (attentions.N of"
          " AttnDownBlock2D, AttnUpBlock2D and UNetMidBlock2D with add_attention) is a block with to_q, to_k, to_v"
          " and to_out.0 (q, k, v, o). Blocks are numbered in model order (down, up, then mid block, as"
          " named_modules lists them). Old checkpoints' query/key/value/proj_attn are renamed by diffusers on"
          " load. Not targeted: time_emb_proj, conv_shortcut, the plain samplers' conv, conv_in/conv_out, time"
          " and class embeddings.",
)

TRANSFORMER2D = Family(
    name="transformer2d",
    backend="diffusion",
    block_pattern=r"(?:.*\.)?transformer_blocks\.\d+",
    roles=_ATTN,
    matches=_classes("Transformer2DModel", "PixArtTransformer2DModel"),
    tiny_model=_tiny("Transformer2DModel", num_attention_heads=2, attention_head_dim=8, in_channels=4,
                     num_layers=2, cross_attention_dim=16, norm_num_groups=4),
    example_input=_transformer2d_input,
    notes="diffusers' Transformer2DModel (continuous or patched input) and PixArtTransformer2DModel: attn1, attn2"
          " (when cross_attention_dim is set) and the feed-forward, as in the UNet's transformer blocks.",
)

DIT = Family(
    name="dit",
    backend="diffusion",
    block_pattern=r"(?:.*\.)?transformer_blocks\.\d+",
    roles=_ATTN,
    matches=_classes("DiTTransformer2DModel"),
    tiny_model=_tiny("DiTTransformer2DModel", num_attention_heads=2, attention_head_dim=8, in_channels=4,
                     out_channels=4, num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=10),
    example_input=_dit_input,
    notes="DiT (DiTTransformer2DModel): self-attention attn1 and the feed-forward; the adaLN-Zero modulation"
          " (norm1.linear, norm1.emb) and the final proj_out_1/proj_out_2 are not targeted.",
)

SD3 = Family(
    name="sd3",
    backend="diffusion",
    block_pattern=r"(?:.*\.)?transformer_blocks\.\d+",
    roles=_JOINT,
    matches=_classes("SD3Transformer2DModel"),
    tiny_model=_tiny("SD3Transformer2DModel", sample_size=8, patch_size=2, in_channels=4, num_layers=2,
                     attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
                     pooled_projection_dim=8, out_channels=4, pos_embed_max_size=16),
    example_input=_sd3_input,
    notes="Stable Diffusion 3 MM-DiT (SD3Transformer2DModel): image-stream to_q/to_k/to_v/to_out.0 and text-stream"
          " add_q_proj/add_k_proj/add_v_proj/to_add_out share the q, k, v, o roles; ff and ff_context play f1"
          " (net.0.proj) and f2 (net.2). The last block has no text-stream output projection or MLP"
          " (context_pre_only) and discards its text queries, so that block's add_q_proj vectors get no gradient;"
          " the adaLN modulation linears are not targeted.",
)

FLUX = Family(
    name="flux",
    backend="diffusion",
    block_pattern=r"(?:.*\.)?(?:single_)?transformer_blocks\.\d+",
    roles=_FLUX,
    matches=_classes("FluxTransformer2DModel"),
    tiny_model=_tiny("FluxTransformer2DModel", patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                     attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16, pooled_projection_dim=8,
                     axes_dims_rope=(2, 2, 4)),
    example_input=_flux_input,
    notes="Flux (FluxTransformer2DModel): double-stream blocks as SD3's (image and text streams share q, k, v, o,"
          " f1, f2). Single-stream blocks run attention and MLP in parallel: attn.to_q/to_k/to_v (q, k, v),"
          " proj_mlp (f1) and proj_out (f2), which projects the concatenated attention and MLP outputs, so"
          " single blocks have no separate o. Blocks are numbered double-stream first.",
)

FAMILIES: list[Family] = [UNET, UNET2D, TRANSFORMER2D, DIT, SD3, FLUX]
