"""`Family`: what a backend declares about one architecture family.

A family says which module plays each role ``q, k, v, o, f1, f2`` inside a transformer block, how to find
the blocks, which modules hold several roles at once (fused projections), and which modules are new heads
to train in full. Backends return ``Family`` records from the ``vectorfit_families`` hook.

Example:
    >>> from vf_core.families import Family
    >>> bert = Family(
    ...     name="bert", backend="nlp", model_types=("bert",),
    ...     block_pattern=r"(?:.*\\.)?layer\\.\\d+",
    ...     roles={"q": ("attention.self.query",), "k": ("attention.self.key",),
    ...            "v": ("attention.self.value",), "o": ("attention.output.dense",),
    ...            "f1": ("intermediate.dense",), "f2": ("output.dense",)},
    ...     heads=("classifier",))
    >>> bert.role_of("attention.self.key")
    'k'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from .errors import PluginError
from .experts import ExpertParam
from .roles import ROLES

__all__ = ["Family", "FusedModule"]


@dataclass(frozen=True)
class FusedModule:
    """A module whose output rows stack several roles (GPT-2's ``c_attn``, timm's ``qkv``).

    Args:
        roles: the roles of the stacked slices, in order.
        split: optional function ``module -> sizes`` of the slices (default: equal slices), for grouped-query
            attention where ``k`` and ``v`` are smaller than ``q``.
        order: optional function ``module -> row indices``, a permutation of the weight's output rows after which
            the roles' rows are contiguous (then cut by ``split``): for layouts that interleave the roles per head
            (GPT-NeoX's ``query_key_value``, Bloom) or per key-value group (Falcon).
        whole: decompose the module as one matrix (role None) instead of one slice per role, e.g. when the layout
            of its rows is not known; it is targeted when any of ``roles`` is wanted.
        note: how the rows were split and why, shown by ``vectorfit inspect`` and in the inferred family's log line.
    """

    roles: tuple[str, ...]
    split: Optional[Callable[[Any], Sequence[int]]] = None
    order: Optional[Callable[[Any], Sequence[int]]] = None
    whole: bool = False
    note: str = ""


@dataclass(frozen=True)
class Family:
    """An architecture family's declaration.

    Args:
        name: unique family name (``"bert"``, ``"llama"``, ``"timm-vit"``).
        backend: the backend that declares it (``"nlp"``, ``"vision"``, ``"diffusion"`` or a plugin's name).
        block_pattern: a regular expression that matches (by ``re.match`` from the start of the name) the
            full name of a block, e.g. ``r"(?:.*\\.)?layer\\.\\d+"``. Blocks are numbered in order of first
            appearance: that number is each vector's ``layer``.
        roles: role -> module paths relative to the block (exact, ``.``-separated). Several paths may share
            a role (a gated MLP's ``gate_proj`` and ``up_proj`` both play ``f1``).
        fused: relative path -> :class:`FusedModule` for modules holding several roles.
        expert_params: 3-D expert parameters (one matrix per expert, :mod:`vf_core.experts`) by path relative to
            the block, e.g. ``{"mlp.experts.gate_up_proj": "f1", "mlp.experts.down_proj": "f2"}``: each maps to a
            role, or to an :class:`~vf_core.experts.ExpertParam` that also says how the parameter is stored.
        heads: names (or ``.``-suffixes) of new task heads trained in full when ``modules_to_save`` is None.
        model_types: Hugging Face ``config.model_type`` values that identify the family.
        class_names: model class names (or prefixes) that identify the family.
        matches: an optional predicate ``model -> bool`` that identifies the family when the above do not.
        tiny_model: a factory of a tiny randomly initialised model, used by the shared contract tests.
        example_input: a factory ``model -> (args, kwargs)`` of an input for ``tiny_model()``.
        notes: free text (e.g. how a gated MLP maps onto f1/f2), shown by ``vectorfit inspect``.
        origin: ``"declared"`` (by a backend) or ``"inferred"`` (recognised from the model's structure by
            :func:`vf_core.inference.infer_family` when no backend declares the model).
    """

    name: str
    backend: str
    block_pattern: str
    roles: Mapping[str, tuple[str, ...]]
    fused: Mapping[str, FusedModule] = field(default_factory=dict)
    expert_params: Mapping[str, Union[str, ExpertParam]] = field(default_factory=dict)
    heads: tuple[str, ...] = ()
    model_types: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    matches: Optional[Callable[[Any], bool]] = None
    tiny_model: Optional[Callable[[], Any]] = None
    example_input: Optional[Callable[[Any], tuple[tuple, dict]]] = None
    notes: str = ""
    origin: str = "declared"

    def __post_init__(self) -> None:
        unknown = [r for r in self.roles if r not in ROLES]
        for fused in self.fused.values():
            unknown += [r for r in fused.roles if r not in ROLES]
        unknown += [r for r in self.expert_roles.values() if r is not None and r not in ROLES]
        if unknown:
            raise PluginError(
                f"family {self.name!r} (backend {self.backend!r}) declares unknown roles {sorted(set(unknown))};"
                f" roles are {', '.join(ROLES)}"
            )
        try:
            re.compile(self.block_pattern)
        except re.error as exc:
            raise PluginError(f"family {self.name!r}: block_pattern is not a valid regex: {exc}") from None

    @property
    def declared_roles(self) -> tuple[str, ...]:
        """The roles this family can target, in canonical order."""
        present = set(self.roles)
        for fused in self.fused.values():
            present.update(fused.roles)
        present.update(self.expert_roles.values())
        return tuple(r for r in ROLES if r in present)

    @property
    def expert_roles(self) -> dict[str, Optional[str]]:
        """The role of each of :attr:`expert_params`, by relative path."""
        return {path: spec if isinstance(spec, str) else spec.role for path, spec in self.expert_params.items()}

    def role_of(self, relative_path: str) -> Optional[str]:
        """The role of a module given its path relative to its block, or None."""
        for role, paths in self.roles.items():
            if relative_path in paths:
                return role
        return None

    def identifies(self, model: Any) -> bool:
        """Whether this family recognises ``model`` (by model type, class name or predicate)."""
        config = getattr(model, "config", None)
        model_type = getattr(config, "model_type", None) if config is not None else None
        if model_type is not None and model_type in self.model_types:
            return True
        cls_name = type(model).__name__
        if any(cls_name == c or cls_name.startswith(c) for c in self.class_names):
            return True
        if self.matches is not None:
            try:
                return bool(self.matches(model))
            except Exception:  # a predicate must never break detection of other families
                return False
        return False
