"""Tiny models and helpers shared by vf-avf's tests (a unique module name: pytest puts every tests/ folder on
sys.path, and vf-core has its own conftest)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from vf_core import VectorFitConfig, VectorFitModel, get_vectorfit_model
from vf_core.testing.tiny import TINY_ROLES, TinyNet
from vf_core.vectors import TrainableVector, VectorRegistry

ROLES = TINY_ROLES


def tiny_vf(seed: int = 0) -> VectorFitModel:
    """A VectorFit model with 2 blocks x 6 roles x (sigma, bias) = 24 vectors, plus a trained head."""
    torch.manual_seed(seed)
    return get_vectorfit_model(TinyNet(), VectorFitConfig(target_modules=ROLES, modules_to_save=["head"]))


def batch(step: int, rank: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 * rank + step)
    return torch.randn(4, 5, 8, generator=gen), torch.randint(0, 3, (4,), generator=gen)


def loss_of(model: nn.Module, step: int, rank: int = 0) -> torch.Tensor:
    x, y = batch(step, rank)
    return nn.functional.cross_entropy(model(x), y)


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def constant_registry(names: str = "abcd", dim: int = 4) -> VectorRegistry:
    """Vectors whose values the test sets by hand: each starts at zeros, so S = |value| for a constant fill."""
    return VectorRegistry(TrainableVector(n, i, "q", "bias", nn.Parameter(torch.zeros(dim)), n)
                          for i, n in enumerate(names))


def set_strengths(registry: VectorRegistry, values: dict[str, float]) -> None:
    with torch.no_grad():
        for name, value in values.items():
            registry[name].parameter.fill_(value)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def optimizer_state(opt: torch.optim.Optimizer, param: nn.Parameter) -> Optional[dict]:
    state = opt.state.get(param)
    return None if state is None else {k: (v.clone() if torch.is_tensor(v) else v) for k, v in state.items()}
