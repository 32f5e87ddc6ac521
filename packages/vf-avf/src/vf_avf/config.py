"""`AVFConfig`: the configuration of a freezing policy, discriminated by ``policy`` at run time.

Paper: VectorFit's Adaptive Vector Freezing, https://arxiv.org/abs/2503.19530 (method spec section 1.2).

Every policy has its own config class, a subclass of :class:`AVFConfig` whose ``policy`` field is a
``Literal`` of its name. ``AVFConfig(policy="name", ...)`` and ``AVFConfig.model_validate({...})`` look the
name up among the policies the installed plugins register (``vectorfit_freezing_policies`` hook) and return an
instance of that policy's class, so a third-party policy is selected exactly like a built-in one. An unknown
name raises :class:`~vf_core.PolicyNotFoundError` listing the installed policies; an unknown or invalid field
raises :class:`~vf_core.ConfigError` naming it. A field typed ``AVFConfig`` in another pydantic model
resolves the same way.

Schedules (:class:`ScheduledConfig`) take steps (an ``int``) or fractions of the run (a ``float`` in
``[0, 1]``), resolved once the number of training steps is known (:mod:`vf_avf.schedule`).

Example:
    >>> from vf_avf import AVFConfig
    >>> cfg = AVFConfig(t_i=0.4, t_f=0.05, n_f=5, k=5)      # policy="topk_ema", the paper's AVF
    >>> type(cfg).__name__, cfg.beta
    ('TopKEMAConfig', 0.99)
    >>> AVFConfig.model_validate({"policy": "dropout", "p": 0.1, "seed": 3}).p
    0.1
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Union

from pydantic import Field, field_validator
from pydantic_core import core_schema

from vf_core.errors import ConfigError
from vf_core.strict import StrictModel

from .registry import get_policy

__all__ = ["AVFConfig", "ScheduledConfig", "StepsOrFraction", "DEFAULT_POLICY", "resolve_config"]

#: the policy ``AVFConfig()`` builds when ``policy`` is not given: the paper's AVF
DEFAULT_POLICY = "topk_ema"

#: a number of steps (``int``) or a fraction of the run's total steps (``float`` in ``[0, 1]``)
StepsOrFraction = Union[int, float]


def _policy_name(data: Any) -> Any:
    if isinstance(data, AVFConfig):
        return data.policy
    if isinstance(data, dict):
        return data.get("policy", DEFAULT_POLICY)
    raise ConfigError(f"invalid AVFConfig: expected a mapping of fields or an AVFConfig, got {type(data).__name__}",
                      fields=("<config>",))


def _config_class(name: Any) -> type["AVFConfig"]:
    if not isinstance(name, str):
        raise ConfigError(f"invalid AVFConfig:\n  policy: expected a policy name (a string), got {name!r}",
                          fields=("policy",))
    return get_policy(name).config_class


def resolve_config(data: Any) -> "AVFConfig":
    """An :class:`AVFConfig` instance of the right policy class from a mapping, a config, or None (defaults)."""
    if data is None:
        data = {}
    if isinstance(data, AVFConfig) and type(data) is not AVFConfig:
        return data
    return _config_class(_policy_name(data)).model_validate(data)


class AVFConfig(StrictModel):
    """Base of every freezing policy's configuration, and the entry point that resolves ``policy``.

    ``AVFConfig(**fields)`` and ``AVFConfig.model_validate(mapping)`` return an instance of the class that the
    policy named by ``policy`` registered (default ``"topk_ema"``). Built-in policies and their fields:

    * ``"topk_ema"`` (:class:`~vf_avf.policies.topk_ema.TopKEMAConfig`), the paper's AVF: ``t_i, t_f, n_f, k,
      beta`` and the options ``ema_every_step``, ``unfreeze_after_last``;
    * ``"random"`` (:class:`~vf_avf.policies.random.RandomConfig`): ``t_i, t_f, n_f, k, seed,
      unfreeze_after_last``;
    * ``"dropout"`` (:class:`~vf_avf.policies.dropout.DropoutConfig`): ``p, seed, record_history``;
    * ``"none"`` (:class:`~vf_avf.policies.none.NoFreezingConfig`): no field.

    A third-party policy subclasses this class (or :class:`ScheduledConfig`) with
    ``policy: Literal["its_name"] = "its_name"`` plus its own fields; see ``docs/freezing-policies.md``.

    Args:
        policy: the name of a registered freezing policy (:func:`vf_avf.list_policies`).

    Example:
        >>> from vf_avf import AVFConfig
        >>> AVFConfig(policy="random", t_i=100, t_f=10, n_f=3, k=2, seed=1).policy
        'random'
    """

    #: marks the dispatching root; subclasses validate as ordinary pydantic models
    __vf_dispatch_root__: ClassVar[bool] = True

    policy: str = DEFAULT_POLICY

    def __new__(cls, *args: Any, **data: Any) -> "AVFConfig":
        if cls is AVFConfig:
            # Python then runs the chosen subclass's __init__ on these same fields
            return super().__new__(_config_class(data.get("policy", DEFAULT_POLICY)))
        return super().__new__(cls)

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> "AVFConfig":  # type: ignore[override]
        if cls is AVFConfig:
            if isinstance(obj, AVFConfig) and type(obj) is not AVFConfig:
                return obj
            return _config_class(_policy_name(obj)).model_validate(obj, *args, **kwargs)
        if isinstance(obj, dict) and not args and not kwargs:
            # through __init__, whose ConfigError names the field (StrictModel.model_validate would wrap it twice)
            return cls(**obj)
        return super().model_validate(obj, *args, **kwargs)

    @classmethod
    def model_validate_json(cls, json_data: Union[str, bytes], *args: Any, **kwargs: Any) -> "AVFConfig":
        import json

        try:
            data = json.loads(json_data)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"invalid {cls.__name__}: not JSON ({exc})", fields=("<config>",)) from None
        return cls.model_validate(data)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        if not source.__dict__.get("__vf_dispatch_root__"):
            return handler(source)

        # a field annotated ``AVFConfig`` in another model resolves ``policy`` like AVFConfig(...) does
        def validate(value: Any) -> "AVFConfig":
            try:
                return resolve_config(value)
            except ConfigError as exc:
                raise ValueError(str(exc).replace("\n", " ")) from None

        return core_schema.no_info_plain_validator_function(
            validate, serialization=core_schema.plain_serializer_function_ser_schema(lambda v: v.model_dump()))


def _check_steps_or_fraction(name: str, value: Any, *, allow_zero: bool) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a number of steps (int) or a fraction of the run (float), got {value!r}")
    if isinstance(value, int):
        if value < (0 if allow_zero else 1):
            raise ValueError(f"a number of steps must be {'>= 0' if allow_zero else '>= 1'}")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0.0 or value > 1.0 or (value == 0.0 and not allow_zero) \
                or (value == 1.0 and allow_zero):
            bounds = "[0, 1)" if allow_zero else "(0, 1]"
            example = int(value) if math.isfinite(value) else 100
            raise ValueError(f"a float is a fraction of the run's total steps and must lie in {bounds}; "
                             f"give a number of steps as an int (e.g. {name}={example})")
        return value
    raise ValueError(f"expected an int (steps) or a float (fraction of the run), got {type(value).__name__}")


class ScheduledConfig(AVFConfig):
    """Base of the policies that act at scheduled AVF steps ``t_i, t_i + t_f, ..., t_i + (n_f - 1) t_f``.

    ``t_i`` and ``t_f`` are numbers of optimizer steps (``int``) or fractions of the run (``float``):
    ``t_i=0.4, t_f=0.05, n_f=5`` with 1000 total steps gives AVF steps 400, 450, 500, 550, 600. Fractions are
    rounded to the nearest step once ``total_steps`` is known (:meth:`vf_avf.schedule.Schedule.from_config`).

    Args:
        t_i: the first AVF step (``int >= 0``) or its fraction of the run (``float`` in ``[0, 1)``).
        t_f: the interval between AVF steps (``int >= 1``) or its fraction (``float`` in ``(0, 1]``).
        n_f: the number of AVF steps (``>= 1``).
        unfreeze_after_last: **(choice)** the method keeps the last frozen set until training ends (default);
            with ``True`` every vector trains again from step ``t_i + n_f * t_f`` on.
    """

    t_i: StepsOrFraction = 0.4
    t_f: StepsOrFraction = 0.05
    n_f: int = Field(default=5, ge=1)
    unfreeze_after_last: bool = False

    @field_validator("t_i", mode="before")
    @classmethod
    def _t_i(cls, value: Any) -> Any:
        return _check_steps_or_fraction("t_i", value, allow_zero=True)

    @field_validator("t_f", mode="before")
    @classmethod
    def _t_f(cls, value: Any) -> Any:
        return _check_steps_or_fraction("t_f", value, allow_zero=False)

    @property
    def uses_fractions(self) -> bool:
        """Whether the schedule needs the run's total number of steps to resolve."""
        return isinstance(self.t_i, float) or isinstance(self.t_f, float)
