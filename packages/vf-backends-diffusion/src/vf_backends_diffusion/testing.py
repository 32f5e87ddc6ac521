"""Tiny, seeded diffusers models and model folders for tests, built from configs as diffusers' own tests build them.

Nothing is downloaded: every folder here loads offline with ``from_pretrained``. The builders run on the CPU in
well under a second each and leave the global random state untouched (they seed a forked generator).

- :func:`tiny_unet2d` / :func:`save_tiny_unet2d`: a DDPM ``UNet2DModel`` (unconditional or class-conditional, with
  or without attention blocks), saved with its ``DDPMScheduler`` config in the same folder.
- :func:`save_tiny_sd_pipeline`: a Stable Diffusion pipeline folder (CLIP text encoder and tokenizer, VAE,
  ``UNet2DConditionModel``, DDPM scheduler, no safety checker) that
  ``diffusers.StableDiffusionPipeline.from_pretrained`` loads.
- :func:`save_tiny_dit`: a class-conditional ``DiTTransformer2DModel`` on pixels; :func:`save_tiny_transformer2d`:
  a PixArt-style (``ada_norm_single``) ``Transformer2DModel`` on pixels, conditioned on the timestep only; both
  with a DDPM scheduler config.

diffusers and transformers are imported inside the functions.

Example:
    >>> from vf_backends_diffusion.testing import tiny_unet2d
    >>> unet = tiny_unet2d(class_conditional=True, attention=False)
    >>> type(unet).__name__, unet.config.num_class_embeds, unet.config.sample_size
    ('UNet2DModel', 10, 8)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

__all__ = ["tiny_unet2d", "save_tiny_unet2d", "tiny_scheduler", "save_tiny_sd_pipeline", "tiny_clip_tokenizer",
           "save_tiny_dit", "save_tiny_transformer2d", "TINY_TIMESTEPS", "TINY_PROMPT_WORDS"]

#: the number of training timesteps of every tiny scheduler (few, so that sampling in a test is fast)
TINY_TIMESTEPS = 100

#: the words the tiny CLIP tokenizer knows whole (other words are spelt letter by letter; other symbols are unknown)
TINY_PROMPT_WORDS = ("a", "photo", "of", "sks", "dog", "digit", "nine", "an", "image", "the")

PathLike = str | Path


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch inside the block without changing the caller's random state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _folder(directory: PathLike) -> Path:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    return path


def tiny_scheduler(**overrides):
    """A ``DDPMScheduler`` with :data:`TINY_TIMESTEPS` steps and the cosine schedule (which reaches pure noise at the
    last step whatever the number of steps); ``overrides`` go to its config (``prediction_type="v_prediction"``...)."""
    import diffusers

    config = {"num_train_timesteps": TINY_TIMESTEPS, "beta_schedule": "squaredcos_cap_v2", **overrides}
    return diffusers.DDPMScheduler(**config)


def tiny_unet2d(*, class_conditional: bool, attention: bool, channels: int = 1, size: int = 8,
                num_classes: int = 10, seed: int = 0):
    """A tiny DDPM ``UNet2DModel`` in eval mode: two levels (8 and 16 channels), one ResNet per level and side.

    Args:
        class_conditional: give it a class embedding of ``num_classes`` rows (``num_class_embeds``); its forward
            then needs ``class_labels``.
        attention: use ``AttnDownBlock2D`` / ``AttnUpBlock2D`` at the lower level and an attention block in the
            mid block; otherwise ResNet blocks only (``add_attention=False``).
        channels: image channels in and out (1: grey, 3: RGB).
        size: the image side (``sample_size``), a multiple of 2.
    """
    import diffusers

    down = ("DownBlock2D", "AttnDownBlock2D" if attention else "DownBlock2D")
    up = ("AttnUpBlock2D" if attention else "UpBlock2D", "UpBlock2D")
    with _seeded(seed):
        unet = diffusers.UNet2DModel(
            sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=1,
            block_out_channels=(8, 16), down_block_types=down, up_block_types=up, add_attention=attention,
            attention_head_dim=4, norm_num_groups=4, num_class_embeds=num_classes if class_conditional else None)
    return unet.eval()


def save_tiny_unet2d(directory: PathLike, *, class_conditional: bool, attention: bool, channels: int = 1,
                     size: int = 8, num_classes: int = 10, seed: int = 0) -> Path:
    """Save :func:`tiny_unet2d` as a diffusers model folder (``config.json`` and weights) with a DDPM scheduler
    config (``scheduler_config.json``, :data:`TINY_TIMESTEPS` steps) in the same folder; returns the folder.

    Example:
        >>> import tempfile, diffusers
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = save_tiny_unet2d(d, class_conditional=False, attention=True)
        ...     unet = diffusers.UNet2DModel.from_pretrained(path)
        ...     steps = diffusers.DDPMScheduler.from_pretrained(path).config.num_train_timesteps
        >>> unet.config.num_class_embeds is None, steps
        (True, 100)
    """
    path = _folder(directory)
    tiny_unet2d(class_conditional=class_conditional, attention=attention, channels=channels, size=size,
                num_classes=num_classes, seed=seed).save_pretrained(path)
    tiny_scheduler().save_pretrained(path)
    return path


def _bpe_vocab(words: tuple[str, ...]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style byte-level BPE vocabulary: the special tokens, every lowercase letter, digit and common
    punctuation mark alone and at a word's end (``x</w>``), and the merges that build each of ``words`` from the
    left."""
    specials = ["<|startoftext|>", "<|endoftext|>"]
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)] + list(",.!?'-")
    tokens = specials + chars + [c + "</w>" for c in chars]
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            merge = (left, right)
            left = left + right
            if merge not in merges:
                merges.append(merge)
            if left not in tokens:
                tokens.append(left)
    return {token: i for i, token in enumerate(tokens)}, merges


def tiny_clip_tokenizer(max_length: int = 16):
    """A ``CLIPTokenizer`` built from a tiny vocabulary (no download): lowercase letters, digits and ``,.!?'-``, the
    whole words of :data:`TINY_PROMPT_WORDS`, ``<|startoftext|>`` (id 0) and ``<|endoftext|>`` (id 1, also the
    padding and the unknown token). Prompts are lower-cased, as CLIP's are."""
    from transformers import CLIPTokenizer

    vocab, merges = _bpe_vocab(TINY_PROMPT_WORDS)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def save_tiny_sd_pipeline(directory: PathLike, *, seed: int = 0) -> Path:
    """Save a tiny Stable Diffusion pipeline folder that ``StableDiffusionPipeline.from_pretrained`` loads offline;
    returns the folder.

    Components, as diffusers' own pipeline tests build them: a 2-layer ``CLIPTextModel`` (hidden 32), the tokenizer
    of :func:`tiny_clip_tokenizer` (16 tokens), an ``AutoencoderKL`` (4 latent channels, 16-pixel images, 8-pixel
    latents), a ``UNet2DConditionModel`` on 8x8 latents (cross-attention dimension 32), a DDPM scheduler
    (:data:`TINY_TIMESTEPS` steps), no safety checker and no feature extractor.

    Example:
        >>> import tempfile, diffusers
        >>> with tempfile.TemporaryDirectory() as d:
        ...     pipe = diffusers.StableDiffusionPipeline.from_pretrained(save_tiny_sd_pipeline(d))
        ...     images = pipe("a photo", num_inference_steps=2, output_type="np", height=16, width=16).images
        >>> images.shape
        (1, 16, 16, 3)
    """
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_clip_tokenizer()
    with _seeded(seed):
        unet = diffusers.UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=4,
            norm_num_groups=4)
        vae = diffusers.AutoencoderKL(
            sample_size=16, in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length, bos_token_id=0,
            eos_token_id=1, pad_token_id=1, projection_dim=32))
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=unet.eval(),
        scheduler=tiny_scheduler(clip_sample=False, steps_offset=1), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    path = _folder(directory)
    pipe.save_pretrained(path)
    return path


def save_tiny_dit(directory: PathLike, *, channels: int = 3, size: int = 8, num_classes: int = 10,
                  seed: int = 0) -> Path:
    """Save a tiny class-conditional ``DiTTransformer2DModel`` denoising pixels (``in_channels == out_channels ==
    channels``: no learned variance to split off), 2 blocks of width 16, patches of 2, with a DDPM scheduler config;
    returns the folder.

    Its forward takes ``hidden_states``, ``timestep`` and ``class_labels``. In train mode the class embedding drops
    labels at random (classifier-free guidance training, ``class_dropout_prob`` 0.1); its table has
    ``num_classes + 1`` rows, the last being the "no class" label.
    """
    import diffusers

    with _seeded(seed):
        dit = diffusers.DiTTransformer2DModel(
            num_attention_heads=2, attention_head_dim=8, in_channels=channels, out_channels=channels, num_layers=2,
            sample_size=size, patch_size=2, num_embeds_ada_norm=num_classes)
    path = _folder(directory)
    dit.eval().save_pretrained(path)
    tiny_scheduler().save_pretrained(path)
    return path


def save_tiny_transformer2d(directory: PathLike, *, channels: int = 3, size: int = 8, seed: int = 0) -> Path:
    """Save a tiny PixArt-style ``Transformer2DModel`` (patched input, ``norm_type="ada_norm_single"``) denoising
    pixels, conditioned on the timestep only (no text: no cross-attention), with a DDPM scheduler config; returns
    the folder.

    The folder's ``config.json`` names ``Transformer2DModel``; diffusers' ``Transformer2DModel.from_pretrained``
    loads it as a ``PixArtTransformer2DModel`` (its replacement for this ``norm_type``). Its forward needs
    ``hidden_states``, ``timestep`` and ``added_cond_kwargs={"resolution": None, "aspect_ratio": None}``.
    ``num_embeds_ada_norm`` is required by diffusers for patched input but unused by ``ada_norm_single``.
    """
    import diffusers

    with _seeded(seed):
        model = diffusers.Transformer2DModel(
            num_attention_heads=2, attention_head_dim=8, in_channels=channels, out_channels=channels, num_layers=2,
            sample_size=size, patch_size=2, norm_type="ada_norm_single", num_embeds_ada_norm=TINY_TIMESTEPS)
    path = _folder(directory)
    model.eval().save_pretrained(path)
    tiny_scheduler().save_pretrained(path)
    return path

