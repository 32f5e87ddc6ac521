"""Perplexity of a causal language model without keeping its logits: each eval batch is reduced to its summed
token negative log-likelihood and its token count (:func:`nll_and_count`, the Trainer's
``preprocess_logits_for_metrics``); :func:`perplexity_metrics` adds them up.

``nll`` = mean NLL over every target token of the eval set (labels not -100, shifted by one as the model predicts
the next token), ``perplexity`` = ``exp(nll)``, ``tokens`` = their count. The causal-lm runner reports ``nll`` as
``eval_loss`` (the Trainer's own is a mean of batch means, which weighs the tokens of short batches more).

Example:
    >>> import torch
    >>> logits = torch.zeros(1, 3, 4)                       # uniform over 4 tokens
    >>> labels = torch.tensor([[-100, 1, 2]])                # two target tokens
    >>> nll_and_count(logits, labels).tolist()               # 2 * log(4), 2
    [[2.7725887298583984, 2.0]]
    >>> round(perplexity_metrics(nll_and_count(logits, labels).numpy())["perplexity"], 6)
    4.0
"""

from __future__ import annotations

import math

__all__ = ["nll_and_count", "perplexity_metrics"]


def nll_and_count(logits, labels):
    """Per example: ``[summed NLL of its target tokens, their number]`` (a ``(batch, 2)`` float32 tensor)."""
    import torch

    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    logits = logits[:, :-1].float()
    targets = labels[:, 1:].to(logits.device)
    mask = targets != -100
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none")
    nll = (nll * mask).sum(dim=1)
    return torch.stack([nll, mask.sum(dim=1).float()], dim=1)


def perplexity_metrics(sums) -> dict:
    """``{"nll", "perplexity", "tokens"}`` from the stacked outputs of :func:`nll_and_count` (an array)."""
    total, count = float(sums[:, 0].astype("float64").sum()), float(sums[:, 1].sum())
    mean = total / count if count else float("nan")
    return {"nll": mean, "perplexity": math.exp(mean) if count and mean < 700 else float("inf"),
            "tokens": int(count)}
