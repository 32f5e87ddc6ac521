"""The freezing policies the installed plugins register, and the record each registration returns.

Paper (AVF, the first policy): https://arxiv.org/abs/2503.19530.

A plugin's ``vectorfit_freezing_policies`` hook (see :mod:`vf_core.plugins.hookspecs`) returns
:class:`PolicyRecord` objects; vf-avf registers its own built-ins through that same hook (:mod:`vf_avf.plugin`).
Names are unique across plugins (a duplicate raises :class:`~vf_core.PluginError` naming both providers).

Example:
    >>> from vf_avf import list_policies
    >>> sorted(list_policies())[:4]
    ['dropout', 'none', 'random', 'topk_ema']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from vf_core.errors import PluginError, PolicyNotFoundError
from vf_core.plugins import collect_named

if TYPE_CHECKING:  # pragma: no cover
    from vf_core.vectors import VectorRegistry

    from .config import AVFConfig
    from .policies.base import FreezingPolicy

__all__ = ["PolicyRecord", "PolicyFactory", "list_policies", "get_policy"]

#: ``factory(config, vectors, total_steps) -> FreezingPolicy``; a policy class is one
PolicyFactory = Callable[["AVFConfig", "VectorRegistry", Optional[int]], "FreezingPolicy"]


@dataclass(frozen=True)
class PolicyRecord:
    """One freezing policy, as a plugin declares it.

    Attributes:
        name: what ``AVFConfig(policy=...)`` selects; must equal the default of ``config_class.policy``.
        config_class: a subclass of :class:`~vf_avf.AVFConfig` with ``policy: Literal[name] = name``.
        factory: builds the policy: ``factory(config, vectors, total_steps)``; usually the policy class.
        summary: one line for listings.
    """

    name: str
    config_class: type
    factory: PolicyFactory
    summary: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise PluginError(f"freezing policy name {self.name!r} must be a Python identifier (letters, digits, _)")
        if not _is_avf_config(self.config_class):
            raise PluginError(f"freezing policy {self.name!r}: config_class must subclass vf_avf.AVFConfig,"
                              f" got {self.config_class!r}")
        field = self.config_class.model_fields.get("policy")
        if field is None or field.default != self.name:
            raise PluginError(f"freezing policy {self.name!r}: {self.config_class.__name__}.policy must default to"
                              f" {self.name!r} (declare `policy: Literal[{self.name!r}] = {self.name!r}`)")
        if not callable(self.factory):
            raise PluginError(f"freezing policy {self.name!r}: factory must be callable, got {self.factory!r}")


def _is_avf_config(cls: object) -> bool:
    """Whether ``cls`` subclasses :class:`vf_avf.AVFConfig`, found in its MRO by name: the config module imports
    this one (to resolve ``policy``), so this one does not import it back."""
    return isinstance(cls, type) and any(base.__module__ == "vf_avf.config" and base.__qualname__ == "AVFConfig"
                                         for base in cls.__mro__)


def list_policies() -> dict[str, PolicyRecord]:
    """Every registered freezing policy by name (built-ins and installed plugins), sorted by name."""
    records = collect_named("vectorfit_freezing_policies")
    for name, record in records.items():
        if not isinstance(record, PolicyRecord):
            raise PluginError(f"vectorfit_freezing_policies returned {record!r} for {name!r}; a plugin must return"
                              f" vf_avf.PolicyRecord objects")
    return dict(sorted(records.items()))


def get_policy(name: str) -> PolicyRecord:
    """The record of the policy called ``name``; :class:`~vf_core.PolicyNotFoundError` lists the installed ones."""
    policies = list_policies()
    try:
        return policies[name]
    except KeyError:
        installed = ", ".join(policies) or "none"
        raise PolicyNotFoundError(
            f"no freezing policy named {name!r}; installed: {installed}. A policy comes from a package that"
            f" registers it in the 'vectorfit' entry-point group (see docs/freezing-policies.md); after installing"
            f" one at run time, call vf_core.plugins.reset_plugin_manager()") from None

