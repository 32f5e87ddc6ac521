"""`FreezingPolicy`: what every freezing policy implements, and `ScheduledPolicy` for the AVF-step kind.

Paper: https://arxiv.org/abs/2503.19530 (AVF, method spec section 1.2). A policy only *decides*: at each
optimizer step the :class:`~vf_avf.VectorFreezer` calls :meth:`FreezingPolicy.decide` with the step, the
registry of trainable vectors and the current frozen set, and the policy answers with a :class:`Decision`
(a new frozen set, the scores it ranked by, whether to record it in ``history``) or ``None`` (no change).
The freezer applies the decision, keeps ``history``, and saves the policy's :meth:`~FreezingPolicy.state_dict`.

Example (a policy that freezes every bias from step 10 on):
    >>> from typing import Literal
    >>> from vf_avf import AVFConfig, Decision, FreezingPolicy
    >>> class FreezeBiasesConfig(AVFConfig):
    ...     policy: Literal["freeze_biases"] = "freeze_biases"
    >>> class FreezeBiases(FreezingPolicy):
    ...     def decide(self, step, vectors, frozen):
    ...         if step == 10:
    ...             return Decision(frozenset(v.name for v in vectors if v.kind == "bias"))
    ...         return None
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from vf_core.errors import ConfigError
from vf_core.vectors import VectorRegistry

from ..config import AVFConfig, ScheduledConfig
from ..schedule import Schedule

__all__ = ["Decision", "FreezingPolicy", "ScheduledPolicy", "check_k", "rng_state", "set_rng_state"]


@dataclass(frozen=True)
class Decision:
    """A policy's answer at one step.

    Attributes:
        frozen: the names of the vectors frozen from this step on (until the next decision).
        scores: the per-vector values the policy decided on (``S'`` for ``topk_ema``), kept in ``history``.
        record: whether the freezer appends this decision to ``history`` (the AVF steps of scheduled
            policies do; per-step policies such as ``dropout`` usually do not).
    """

    frozen: frozenset
    scores: Optional[Mapping[str, float]] = None
    record: bool = True


class FreezingPolicy(ABC):
    """Base class of freezing policies. Subclass it, implement :meth:`decide`, and register it (a
    :class:`~vf_avf.PolicyRecord` from a ``vectorfit_freezing_policies`` hook).

    Args:
        config: the policy's config (a subclass of :class:`~vf_avf.AVFConfig`).
        vectors: the registry of trainable vectors it decides over (fixed for the policy's life).
        total_steps: the run's number of optimizer steps, if known (fractions in schedules need it).

    A policy must be deterministic given its config, its state and the vectors' values, so that resuming
    from :meth:`state_dict` and every data-parallel rank reach the same decisions.
    """

    def __init__(self, config: AVFConfig, vectors: VectorRegistry, total_steps: Optional[int] = None) -> None:
        self.config = config
        self.names: tuple[str, ...] = tuple(vectors.names())
        self.total_steps = total_steps

    @abstractmethod
    def decide(self, step: int, vectors: VectorRegistry, frozen: frozenset) -> Optional[Decision]:
        """Called once per optimizer step, after ``backward()`` and before ``optimizer.step()``.

        :param step: optimizer steps already taken (0 for the first).
        :param vectors: the registry; read values, never modify them.
        :param frozen: the currently frozen names.
        :return: a :class:`Decision` to change (or confirm) the frozen set, or None to keep it.
        """

    @property
    def avf_steps(self) -> tuple[int, ...]:
        """The steps at which the policy acts on a schedule (empty when it has none)."""
        return ()

    def state_dict(self) -> dict[str, Any]:
        """The policy's mutable state, JSON-serialisable (str, int, float, bool, None, lists, dicts)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


def check_k(k: int, vectors: VectorRegistry) -> None:
    """Raise :class:`~vf_core.ConfigError` naming ``k`` if it exceeds the number of vectors."""
    if k > len(vectors):
        raise ConfigError(f"invalid freezing policy:\n  k: cannot freeze k={k} vectors, the model has only"
                          f" {len(vectors)} trainable vectors; lower k", fields=("k",))


class ScheduledPolicy(FreezingPolicy):
    """A policy that decides at the AVF steps of a :class:`~vf_avf.ScheduledConfig` and nowhere else.

    Subclasses implement :meth:`choose` (and may override :meth:`observe`, called at every step first).
    After the last AVF step the last frozen set stays, unless ``unfreeze_after_last`` is set: then every
    vector trains again from step ``t_i + n_f * t_f``.
    """

    config: ScheduledConfig

    def __init__(self, config: ScheduledConfig, vectors: VectorRegistry, total_steps: Optional[int] = None) -> None:
        super().__init__(config, vectors, total_steps)
        self.schedule = Schedule.from_config(config, total_steps)

    @property
    def avf_steps(self) -> tuple[int, ...]:
        return self.schedule.steps

    def observe(self, step: int, vectors: VectorRegistry) -> None:
        """Called at every step before any decision (``topk_ema`` updates its EMA here if asked to)."""

    @abstractmethod
    def choose(self, step: int, vectors: VectorRegistry, frozen: frozenset) -> Decision:
        """The decision at an AVF step."""

    def decide(self, step: int, vectors: VectorRegistry, frozen: frozenset) -> Optional[Decision]:
        self.observe(step, vectors)
        if step in self.schedule:
            return self.choose(step, vectors, frozen)
        if self.config.unfreeze_after_last and step >= self.schedule.end and frozen:
            return Decision(frozenset())
        return None


def rng_state(rng: random.Random) -> dict[str, Any]:
    """A JSON-serialisable copy of a ``random.Random`` state (exact: ints only)."""
    version, internal, gauss_next = rng.getstate()
    return {"version": version, "internal": list(internal), "gauss_next": gauss_next}


def set_rng_state(rng: random.Random, state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    rng.setstate((state["version"], tuple(state["internal"]), state["gauss_next"]))
