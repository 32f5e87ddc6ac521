"""Pre-train the generation benchmark's base model: a small GPT-2-style decoder, from scratch, on film reviews.

No pre-trained decoder ships in any package registry, so the benchmark builds its own base (and says so next to
its figures): GPT-2 architecture, 4 layers, width 192, 4 heads, context 128, the 4,096-token BPE tokenizer of
:mod:`corpus` (about 2.6M parameters), trained on the review corpus packed into 128-token blocks (texts joined by
``<|endoftext|>``) with AdamW (lr 1e-3, 5% warm-up, cosine decay), batch 16. It checkpoints every 100 steps under
``cache/base/checkpoint.pt`` and resumes from there; the finished model is a plain transformers folder,
``cache/base/model`` (config, weights, tokenizer), which ``vectorfit train --model`` reads.

Example::

    nice -n 10 python benchmarks/generation/pretrain.py --steps 1200
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BLOCK = 128
CONFIG = dict(n_layer=4, n_embd=192, n_head=4, n_positions=BLOCK, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def blocks(tokenizer, text_file: Path):
    import torch

    ids: list[int] = []
    eot = tokenizer.eos_token_id
    for line in text_file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            ids += tokenizer(line)["input_ids"] + [eot]
    n = len(ids) // BLOCK
    return torch.tensor(ids[: n * BLOCK]).view(n, BLOCK)


def train_steps(model, loss_at, steps: int, ckpt: Path, *, lr: float, warmup: float = 0.05,
                log_every: int = 20, save_every: int = 100) -> list[dict]:
    """AdamW (weight decay 0.01) for ``steps`` steps of ``loss_at(step)``, linear warm-up then cosine decay,
    gradients clipped at 1; checkpointed to ``ckpt`` every ``save_every`` steps and resumed from it. Returns the
    loss log (``step, loss, seconds``); the model is left in eval mode."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, int(steps * warmup))

    def lr_at(step: int) -> float:
        if step < warm:
            return lr * (step + 1) / warm
        return lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

    start, log = 0, []
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, log = state["step"], state["log"]
        print(f"resumed at step {start}", flush=True)
    model.train()
    t0 = time.time()
    for step in range(start, steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = loss_at(step)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % log_every == 0:
            log.append({"step": step + 1, "loss": round(float(loss), 4), "seconds": round(time.time() - t0, 1)})
            print(log[-1], flush=True)
        if (step + 1) % save_every == 0 or step + 1 == steps:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step + 1, "log": log},
                       ckpt)
    model.eval()
    return log


def pretrain(steps: int, cache: Path, *, batch: int = 16, lr: float = 1e-3, seed: int = 0, threads: int = 0) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from corpus import build

    if threads:
        torch.set_num_threads(threads)
    paths = build(cache)
    out = cache / "base"
    final = out / "model"
    if (final / "config.json").is_file():
        return final
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(paths["tokenizer"]))
    data = blocks(tokenizer, paths["pretrain"])
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **CONFIG)
    model = GPT2LMHeadModel(config)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=g)

    def loss_at(step: int):
        x = data[order[(torch.arange(batch) + step * batch) % len(data)]]
        return model(input_ids=x, labels=x).loss

    log = train_steps(model, loss_at, steps, out / "checkpoint.pt", lr=lr)
    return save_base(model, tokenizer, out, {"config": CONFIG, "steps": steps, "batch": batch, "block": BLOCK,
                                              "lr": lr, "blocks": len(data),
                                              "epochs": round(steps * batch / len(data), 2), "log": log})


def save_base(model, tokenizer, out: Path, info: dict) -> Path:
    """Save a pre-trained base as a transformers folder ``out/model`` (weights and tokenizer), its record as
    ``out/pretrain.json`` (``info`` with the vocabulary and parameter count), and drop the training checkpoint."""
    final = out / "model"
    model.eval()
    model.save_pretrained(str(final))
    tokenizer.save_pretrained(str(final))
    info = {"config": info.pop("config"), "vocab": len(tokenizer),
            "parameters": sum(p.numel() for p in model.parameters()), **info}
    (out / "pretrain.json").write_text(json.dumps(info, indent=2) + "\n")
    (out / "checkpoint.pt").unlink(missing_ok=True)
    return final


def command_line(build, default_steps: int) -> None:
    """``--steps N --threads T``: build (or find) the base with ``build(steps, cache, threads=...)``."""
    import sys

    sys.path.insert(0, str(HERE))
    p = argparse.ArgumentParser(description=(sys.modules["__main__"].__doc__ or " ").splitlines()[0])
    p.add_argument("--steps", type=int, default=default_steps)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    print(build(a.steps, HERE / "cache", threads=a.threads))


if __name__ == "__main__":
    command_line(pretrain, 1200)
