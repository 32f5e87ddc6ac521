"""``dropout``: at every step, each vector is frozen with probability ``p`` (seeded); a baseline for AVF.

Paper: https://arxiv.org/abs/2503.19530 (method spec section 1.2: the paper reports that ordinary dropout on
singular values hurts badly; this policy drops whole vectors' updates instead, at every optimizer step).

Example:
    >>> from vf_avf import AVFConfig
    >>> AVFConfig(policy="dropout", p=0.2, seed=1).record_history
    False
"""

from __future__ import annotations

import random
from typing import Any, Literal, Mapping, Optional

from pydantic import Field

from vf_core.vectors import VectorRegistry

from ..config import AVFConfig
from ..strength import strengths
from .base import Decision, FreezingPolicy, rng_state, set_rng_state

__all__ = ["DropoutConfig", "DropoutPolicy"]


class DropoutConfig(AVFConfig):
    """Freeze each vector with probability ``p`` at every step (``policy="dropout"``).

    Args:
        p: the probability that a vector is frozen at a step, in ``[0, 1]``.
        seed: seeds the draws (``random.Random(seed)``, one draw per vector per step in registry order).
        record_history: append every step's decision (with each vector's ``S``) to ``history``; off by
            default, since it grows by one entry per step.
    """

    policy: Literal["dropout"] = "dropout"
    p: float = Field(default=0.1, ge=0.0, le=1.0)
    seed: int = 0
    record_history: bool = False


class DropoutPolicy(FreezingPolicy):
    """A fresh random frozen set at every step."""

    config: DropoutConfig

    def __init__(self, config: DropoutConfig, vectors: VectorRegistry, total_steps: Optional[int] = None) -> None:
        super().__init__(config, vectors, total_steps)
        self.rng = random.Random(config.seed)

    def decide(self, step: int, vectors: VectorRegistry, frozen: frozenset) -> Decision:
        p, draw = self.config.p, self.rng.random
        chosen = frozenset(name for name in self.names if draw() < p)
        record = self.config.record_history
        return Decision(chosen, scores=strengths(vectors) if record else None, record=record)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state(self.rng)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        set_rng_state(self.rng, state["rng"])
