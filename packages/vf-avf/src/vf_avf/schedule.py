"""When a scheduled policy acts: ``n_f`` AVF steps, the first at ``t_i``, then every ``t_f`` steps.

Paper: https://arxiv.org/abs/2503.19530 (AVF, method spec section 1.2). Steps count optimizer steps already
taken, 0 for the first; the freezer's call with ``global_step == t_i`` is the first AVF step.

Example:
    >>> from vf_avf.schedule import Schedule
    >>> Schedule.resolve(t_i=0.4, t_f=0.05, n_f=5, total_steps=1000).steps
    (400, 450, 500, 550, 600)
    >>> 450 in Schedule(400, 50, 5), 451 in Schedule(400, 50, 5)
    (True, False)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Union

from vf_core.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .config import ScheduledConfig

__all__ = ["Schedule", "to_steps"]


def to_steps(field: str, value: Union[int, float], total_steps: Optional[int], *, minimum: int) -> int:
    """A number of steps from ``value``: an ``int`` as is, a ``float`` as a fraction of ``total_steps``.

    Fractions round to the nearest step (halves up): ``0.29`` of 100 steps is 29, not 28.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        steps = value
    else:
        if total_steps is None:
            raise ConfigError(
                f"invalid schedule:\n  {field}: {value!r} is a fraction of the run, so the number of training steps"
                f" must be known: pass total_steps= to VectorFreezer (the Trainer callback passes it itself),"
                f" or give {field} as a number of steps (an int)", fields=(field,))
        steps = math.floor(value * total_steps + 0.5)
    if steps < minimum:
        raise ConfigError(f"invalid schedule:\n  {field}: {value!r} of {total_steps} steps is {steps} steps; at least"
                          f" {minimum} needed (give more total steps or a larger {field})", fields=(field,))
    return steps


@dataclass(frozen=True)
class Schedule:
    """AVF steps ``start, start + every, ..., start + (count - 1) * every`` (all in optimizer steps)."""

    start: int
    every: int
    count: int

    def __post_init__(self) -> None:
        for name, value, low in (("t_i", self.start, 0), ("t_f", self.every, 1), ("n_f", self.count, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"invalid schedule:\n  {name}: must be an int >= {low} (got {value!r})",
                                  fields=(name,))

    @classmethod
    def resolve(cls, t_i: Union[int, float], t_f: Union[int, float], n_f: int,
                total_steps: Optional[int] = None) -> "Schedule":
        """The schedule in steps; floats are fractions of ``total_steps``. Warns if it overruns the run."""
        if total_steps is not None and (not isinstance(total_steps, int) or total_steps < 1):
            raise ConfigError(f"invalid schedule:\n  total_steps: must be an int >= 1 (got {total_steps!r})",
                              fields=("total_steps",))
        schedule = cls(to_steps("t_i", t_i, total_steps, minimum=0), to_steps("t_f", t_f, total_steps, minimum=1),
                       n_f)
        if total_steps is not None and schedule.last >= total_steps:
            missed = [s for s in schedule.steps if s >= total_steps]
            warnings.warn(f"AVF schedule {schedule.steps} overruns the run of {total_steps} steps (0 to"
                          f" {total_steps - 1}): the AVF steps {missed} will never happen; lower t_i, t_f or n_f",
                          stacklevel=3)
        return schedule

    @classmethod
    def from_config(cls, config: "ScheduledConfig", total_steps: Optional[int] = None) -> "Schedule":
        return cls.resolve(config.t_i, config.t_f, config.n_f, total_steps)

    @property
    def steps(self) -> tuple[int, ...]:
        return tuple(self.start + i * self.every for i in range(self.count))

    @property
    def last(self) -> int:
        """The last AVF step."""
        return self.start + (self.count - 1) * self.every

    @property
    def end(self) -> int:
        """Where the next AVF step would be after the last one (``t_i + n_f * t_f``)."""
        return self.start + self.count * self.every

    def index(self, step: int) -> Optional[int]:
        """The 0-based number of the AVF step at ``step``, or None if ``step`` is not an AVF step."""
        offset = step - self.start
        if offset < 0 or offset % self.every or offset // self.every >= self.count:
            return None
        return offset // self.every

    def __contains__(self, step: object) -> bool:
        return isinstance(step, int) and self.index(step) is not None
