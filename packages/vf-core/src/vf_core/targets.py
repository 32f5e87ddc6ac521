"""Which modules to decompose, with their roles and block index.

Targets come from the backend's :class:`~vf_core.families.Family` declaration for the model's family, or
from ``VectorFitConfig.target_modules`` (the built-in generic targeting, for any ``nn.Module``):

- a list matches module names exactly or by a ``.``-separated suffix: ``["query", "value"]``;
- a string is a regular expression matched against the whole name: ``r".*\\.(query|value)"``;
- a dict maps a role to either of the above: ``{"q": ["query"], "v": ["value"]}``.

Example:
    >>> import torch
    >>> from vf_core.targets import matches_target
    >>> matches_target("encoder.layer.0.attention.self.query", ["query"])
    True
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Optional, Sequence, Union

from torch import nn

from .errors import TargetError, UnknownFamilyError, UnsupportedLayerError
from .experts import ExpertLayout, ExpertParam, expert_count, is_expert_shaped
from .families import Family, FusedModule
from .layers import SliceSpec
from .layouts import layout_for
from .plugins import get_plugin_manager, list_families

__all__ = ["Target", "matches_target", "resolve_targets", "select_targets", "identify_family", "resolve_heads"]

_GENERIC_BLOCK = re.compile(r"^(.*?\.\d+)(?:\.|$)")


@dataclass
class Target:
    """One thing to decompose: a module (``name``, ``module``), or a 3-D expert parameter (``name`` is the
    parameter's full name, ``module`` the experts module that holds it, ``expert`` how it is stored)."""

    name: str
    module: nn.Module
    slices: list[SliceSpec]
    layer: Optional[int]
    expert: Optional[ExpertLayout] = None

    def matrix_shape(self) -> tuple[int, int]:
        """``(d_out, d_in)`` of the matrix (of each expert's matrix, for an expert parameter)."""
        if self.expert is not None:
            return self.expert.d_out, self.expert.d_in
        d_out, d_in = layout_for(self.module, self.name).matrix(self.module).shape
        return int(d_out), int(d_in)


def matches_target(name: str, spec: Union[str, Sequence[str]]) -> bool:
    """PEFT-style matching: a string is a full-match regex, a list matches exactly or by ``.``-suffix."""
    if isinstance(spec, str):
        return re.fullmatch(spec, name) is not None
    return any(name == t or name.endswith("." + t) for t in spec)


def identify_family(model: nn.Module, *, infer: bool = False) -> Optional[Family]:
    """The declared family of ``model``; else, with ``infer=True``, its family inferred from its structure; else None.

    Asks the ``vectorfit_identify_family`` hook first; when no plugin answers, the first family whose
    :meth:`~vf_core.families.Family.identifies` accepts the model. Declared families always win. With ``infer=True``
    (what injection does when ``target_modules`` is None) a model no backend declares gets
    :func:`vf_core.inference.infer_family`, which raises :class:`~vf_core.errors.UnknownFamilyError` (no attention
    or MLP blocks) or :class:`~vf_core.errors.InferenceError` (ambiguous, partial or inconsistent roles).
    """
    families = list_families()
    name = get_plugin_manager().hook.vectorfit_identify_family(model=model, families=list(families.values()))
    if name is None:
        name = next((f.name for f in families.values() if f.identifies(model)), None)
    if name:
        return families.get(name)
    if infer:
        from .inference import infer_family  # it imports this module

        return infer_family(model)
    return None


def _unknown_family(model: nn.Module) -> UnknownFamilyError:
    known = sorted(list_families())
    listed = ", ".join(known) if known else "none (install vectorfit[nlp], vectorfit[vision] or vectorfit[diffusion])"
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    what = type(model).__name__ + (f" (model_type={model_type!r})" if model_type else "")
    return UnknownFamilyError(
        f"no installed backend recognises {what}. Known families: {listed}. Either install the backend for"
        " this model, or name the modules yourself, e.g. VectorFitConfig(target_modules={'q': ['q_proj'],"
        " 'v': ['v_proj']}) or target_modules=r'.*\\.(q_proj|v_proj)'"
    )


class _Blocks:
    """Numbers blocks in order of first appearance."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def __call__(self, prefix: Optional[str]) -> Optional[int]:
        if prefix is None:
            return None
        return self.index.setdefault(prefix, len(self.index))


def _family_place(family: Optional[Family], name: str) -> tuple[Optional[str], Optional[str]]:
    """(block prefix, path relative to the block) under the family's block pattern."""
    if family is not None:
        m = re.match(family.block_pattern, name)
        if m and name.startswith(m.group(0) + "."):
            return m.group(0), name[len(m.group(0)) + 1:]
    m = _GENERIC_BLOCK.match(name)
    return (m.group(1), name[len(m.group(1)) + 1:]) if m else (None, None)


def _fused_slices(module: nn.Module, fused: FusedModule, wanted: Sequence[str], name: str,
                  d_out: int) -> list[SliceSpec]:
    roles = fused.roles
    if fused.whole:
        return [SliceSpec(role=None, rows=d_out, targeted=any(r in wanted for r in roles))]
    sizes = list(fused.split(module)) if fused.split else [d_out // len(roles)] * len(roles)
    if sum(sizes) != d_out:
        raise TargetError(f"fused module {name!r} has {d_out} output rows, which do not split into roles"
                          f" {list(roles)} of sizes {sizes}; give a split function in the family declaration")
    if fused.order is None:
        return [SliceSpec(role=r, rows=n, targeted=r in wanted) for r, n in zip(roles, sizes)]
    order = [int(i) for i in fused.order(module)]
    if sorted(order) != list(range(d_out)):
        raise TargetError(f"the row order of fused module {name!r} is not a permutation of its {d_out} rows")
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [SliceSpec(role=r, rows=n, targeted=r in wanted, index=tuple(order[s:s + n]))
            for r, n, s in zip(roles, sizes, starts)]


def _explicit_specs(config) -> list[tuple[Optional[str], Any]]:
    spec = config.target_modules
    if isinstance(spec, dict):
        return list(spec.items())
    return [(None, spec)]


def resolve_targets(model: nn.Module, config, family: Optional[Family]) -> list[Target]:
    """Every module to decompose, in model order; raises :class:`TargetError` when nothing matches.

    Asks the ``vectorfit_select_targets`` hook; when no plugin answers, the generic selection
    (:func:`select_targets`) chooses from ``target_modules`` or the family's declaration.
    """
    if config.target_modules is None and family is None:
        raise _unknown_family(model)
    heads = resolve_heads(model, config, family)
    targets = get_plugin_manager().hook.vectorfit_select_targets(model=model, config=config, family=family,
                                                                 heads=heads)
    if targets is None:
        targets = select_targets(model, config, family, heads)
    if not targets:
        explicit = config.target_modules is not None
        what = f"target_modules={config.target_modules!r}" if explicit else f"family {family.name!r}"
        names = [n for n, m in model.named_modules() if n and not list(m.children())][:12]
        raise TargetError(
            f"no module matched {what} with roles {list(config.roles)}. Some module names of this model: {names}."
            " Check target_modules (a list matches exact names or '.'-suffixes, a string is a full-match regex)"
        )
    return list(targets)


def select_targets(model: nn.Module, config, family: Optional[Family], heads: Sequence[str]) -> list[Target]:
    """The generic selection: ``target_modules`` (names, suffixes, a regex, or a role dict) or the family's roles,
    plus the 3-D expert parameters (:mod:`vf_core.experts`) named the same way or in ``family.expert_params``."""
    wanted = list(config.roles)
    explicit = config.target_modules is not None
    blocks = _Blocks()
    targets: list[Target] = []
    experts = _ExpertSearch(model, config, family, wanted)
    for name, module in model.named_modules():
        if any(name == h or name.startswith(h + ".") for h in heads):
            continue
        found, named_experts = [], False
        if name:
            target, prefix, named_experts = _module_target(name, module, config, family, wanted, explicit, experts)
            found = [(target, prefix)] if target is not None else []
        for target, prefix in found + experts.params_of(name, module, named_experts):
            target.layer = blocks(prefix)
            targets.append(target)
    return targets


def _explicit_role(name: str, config) -> tuple[bool, Optional[str]]:
    """Whether ``name`` matches ``target_modules``, and the role the matching spec gives (None in a list)."""
    for spec_role, spec in _explicit_specs(config):
        if matches_target(name, spec):
            return True, spec_role
    return False, None


def _module_target(name: str, module: nn.Module, config, family: Optional[Family], wanted: Sequence[str],
                   explicit: bool, experts: "_ExpertSearch") -> tuple[Optional[Target], Optional[str], bool]:
    """The target of one module (or None) and its block prefix; and whether the user named an experts module that
    has no weight of its own (its 3-D parameters are then the targets)."""
    prefix, rel = _family_place(family, name)
    fused: Optional[FusedModule] = None
    for pattern, roles in config.fused_modules.items():
        if matches_target(name, [pattern]):
            fused = FusedModule(tuple(roles))
    if fused is None and family is not None and rel in family.fused:
        fused = family.fused[rel]
    if explicit:
        hit, role = _explicit_role(name, config)
        if not hit:
            return None, None, False
        if experts.holds_experts(module):
            return None, None, True  # ``target_modules=["experts"]``: its 3-D parameters are the targets
        if role is None and family is not None and rel is not None:
            role = family.role_of(rel)
    else:
        if rel is None or (family.role_of(rel) is None and fused is None):
            return None, None, False
        role = family.role_of(rel)
    layout = layout_for(module, name)  # raises UnsupportedLayerError for an unsupported type
    d_out = layout.matrix(module).shape[0]
    if fused is not None:
        slices = _fused_slices(module, fused, wanted, name, d_out)
        if not any(s.targeted for s in slices):
            return None, None, False
    else:
        if role is not None and role not in wanted:
            return None, None, False
        if role is None and not explicit:
            return None, None, False
        slices = [SliceSpec(role=role, rows=d_out)]
    return Target(name, module, slices, None), prefix, False


class _ExpertSearch:
    """Finds the 3-D expert parameters to target: those ``target_modules`` names (or whose experts module it
    names), or the family's ``expert_params``."""

    def __init__(self, model: nn.Module, config, family: Optional[Family], wanted: Sequence[str]) -> None:
        self.config, self.family, self.wanted = config, family, wanted
        self.explicit = config.target_modules is not None
        self.count = expert_count(model)
        model_config = getattr(model, "config", None)
        hidden = getattr(model_config, "hidden_size", None)
        if not isinstance(hidden, int):
            hidden = getattr(getattr(model_config, "text_config", None), "hidden_size", None)
        self.hidden = hidden if isinstance(hidden, int) else None
        self.declared = dict(family.expert_params) if family is not None else {}

    def holds_experts(self, module: nn.Module) -> bool:
        """An experts module with 3-D expert parameters and no weight layout of its own."""
        if not any(is_expert_shaped(p, self.count) for p in module._parameters.values()):
            return False
        try:
            layout_for(module, "")
        except UnsupportedLayerError:
            return True
        return False

    def params_of(self, name: str, module: nn.Module, named: bool) -> list[tuple[Target, Optional[str]]]:
        """Targets among ``module``'s own 3-D parameters, each with its block prefix (``named``: the user named
        the module itself)."""
        if not self.explicit and not self.declared:
            return []
        out = []
        for attr, param in module._parameters.items():
            if param is None or param.ndim != 3:
                continue
            full = f"{name}.{attr}" if name else attr
            prefix, rel = _family_place(self.family, full)
            declared = self.declared.get(rel) if rel is not None else None
            if isinstance(declared, str):
                declared = ExpertParam(declared)
            if self.explicit:
                hit, role = _explicit_role(full, self.config)
                if not (hit or named) or not is_expert_shaped(param, self.count):
                    continue
                spec = declared or ExpertParam()
                if role is not None:
                    spec = replace(spec, role=role)
            else:
                if declared is None:
                    continue
                spec = declared
            if spec.role is not None and spec.role not in self.wanted:
                continue
            layout = spec.resolve(module, attr, full, self.hidden)
            halves = layout.halves or (None,)
            slices = [SliceSpec(role=layout.role, rows=layout.rows_per_half) for _ in halves]
            out.append((Target(full, module, slices, None, expert=layout), prefix))
        return out


def resolve_heads(model: nn.Module, config, family: Optional[Family]) -> list[str]:
    """Full names of the ``modules_to_save``; an explicit name that matches nothing is an error."""
    names = [n for n, _ in model.named_modules() if n]
    if config.modules_to_save is None:
        declared = family.heads if family is not None else ()
        return [n for n in names if matches_target(n, list(declared))]
    found: list[str] = []
    for head in config.modules_to_save:
        hits = [n for n in names if matches_target(n, [head])]
        if not hits:
            raise TargetError(f"modules_to_save: no module named {head!r} (exactly or as a '.'-suffix) in"
                              f" {type(model).__name__}; top-level modules are {[n for n in names if '.' not in n]}")
        found.extend(h for h in hits if not any(h.startswith(f + ".") for f in found))
    return sorted(set(found), key=names.index)
