"""Pre-train the diffusion benchmark's base: a small class-conditional DDPM UNet on MNIST-5k digits 0-8.

No pre-trained diffusion weights ship in any package registry, so the benchmark builds its own base (and says so
next to its figures). Digit 9 is held out: the fine-tuning runs teach it later. Model: diffusers ``UNet2DModel``,
16x16, 1 channel, ``num_class_embeds=10`` (row 9 is never trained: it gets no gradient and no weight decay), widths
32/64/64, one ResNet layer per block, self-attention at 8x8 and 4x4 (``AttnDownBlock2D`` / ``AttnUpBlock2D``), about
1.2M parameters. Data: the train part of the command's fixed split of MNIST-5k (:mod:`digits`, 3,594 images of
0-8), 28 -> 16 bilinear antialiased, pixels in [-1, 1]. Objective: epsilon prediction with a ``DDPMScheduler``
(1,000 steps, ``squaredcos_cap_v2``); AdamW (lr 1e-3, 5% warm-up, cosine decay, weight decay 0.01), batch 64,
gradient clipping 1.0, and an EMA of the weights (decay 0.999) which is what gets saved. 4,000 steps (71 epochs)
take about 27 minutes on 2 idle CPU cores (0.41 s a step at 2 threads); the recorded run took 50 minutes of wall
time and 33 of CPU time at 1 thread on a 2-core machine shared with other jobs (``results/pretrain.json``).

Every step draws its batch, timesteps and noise from a generator seeded by ``(seed, step)``, so a resumed run
is the same run. A checkpoint (model, EMA, optimizer, log) goes to ``cache/base/checkpoint.pt`` every 200 steps
and a rerun continues from it; when the base exists the script does nothing. The finished base is a diffusers
folder, ``cache/base/`` (``config.json``, ``diffusion_pytorch_model.safetensors``, ``scheduler_config.json``),
loadable with ``UNet2DModel.from_pretrained`` / ``DDPMScheduler.from_pretrained``, plus ``cache/base/train.json``
(config, steps, seconds, machine, loss log); :mod:`base_check` adds the judge's reading and writes
``results/pretrain.json``.

Example::

    nice -n 10 python benchmarks/diffusion/pretrain.py --threads 2          # then: python .../base_check.py
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CACHE = HERE / "cache"
BASE = CACHE / "base"
CLASSES = tuple(range(9))  # digit 9 is held out
UNET = {"sample_size": 16, "in_channels": 1, "out_channels": 1, "num_class_embeds": 10, "layers_per_block": 1,
        "block_out_channels": (32, 64, 64), "norm_num_groups": 8, "attention_head_dim": 32,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")}
SCHEDULER = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "epsilon",
             "clip_sample": True}
TRAIN = {"steps": 4000, "batch": 64, "lr": 1e-3, "warmup": 0.05, "weight_decay": 0.01, "ema": 0.999, "clip": 1.0,
         "seed": 0}


def lr_at(step: int, steps: int, lr: float, warmup: float) -> float:
    """Linear warm-up over ``warmup * steps`` steps, then cosine decay to 0."""
    warm = max(1, int(steps * warmup))
    if step < warm:
        return lr * (step + 1) / warm
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def is_base(folder: Path) -> bool:
    return all((folder / f).is_file() for f in ("config.json", "diffusion_pytorch_model.safetensors",
                                                "scheduler_config.json"))


def pretrain(out: Path = BASE, *, steps: int = TRAIN["steps"], threads: int = 0, log_every: int = 50,
             ckpt_every: int = 200) -> Path:
    """Train (or resume, or skip when finished) and return the base folder ``out``."""
    import torch
    from diffusers import DDPMScheduler, UNet2DModel
    from digits import mnist16

    if is_base(out):
        return out
    if threads:
        torch.set_num_threads(threads)
    cfg = {**TRAIN, "steps": steps}
    (x, y), _ = mnist16(CLASSES)
    torch.manual_seed(cfg["seed"])
    unet = UNet2DModel(**UNET)
    ema = UNet2DModel(**UNET)
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    scheduler = DDPMScheduler(**SCHEDULER)
    embed = [p for n, p in unet.named_parameters() if n.startswith("class_embedding")]
    rest = [p for n, p in unet.named_parameters() if not n.startswith("class_embedding")]
    opt = torch.optim.AdamW([{"params": rest, "weight_decay": cfg["weight_decay"]},
                             {"params": embed, "weight_decay": 0.0}], lr=cfg["lr"])
    out.mkdir(parents=True, exist_ok=True)
    ckpt, start, log, seconds, cpu = out / "checkpoint.pt", 0, [], 0.0, 0.0
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        unet.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        start, log, seconds, cpu = state["step"], state["log"], state["seconds"], state["cpu_seconds"]
        print(f"resumed at step {start}", flush=True)
    alphas = scheduler.alphas_cumprod
    unet.train()
    t0, c0, window = time.time() - seconds, time.process_time() - cpu, []
    for step in range(start, steps):
        g = torch.Generator().manual_seed(cfg["seed"] * 1_000_003 + step)
        idx = torch.randint(0, len(x), (cfg["batch"],), generator=g)
        clean, labels = x[idx], y[idx]
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=g)
        noise = torch.randn(clean.shape, generator=g)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * clean + (1 - a).sqrt() * noise
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, cfg["lr"], cfg["warmup"])
        loss = torch.nn.functional.mse_loss(unet(noisy, t, class_labels=labels).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg["clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            decay = min(cfg["ema"], (1 + step) / (10 + step))
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 1 - decay)
        window.append(loss.item())
        if (step + 1) % log_every == 0:
            log.append({"step": step + 1, "loss": round(sum(window) / len(window), 4),
                        "seconds": round(time.time() - t0, 1),
                        "cpu_seconds": round(time.process_time() - c0, 1)})
            window = []
            print(log[-1], flush=True)
        if (step + 1) % ckpt_every == 0 or step + 1 == steps:
            torch.save({"model": unet.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                        "step": step + 1, "log": log, "seconds": time.time() - t0,
                        "cpu_seconds": time.process_time() - c0}, ckpt)
    seconds, cpu = round(time.time() - t0, 1), round(time.process_time() - c0, 1)
    ema.eval()
    ema.save_pretrained(str(out))
    scheduler.save_pretrained(str(out))
    sys.path.insert(0, str(ROOT / "benchmarks" / "quality"))
    from run import machine  # benchmarks/quality/run.py

    info = {"model": "diffusers UNet2DModel (EMA weights)", "unet": UNET, "scheduler": SCHEDULER, "train": cfg,
            "classes": list(CLASSES), "train_images": len(x), "image_size": UNET["sample_size"],
            "parameters": sum(p.numel() for p in ema.parameters()),
            "epochs": round(steps * cfg["batch"] / len(x), 1), "seconds": seconds,
            "cpu_seconds": cpu, "threads": torch.get_num_threads(),
            "final_loss": log[-1]["loss"] if log else None, "machine": machine(), "log": log}
    (out / "train.json").write_text(json.dumps(info, indent=2) + "\n")
    ckpt.unlink()
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=TRAIN["steps"])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = p.parse_args()
    print(pretrain(steps=a.steps, threads=a.threads))
