"""``none``: never freeze anything (the paper's "VectorFit (no AVF)").

Paper: https://arxiv.org/abs/2503.19530. Useful to keep one training script and switch AVF off by config.

Example:
    >>> from vf_avf import AVFConfig
    >>> type(AVFConfig(policy="none")).__name__
    'NoFreezingConfig'
"""

from __future__ import annotations

from typing import Literal, Optional

from vf_core.vectors import VectorRegistry

from ..config import AVFConfig
from .base import Decision, FreezingPolicy

__all__ = ["NoFreezingConfig", "NoFreezingPolicy"]


class NoFreezingConfig(AVFConfig):
    """No freezing (``policy="none"``); no other field."""

    policy: Literal["none"] = "none"


class NoFreezingPolicy(FreezingPolicy):
    """Every vector trains at every step."""

    def decide(self, step: int, vectors: VectorRegistry, frozen: frozenset) -> Optional[Decision]:
        return None
