"""Freezing policies: the base class and the built-ins (``topk_ema``, ``random``, ``dropout``, ``none``).

Paper: https://arxiv.org/abs/2503.19530. Each built-in is registered through vf-avf's own
``vectorfit_freezing_policies`` hook (:mod:`vf_avf.plugin`), the hook any third-party package uses.

Example:
    >>> from vf_avf.policies import BUILTIN_POLICIES
    >>> [record.name for record in BUILTIN_POLICIES]
    ['topk_ema', 'random', 'dropout', 'none']
"""

from __future__ import annotations

from ..registry import PolicyRecord
from .base import Decision, FreezingPolicy, ScheduledPolicy, check_k
from .dropout import DropoutConfig, DropoutPolicy
from .none import NoFreezingConfig, NoFreezingPolicy
from .random import RandomConfig, RandomPolicy
from .topk_ema import TopKEMAConfig, TopKEMAPolicy

__all__ = [
    "BUILTIN_POLICIES",
    "Decision",
    "FreezingPolicy",
    "ScheduledPolicy",
    "check_k",
    "TopKEMAConfig",
    "TopKEMAPolicy",
    "RandomConfig",
    "RandomPolicy",
    "DropoutConfig",
    "DropoutPolicy",
    "NoFreezingConfig",
    "NoFreezingPolicy",
]

#: the records vf-avf's plugin returns from ``vectorfit_freezing_policies``
BUILTIN_POLICIES: tuple[PolicyRecord, ...] = (
    PolicyRecord("topk_ema", TopKEMAConfig, TopKEMAPolicy,
                 "the paper's AVF: freeze the k vectors with the highest EMA of training strength at each AVF step"),
    PolicyRecord("random", RandomConfig, RandomPolicy, "freeze k random vectors (seeded) at each AVF step"),
    PolicyRecord("dropout", DropoutConfig, DropoutPolicy, "freeze each vector with probability p at every step"),
    PolicyRecord("none", NoFreezingConfig, NoFreezingPolicy, "never freeze (VectorFit without AVF)"),
)
