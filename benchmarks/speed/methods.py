"""The methods the speed benchmark compares, each a function that prepares a model for training.

Every setup returns a :class:`Prepared`: the module to call, the parameters to optimise and an optional
hook run after ``backward()`` (AVF's freezer). LoRA and BitFit target the same six roles as VectorFit.
:data:`METHODS` prepares BERT-shaped sequence classifiers (``run.py``); :data:`DECODER_METHODS` prepares
Llama-shaped causal language models, without a head (``decoder.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

ROLE_REGEX = r".*encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"
#: Llama's six roles: q, k, v, o, f1 (gate_proj and up_proj), f2 (down_proj)
LLAMA_ROLE_REGEX = r".*layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


@dataclass
class Prepared:
    module: nn.Module
    params: list
    after_backward: Optional[Callable[[int], None]] = None
    save: Optional[Callable[[str], None]] = None
    merge: Optional[Callable[[], nn.Module]] = None
    notes: dict = field(default_factory=dict)


def _vf(model, heads=("classifier",), **config) -> Prepared:
    from vf_core import VectorFitConfig, get_vectorfit_model

    vf = get_vectorfit_model(model, VectorFitConfig(modules_to_save=list(heads), **config))
    return Prepared(vf, [p for p in vf.parameters() if p.requires_grad], save=vf.save_pretrained,
                    merge=vf.merge_and_unload)


def vectorfit(model, heads=("classifier",)) -> Prepared:
    prepared = _vf(model, heads)
    try:
        from vf_avf import AVFConfig, VectorFreezer

        freezer = VectorFreezer(prepared.module, AVFConfig(policy="topk_ema", t_i=1, t_f=1, n_f=1000, k=5))
        prepared.after_backward = freezer.step
        prepared.notes["avf"] = "topk_ema k=5, an AVF step every step"
    except ImportError:  # vf-avf not installed: VectorFit without AVF
        prepared.notes["avf"] = "vf-avf not installed"
    return prepared


def vectorfit_bias(model) -> Prepared:
    """VectorFit with only the biases training (``train_sigma=False``): the layers run one dense product."""
    return _vf(model, train_sigma=False)


def svfit(model) -> Prepared:
    return _vf(model, method="svfit", rank=16)


def svft(model) -> Prepared:
    return _vf(model, method="svft", pattern="banded", off_diagonals=2)


def bitfit(model) -> Prepared:
    for name, p in model.named_parameters():
        p.requires_grad_(name.endswith(".bias") or name.startswith("classifier."))
    return Prepared(model, [p for p in model.parameters() if p.requires_grad],
                    save=lambda d: torch.save({n: p for n, p in model.named_parameters() if p.requires_grad},
                                              f"{d}/bitfit.pt"))


def full(model) -> Prepared:
    model.requires_grad_(True)
    return Prepared(model, list(model.parameters()), save=lambda d: model.save_pretrained(d))


def _lora(model, r: int, target: str = ROLE_REGEX, heads=("classifier",), task_type=None) -> Prepared:
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=target,
                                                  modules_to_save=list(heads) or None, task_type=task_type))
    return Prepared(peft_model, [p for p in peft_model.parameters() if p.requires_grad],
                    save=peft_model.save_pretrained, merge=peft_model.merge_and_unload)


def lora_r1(model) -> Prepared:
    return _lora(model, 1)


def lora_r8(model) -> Prepared:
    return _lora(model, 8)


def eigentune_r16(model) -> Prepared:
    from eigentune import EigenTuneConfig, get_eigentune_model

    et = get_eigentune_model(model, EigenTuneConfig(rank=16, method="diagonal", target_modules=ROLE_REGEX))
    head = model.classifier
    head.requires_grad_(True)
    return Prepared(et, [p for p in et.parameters() if p.requires_grad])


METHODS: dict[str, Callable[[nn.Module], Prepared]] = {
    "lora_r1": lora_r1,
    "vectorfit": vectorfit,
    "svfit_r16": svfit,
    "svft_banded_d2": svft,
    "bitfit": bitfit,
    "vectorfit_bias": vectorfit_bias,
    "full": full,
    "lora_r8": lora_r8,
    "eigentune_r16": eigentune_r16,
}


def adapted_modules(module: nn.Module) -> int:
    """How many layers carry an adapter: LoRA's ``lora_A`` or VectorFit's singular values."""
    lora = {n for n, _ in module.named_modules() if n.endswith(".lora_A")}
    sigma = {n.split(".parts.")[0] for n, _ in module.named_parameters() if n.endswith(".sigma")}
    return len(lora) + len(sigma)


def _counted(prepared: Prepared) -> Prepared:
    prepared.notes["adapted_modules"] = adapted_modules(prepared.module)
    return prepared


def decoder_vectorfit(model) -> Prepared:
    """VectorFit with AVF on a causal LM: no new head (``modules_to_save=[]``); the roles from the llama family."""
    return _counted(vectorfit(model, heads=()))


def decoder_lora_r1(model) -> Prepared:
    return _counted(_lora(model, 1, target=LLAMA_ROLE_REGEX, heads=(), task_type="CAUSAL_LM"))


def decoder_lora_r8(model) -> Prepared:
    return _counted(_lora(model, 8, target=LLAMA_ROLE_REGEX, heads=(), task_type="CAUSAL_LM"))


DECODER_METHODS: dict[str, Callable[[nn.Module], Prepared]] = {
    "lora_r1": decoder_lora_r1,
    "vectorfit": decoder_vectorfit,
    "lora_r8": decoder_lora_r8,
}
