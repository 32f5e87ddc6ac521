"""A mean-pooling head for sequence classifiers: the head reads the attention-masked mean of the encoder's last
hidden states instead of the first token (or BERT's pooler on it).

Sentence encoders such as sentence-transformers/all-MiniLM-L6-v2 were trained with mean pooling; their first
token was never trained to summarise the text, and BERT's pooler on it is an untrained leftover. ``--pooling mean``
(``vectorfit train``, text tasks) makes any ``AutoModelForSequenceClassification`` read the mean instead, with
no new parameters: a forward hook on the encoder writes the mean into the first token's hidden state (which
RoBERTa-, DeBERTa- and ELECTRA-style heads read) and into ``pooler_output`` (which BERT's head reads). The choice
is stored in the model's config (``vectorfit_pooling``), so a saved or merged model loads with it.

The stall study (docs/method.md, "Stalls") tried it as a remedy: it is not one, the mean-pooled features collapse
the same way when the biases train too fast.

Example:
    >>> import torch
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> model = BertForSequenceClassification(BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1,
    ...                                                  num_attention_heads=2, intermediate_size=16))
    >>> _ = use_mean_pooling(model)
    >>> model.config.vectorfit_pooling
    'mean'
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["POOLINGS", "use_mean_pooling", "apply_pooling", "masked_mean"]

#: what a text classifier's head reads: ``cls`` (the model's own head, the default) or ``mean``
POOLINGS = ("cls", "mean")
_HANDLE = "_vectorfit_mean_pooling_hook"


def masked_mean(hidden: torch.Tensor, attention_mask) -> torch.Tensor:
    """The mean of ``hidden`` ``(batch, tokens, dim)`` over the tokens the mask keeps (all when it is None)."""
    if attention_mask is None:
        return hidden.mean(1)
    mask = attention_mask[:, : hidden.shape[1]].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def _hook(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
    hidden = output[0]
    mean = masked_mean(hidden, kwargs.get("attention_mask"))
    hidden = torch.cat([mean.unsqueeze(1), hidden[:, 1:]], dim=1)
    if isinstance(output, tuple):  # return_dict=False: (last_hidden_state, pooler_output?, ...)
        pooled = (mean,) if len(output) > 1 and output[1] is not None and output[1].dim() == 2 else output[1:2]
        return (hidden, *pooled, *output[2:])
    output["last_hidden_state"] = hidden
    if output.get("pooler_output") is not None:
        output["pooler_output"] = mean
    return output


def use_mean_pooling(model: torch.nn.Module) -> torch.nn.Module:
    """Make the sequence classifier ``model`` (in place) read the masked mean of its encoder's last hidden
    states; returns it. Idempotent."""
    encoder = getattr(model, "base_model", None)
    if encoder is None or encoder is model:
        raise ValueError(f"{type(model).__name__} has no separate encoder (base_model) to pool")
    if getattr(encoder, _HANDLE, None) is None:
        setattr(encoder, _HANDLE, encoder.register_forward_hook(_hook, with_kwargs=True))
    model.config.vectorfit_pooling = "mean"
    return model


def apply_pooling(model: torch.nn.Module, pooling) -> torch.nn.Module:
    """``pooling`` given (``cls`` or ``mean``), else what the model's config says (a saved mean-pooling model)."""
    pooling = pooling or getattr(model.config, "vectorfit_pooling", None) or "cls"
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    return use_mean_pooling(model) if pooling == "mean" else model
