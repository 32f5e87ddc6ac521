"""``random``: freeze ``k`` vectors chosen at random (seeded) at each AVF step; a baseline for AVF.

Paper: https://arxiv.org/abs/2503.19530 (method spec section 1.2: AVF acts like a regulariser; this baseline
freezes as many vectors on the same schedule, ignoring their training strength).

Example:
    >>> from vf_avf import AVFConfig
    >>> AVFConfig(policy="random", t_i=100, t_f=10, n_f=5, k=3, seed=7).seed
    7
"""

from __future__ import annotations

import random
from typing import Any, Literal, Mapping, Optional

from pydantic import Field

from vf_core.vectors import VectorRegistry

from ..config import ScheduledConfig
from ..strength import strengths
from .base import Decision, ScheduledPolicy, check_k, rng_state, set_rng_state

__all__ = ["RandomConfig", "RandomPolicy"]


class RandomConfig(ScheduledConfig):
    """Freeze ``k`` random vectors at each AVF step (``policy="random"``).

    Args:
        t_i, t_f, n_f, unfreeze_after_last: the schedule, as for ``topk_ema``.
        k: how many vectors are frozen at each AVF step.
        seed: seeds the choice (``random.Random(seed)``); the same on every data-parallel rank.
    """

    policy: Literal["random"] = "random"
    k: int = Field(default=5, ge=1)
    seed: int = 0


class RandomPolicy(ScheduledPolicy):
    """``k`` distinct vectors drawn uniformly at each AVF step; ``history`` keeps their strengths ``S``."""

    config: RandomConfig

    def __init__(self, config: RandomConfig, vectors: VectorRegistry, total_steps: Optional[int] = None) -> None:
        super().__init__(config, vectors, total_steps)
        check_k(config.k, vectors)
        self.rng = random.Random(config.seed)

    def choose(self, step: int, vectors: VectorRegistry, frozen: frozenset) -> Decision:
        return Decision(frozenset(self.rng.sample(self.names, self.config.k)), scores=strengths(vectors))

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state(self.rng)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        set_rng_state(self.rng, state["rng"])
