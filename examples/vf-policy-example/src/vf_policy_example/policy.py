"""``least_trained``: at each AVF step, freeze the ``k`` vectors with the lowest training strength."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from vf_avf import Decision, ScheduledConfig, ScheduledPolicy, strengths
from vf_avf.strength import bottom_k


class LeastTrainedConfig(ScheduledConfig):
    """Inherits the schedule fields ``t_i, t_f, n_f, unfreeze_after_last`` (steps or fractions of the run).

    Args:
        k: how many vectors to freeze at each AVF step.
        kinds: only vectors of these kinds may be frozen (default: any kind).
    """

    policy: Literal["least_trained"] = "least_trained"
    k: int = Field(default=3, ge=1)
    kinds: Optional[list[Literal["sigma", "bias", "m"]]] = None


class LeastTrainedPolicy(ScheduledPolicy):
    """ScheduledPolicy calls ``choose`` at the AVF steps and nowhere else."""

    config: LeastTrainedConfig

    def choose(self, step, vectors, frozen):
        scores = strengths(vectors)  # S_v = mean |v - v0| of every vector
        kinds = self.config.kinds
        candidates = {name: s for name, s in scores.items() if kinds is None or vectors[name].kind in kinds}
        return Decision(frozenset(bottom_k(candidates, self.config.k)), scores=scores)
