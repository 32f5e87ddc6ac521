"""The methods the speed benchmark compares, each a function that prepares a model for training.

Every setup returns a :class:`Prepared`: the module to call, the parameters to optimise and an optional
hook run after ``backward()`` (AVF's freezer). LoRA and BitFit target the same six roles as VectorFit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

ROLE_REGEX = r".*encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"


@dataclass
class Prepared:
    module: nn.Module
    params: list
    after_backward: Optional[Callable[[int], None]] = None
    save: Optional[Callable[[str], None]] = None
    merge: Optional[Callable[[], nn.Module]] = None
    notes: dict = field(default_factory=dict)


def _vf(model, **config) -> Prepared:
    from vf_core import VectorFitConfig, get_vectorfit_model

    vf = get_vectorfit_model(model, VectorFitConfig(modules_to_save=["classifier"], **config))
    return Prepared(vf, [p for p in vf.parameters() if p.requires_grad], save=vf.save_pretrained,
                    merge=vf.merge_and_unload)


def vectorfit(model) -> Prepared:
    prepared = _vf(model)
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


def _lora(model, r: int) -> Prepared:
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0,
                                                  target_modules=ROLE_REGEX, modules_to_save=["classifier"]))
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
