"""Sampling images from a denoiser, and the noise arithmetic training shares with it.

* :func:`sample`: the reverse process with the model's own scheduler family (a DDPM-trained model samples with
  DDIM, deterministic with eta 0, so ``steps`` can be far fewer than the training timesteps), class labels or
  prompts (classifier-free guidance when ``guidance_scale > 1``), VAE decoding for latent models. The result is a
  float tensor in ``[-1, 1]``, the same for the same seed.
* :func:`training_target`: what the denoiser learns to predict (``epsilon``, ``sample`` or ``v_prediction``, as
  the scheduler's config says).
* :func:`to_pil` / :func:`image_grid`: PNG-ready images and one grid of them.

Example::

    >>> from vf_backends_diffusion.models import load_parts          # doctest: +SKIP
    >>> from vf_backends_diffusion.sampling import sample, image_grid
    >>> parts = load_parts("runs/base-unet")                           # doctest: +SKIP
    >>> images = sample(parts, class_labels=[3, 3, 7, 7], steps=25, seed=0)   # doctest: +SKIP
    >>> image_grid(images, columns=2).save("grid.png")                 # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from typing import Optional, Sequence

import torch
from vf_core.images import paste_grid

from .models import DiffusionParts, denoise

__all__ = ["sampling_scheduler", "training_target", "text_states", "sample", "to_pil", "image_grid"]


def sampling_scheduler(scheduler):
    """The scheduler to sample with: DDIM built from a DDPM training scheduler's config (same noise schedule and
    prediction type), else a fresh copy of the model's own scheduler."""
    import diffusers

    if type(scheduler).__name__ == "DDPMScheduler":
        return diffusers.DDIMScheduler.from_config(scheduler.config)
    return type(scheduler).from_config(scheduler.config)


def training_target(scheduler, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """The denoiser's regression target for ``x0`` noised with ``noise`` at ``timesteps``."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return x0
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, noise, timesteps)
    raise ValueError(f"prediction type {kind!r} is not one of epsilon, sample, v_prediction")


@torch.no_grad()
def text_states(parts: DiffusionParts, prompts: Sequence[str], device=None) -> Optional[torch.Tensor]:
    """The text encoder's last hidden states for ``prompts`` (padded to the tokenizer's maximum length), or, for
    a text-taking denoiser without a text encoder (a bare ``UNet2DConditionModel`` folder), zeros of one token
    (null conditioning); None for denoisers that take no text."""
    if not parts.takes_text:
        return None
    dim = parts.denoiser.config.cross_attention_dim
    if parts.text_encoder is None:
        return torch.zeros(len(prompts), 1, dim, device=device)
    tok = parts.tokenizer
    length = min(int(getattr(tok, "model_max_length", 77) or 77), 77)
    ids = tok(list(prompts), padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
    encoder = parts.text_encoder.to(device) if device is not None else parts.text_encoder
    return encoder(ids.to(encoder.device))[0]


def _accepts(fn, name: str) -> bool:
    return name in inspect.signature(fn).parameters


@torch.no_grad()
def sample(parts: DiffusionParts, denoiser=None, *, num_images: Optional[int] = None,
           class_labels: Optional[Sequence[int]] = None, prompts: Optional[Sequence[str]] = None, steps: int = 25,
           seed: int = 0, guidance_scale: float = 1.0, batch_size: int = 16, forward_of=None) -> torch.Tensor:
    """``num_images`` samples (or one per class label / prompt) as a float tensor ``(N, C, H, W)`` in ``[-1, 1]``.

    ``denoiser``: the model to sample with (a trained or wrapped one; default ``parts.denoiser``), ``forward_of``
    the plain model whose ``forward`` names the arguments when ``denoiser`` wraps it."""
    net = denoiser if denoiser is not None else parts.denoiser
    plain = forward_of if forward_of is not None else parts.denoiser
    n = len(class_labels) if class_labels is not None else len(prompts) if prompts is not None else num_images
    if not n:
        raise ValueError("sample() needs num_images, class_labels or prompts")
    device = next(net.parameters()).device
    scheduler = sampling_scheduler(parts.scheduler)
    config = parts.denoiser.config
    channels = int(config.in_channels)
    size = config.sample_size[0] if isinstance(config.sample_size, (list, tuple)) else int(config.sample_size)
    generator = torch.Generator().manual_seed(seed)
    guided = guidance_scale > 1.0 and parts.text_encoder is not None and parts.takes_text
    step_takes_generator = _accepts(scheduler.step, "generator")
    out = []
    was_training = net.training
    net.eval()
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        x = torch.randn(count, channels, size, size, generator=generator).to(device) * scheduler.init_noise_sigma
        labels = None if class_labels is None else \
            torch.as_tensor(list(class_labels[start:start + count]), dtype=torch.long, device=device)
        batch_prompts = list(prompts[start:start + count]) if prompts is not None else [""] * count
        states = text_states(parts, batch_prompts, device)
        if guided:
            states = torch.cat([text_states(parts, [""] * count, device), states])
        scheduler.set_timesteps(steps)
        for t in scheduler.timesteps:
            model_in = scheduler.scale_model_input(x, t)
            if guided:
                model_in = torch.cat([model_in, model_in])
            ts = t.reshape(1).expand(model_in.shape[0]).to(device)
            pred = denoise(net, model_in, ts, class_labels=None if labels is None else
                           (torch.cat([labels, labels]) if guided else labels),
                           encoder_hidden_states=states, forward_of=plain)
            if guided:
                uncond, cond = pred.chunk(2)
                pred = uncond + guidance_scale * (cond - uncond)
            extra = {"generator": generator} if step_takes_generator else {}
            x = scheduler.step(pred.float().cpu(), t, x.float().cpu(), **extra).prev_sample.to(device)
        if parts.vae is not None:
            vae = parts.vae.to(device)
            x = vae.decode(x.to(vae.dtype) / vae.config.scaling_factor).sample
        out.append(x.float().clamp(-1, 1).cpu())
    net.train(was_training)
    return torch.cat(out)


def to_pil(images: torch.Tensor) -> list:
    """PIL images (grayscale for one channel, RGB for three) of a ``[-1, 1]`` tensor ``(N, C, H, W)``."""
    from PIL import Image

    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(p[..., 0] if p.shape[-1] == 1 else p[..., :3]) for p in pixels]


def image_grid(images: torch.Tensor, columns: Optional[int] = None, padding: int = 2):
    """One PIL image laying ``images`` out in rows of ``columns`` (default: about square)."""
    return paste_grid(to_pil(images), columns, padding)
