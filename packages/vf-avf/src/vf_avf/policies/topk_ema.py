"""``topk_ema``: the paper's Adaptive Vector Freezing (AVF).

Paper: Hegde, Kaur, Tiwari, "VectorFit", https://arxiv.org/abs/2503.19530 (method spec section 1.2).

* Training strength ``S_v(t) = mean |v_t - v_0|``.
* Smoothed strength ``S'_v(t) = beta * S'_v(t - t_f) + (1 - beta) * S_v(t)``, ``S'_v`` starting at 0,
  updated at AVF steps only **(choice)**; ``ema_every_step=True`` updates it at every step instead.
* AVF steps ``t_i, t_i + t_f, ..., t_i + (n_f - 1) t_f``; at each, exactly the ``k`` vectors with the highest
  ``S'`` are frozen and every other vector trains (ties go to the earlier vector in registry order). Nothing
  changes between AVF steps; a vector frozen at one AVF step trains again at the next if others overtake it.
* After the last AVF step its frozen set stays until the end **(choice)**; ``unfreeze_after_last=True``
  unfreezes everything from step ``t_i + n_f * t_f``.

Example:
    >>> import torch
    >>> from vf_core import VectorFitConfig, get_vectorfit_model
    >>> from vf_avf import AVFConfig, VectorFreezer
    >>> vf = get_vectorfit_model(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)),
    ...                          VectorFitConfig(target_modules=["0", "1"]))
    >>> freezer = VectorFreezer(vf, AVFConfig(policy="topk_ema", t_i=2, t_f=2, n_f=2, k=1))
    >>> freezer.policy.avf_steps
    (2, 4)
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Optional

from pydantic import Field

from vf_core.vectors import VectorRegistry

from ..config import ScheduledConfig
from ..strength import strengths, top_k
from .base import Decision, ScheduledPolicy, check_k

__all__ = ["TopKEMAConfig", "TopKEMAPolicy"]


class TopKEMAConfig(ScheduledConfig):
    """The paper's AVF (``policy="topk_ema"``).

    Args:
        t_i, t_f, n_f, unfreeze_after_last: the schedule (:class:`~vf_avf.ScheduledConfig`); steps or
            fractions of the run (default: from 40% of the run, every 5%, 5 times).
        k: how many vectors are frozen at each AVF step (paper: ``k <= 5``; default 5).
        beta: the EMA factor of the smoothed strength ``S'`` (paper: 0.99), in ``[0, 1)``.
        ema_every_step: **(choice)** update ``S'`` at every step rather than at AVF steps only.

    Example:
        >>> from vf_avf import AVFConfig
        >>> AVFConfig(t_i=800, t_f=70, n_f=27, k=5).beta      # the paper's RTE setting
        0.99
    """

    policy: Literal["topk_ema"] = "topk_ema"
    k: int = Field(default=5, ge=1)
    beta: float = Field(default=0.99, ge=0.0, lt=1.0)
    ema_every_step: bool = False


class TopKEMAPolicy(ScheduledPolicy):
    """Freezes the ``k`` vectors with the highest smoothed training strength ``S'`` at each AVF step."""

    config: TopKEMAConfig

    def __init__(self, config: TopKEMAConfig, vectors: VectorRegistry, total_steps: Optional[int] = None) -> None:
        super().__init__(config, vectors, total_steps)
        check_k(config.k, vectors)
        self.ema: dict[str, float] = {name: 0.0 for name in self.names}
        self.updates = 0

    def _update(self, vectors: VectorRegistry) -> None:
        beta = self.config.beta
        current = strengths(vectors)
        for name in self.names:
            self.ema[name] = beta * self.ema[name] + (1.0 - beta) * current[name]
        self.updates += 1

    def observe(self, step: int, vectors: VectorRegistry) -> None:
        if self.config.ema_every_step:
            self._update(vectors)

    def choose(self, step: int, vectors: VectorRegistry, frozen: frozenset) -> Decision:
        if not self.config.ema_every_step:
            self._update(vectors)
        return Decision(frozenset(top_k(self.ema, self.config.k)), scores=dict(self.ema))

    def state_dict(self) -> dict[str, Any]:
        return {"ema": [self.ema[name] for name in self.names], "updates": self.updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        ema = list(state["ema"])
        if len(ema) != len(self.names):
            raise ValueError(f"topk_ema state holds {len(ema)} EMA values for {len(self.names)} vectors")
        self.ema = {name: float(value) for name, value in zip(self.names, ema)}
        self.updates = int(state["updates"])
