"""The output check of a LoRA export: the written adapter applied to a copy of the base model, as PEFT applies it
(``y = W0 x + b0 + B (A x) + b_B`` for ``lora_alpha == r``, the heads replaced), against the VectorFit model.

vf-core imports no model library, PEFT included, so the adapter is replayed here with forward hooks on plain torch
modules; the repository's tests load the same files with ``PeftModel.from_pretrained`` and diffusers'
``load_lora_adapter`` and check that they agree. Paper: https://arxiv.org/abs/2503.19530.

Example:
    >>> import torch
    >>> from vf_core.export.replay import main_tensor
    >>> main_tensor((torch.ones(2), "text")).shape
    torch.Size([2])
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from ..model import VectorFitModel

__all__ = ["main_tensor", "replay_difference", "PREFIX"]

#: PEFT's prefix of every key of ``adapter_model.safetensors``
PREFIX = "base_model.model."


def main_tensor(output: Any) -> torch.Tensor:
    """The tensor an output stands for: itself, its ``logits`` (transformers), its ``sample`` (diffusers), else the
    first tensor it holds."""
    if isinstance(output, torch.Tensor):
        return output
    for attr in ("logits", "sample", "last_hidden_state"):
        value = output.get(attr) if isinstance(output, Mapping) else getattr(output, attr, None)
        if isinstance(value, torch.Tensor):
            return value
    values = output.values() if isinstance(output, Mapping) else output if isinstance(output, (tuple, list)) else ()
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"cannot find a tensor in the model's output of type {type(output).__name__}")


def _call(model: nn.Module, inputs: Any) -> torch.Tensor:
    if isinstance(inputs, Mapping):
        return main_tensor(model(**inputs))
    if isinstance(inputs, (tuple, list)):
        return main_tensor(model(*inputs))
    return main_tensor(model(inputs))


def _lora_hook(module: nn.Module, kind: str, a: torch.Tensor, b: torch.Tensor, bias):
    def hook(_module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0].to(a.dtype)
        if kind == "conv2d":
            z = F.conv2d(x, a, None, module.stride, module.padding)
            return output + F.conv2d(z, b, bias).to(output.dtype)
        return output + F.linear(F.linear(x, a), b, bias).to(output.dtype)
    return hook


def replay_difference(vf: "VectorFitModel", tensors: Mapping[str, torch.Tensor], kinds: Mapping[str, str],
                      heads: list[str], sample_inputs: Any) -> float:
    """The largest absolute difference between ``vf`` and a base copy carrying the written ``tensors`` (PEFT keys;
    ``kinds``: module name -> ``linear``, ``conv1d`` or ``conv2d``) on ``sample_inputs`` (a dict of keyword
    arguments, a tuple of positional ones, or one tensor)."""
    was_training = vf.training
    base = copy.deepcopy(vf).unload()  # U diag(s0) V^T back in plain layers: the base model
    base.eval()
    vf.eval()
    try:
        for head in heads:
            state = {k[len(PREFIX) + len(head) + 1:]: v for k, v in tensors.items()
                     if k.startswith(f"{PREFIX}{head}.")}
            base.get_submodule(head).load_state_dict(state)
        for name, kind in kinds.items():
            module = base.get_submodule(name)
            a, b = tensors[f"{PREFIX}{name}.lora_A.weight"], tensors[f"{PREFIX}{name}.lora_B.weight"]
            bias = tensors.get(f"{PREFIX}{name}.lora_B.bias")
            module.register_forward_hook(_lora_hook(module, kind, a, b, bias))
        with torch.no_grad():
            ours = _call(vf, sample_inputs)
            theirs = _call(base, sample_inputs)
        return float((ours.float() - theirs.float()).abs().max())
    finally:
        vf.train(was_training)
