"""Class-conditional DDIM sampling and sample grids for the diffusion benchmark.

:func:`sample` runs a deterministic DDIM loop (eta 0; ``DDIMScheduler.from_config`` of the model's own scheduler,
so the same betas, prediction type and clipping) from noise drawn with a fixed seed; :func:`grid` lays samples
out one row per class as a PNG, framing in red those the judge read as another class.

Example::

    >>> from diffusers import DDPMScheduler, UNet2DModel           # doctest: +SKIP
    >>> unet = UNet2DModel.from_pretrained("benchmarks/diffusion/cache/base")        # doctest: +SKIP
    >>> sched = DDPMScheduler.from_pretrained("benchmarks/diffusion/cache/base")     # doctest: +SKIP
    >>> x, y = sample(unet, sched, classes=range(9), per_class=20, seed=0)          # doctest: +SKIP
    >>> x.shape, y[:3].tolist()                                                     # doctest: +SKIP
    (torch.Size([180, 1, 16, 16]), [0, 0, 0])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path


def sample(unet, scheduler, *, classes: Iterable[int], per_class: int, seed: int = 0, steps: int = 50,
           batch: int = 200, device: str = "cpu"):
    """``(images, labels)``: ``per_class`` samples of each class, images (N, C, H, W) in [-1, 1], class-major."""
    import torch
    from diffusers import DDIMScheduler

    ddim = DDIMScheduler.from_config(scheduler.config)
    ddim.set_timesteps(steps)
    labels = torch.tensor([c for c in classes for _ in range(per_class)], dtype=torch.long)
    size = unet.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(labels), unet.config.in_channels, *size), generator=g)
    unet = unet.to(device).eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(labels), batch):
            x, y = noise[s:s + batch].to(device), labels[s:s + batch].to(device)
            for t in ddim.timesteps:
                eps = unet(x, t, class_labels=y).sample
                x = ddim.step(eps, t, x, eta=0.0).prev_sample
            out.append(x.clamp(-1, 1).cpu())
    return torch.cat(out), labels


def grid(images, path: Path, *, columns: int, wrong: Sequence[bool] | None = None, scale: int = 2,
         pad: int = 2) -> Path:
    """Save ``images`` (N, C, H, W) in [-1, 1] as a grid of ``columns`` per row, each ``scale`` times larger
    (nearest), ``pad`` pixels apart; cells whose ``wrong`` is true get a red frame."""
    from PIL import Image

    n, c, h, w = images.shape
    rows = -(-n // columns)
    ch, cw = h * scale + 2 * pad, w * scale + 2 * pad
    canvas = Image.new("RGB", (columns * cw, rows * ch), (255, 255, 255))
    pixels = images.add(1).mul(127.5).round().clamp(0, 255).byte()
    for i in range(n):
        tile = pixels[i, 0] if c == 1 else pixels[i, :3].permute(1, 2, 0)
        img = Image.fromarray(tile.numpy(), "L" if c == 1 else "RGB").convert("RGB")
        img = img.resize((w * scale, h * scale), Image.NEAREST)
        r, col = divmod(i, columns)
        x0, y0 = col * cw, r * ch
        if wrong is not None and wrong[i]:
            canvas.paste((220, 30, 30), (x0, y0, x0 + cw, y0 + ch))
        canvas.paste(img, (x0 + pad, y0 + pad))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
