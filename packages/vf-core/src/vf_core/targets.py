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
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

from torch import nn

from .errors import TargetError, UnknownFamilyError
from .families import Family, FusedModule
from .layers import SliceSpec
from .layouts import layout_for
from .plugins import get_plugin_manager, list_families

__all__ = ["Target", "matches_target", "resolve_targets", "select_targets", "identify_family", "resolve_heads"]

_GENERIC_BLOCK = re.compile(r"^(.*?\.\d+)(?:\.|$)")


@dataclass
class Target:
    name: str
    module: nn.Module
    slices: list[SliceSpec]
    layer: Optional[int]


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
    """The generic selection: ``target_modules`` (names, suffixes, a regex, or a role dict) or the family's roles."""
    wanted = list(config.roles)
    explicit = config.target_modules is not None
    blocks = _Blocks()
    targets: list[Target] = []
    for name, module in model.named_modules():
        if not name or any(name == h or name.startswith(h + ".") for h in heads):
            continue
        prefix, rel = _family_place(family, name)
        fused: Optional[FusedModule] = None
        for pattern, roles in config.fused_modules.items():
            if matches_target(name, [pattern]):
                fused = FusedModule(tuple(roles))
        if fused is None and family is not None and rel in family.fused:
            fused = family.fused[rel]
        if explicit:
            role = None
            hit = False
            for spec_role, spec in _explicit_specs(config):
                if matches_target(name, spec):
                    hit, role = True, spec_role
                    break
            if not hit:
                continue
            if role is None and family is not None and rel is not None:
                role = family.role_of(rel)
        else:
            if rel is None or (family.role_of(rel) is None and fused is None):
                continue
            role = family.role_of(rel)
        layout = layout_for(module, name)  # raises UnsupportedLayerError for an unsupported type
        d_out = layout.matrix(module).shape[0]
        if fused is not None:
            slices = _fused_slices(module, fused, wanted, name, d_out)
            if not any(s.targeted for s in slices):
                continue
        else:
            if role is not None and role not in wanted:
                continue
            if role is None and not explicit:
                continue
            slices = [SliceSpec(role=role, rows=d_out)]
        targets.append(Target(name, module, slices, blocks(prefix)))
    return targets


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
