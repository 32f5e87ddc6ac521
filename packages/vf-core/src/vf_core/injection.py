"""Replacing targeted layers by decomposed ones, all or nothing.

Everything that can fail (finding targets, checking weights, the SVDs) happens before the model is touched;
only then are the new layers swapped in, so a failed ``get_vectorfit_model`` leaves the model as it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import nn
from torch.nn.utils import parametrize

from .errors import NonFiniteWeightError, TargetError, TiedWeightError
from .families import Family
from .heap import return_freed_memory
from .layers import DecomposedExperts, DecomposedLayer, PlainExpertParams
from .layouts import layout_for
from .svd import default_cache, fingerprint
from .targets import Target, identify_family, resolve_heads, resolve_targets

__all__ = ["Plan", "plan_injection", "build_layers", "swap_in"]

logger = logging.getLogger("vf_core")


@dataclass
class Plan:
    family: Optional[Family]
    targets: list[Target]
    heads: list[str]
    fingerprints: dict[str, str]


def _check_not_wrapped(model: nn.Module) -> None:
    if any(isinstance(m, (DecomposedLayer, DecomposedExperts)) for m in model.modules()):
        raise TargetError("this model already holds VectorFit layers; call merge_and_unload() first, or start"
                          " from a fresh copy of the base model")


def plan_injection(model: nn.Module, config) -> Plan:
    """Find and check the targets; touches nothing."""
    _check_not_wrapped(model)
    # no target_modules and no declared family: the roles are inferred from the model's structure
    family = identify_family(model, infer=config.target_modules is None)
    if family is not None and family.origin == "inferred":
        logger.info(family.notes)
    targets = resolve_targets(model, config, family)
    heads = resolve_heads(model, config, family)
    owners: dict[int, list[str]] = {}
    for pname, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(pname)
    fingerprints = {}
    for target in targets:
        if target.expert is not None:  # a 3-D expert parameter: target.name is its own full name
            weight, own_name = target.module._parameters[target.expert.attr], target.name
        else:
            weight, own_name = getattr(target.module, "weight", None), target.name + ".weight"
        shared = owners.get(id(weight), []) if weight is not None else []
        if len(shared) > 1 and not config.decompose_tied:
            raise TiedWeightError(
                f"module {target.name!r} has a weight tied to {sorted(set(shared) - {own_name})};"
                " decomposing it would untie them silently. Leave it out of target_modules, or set"
                " decompose_tied=True to decompose this copy only")
        matrix = weight if target.expert is not None else layout_for(target.module, target.name).matrix(target.module)
        if not torch.isfinite(matrix.sum()) and not torch.isfinite(matrix).all():  # one cheap pass first
            raise NonFiniteWeightError(
                f"module {target.name!r} has non-finite values (NaN or inf) in its weight; its SVD is undefined."
                " Check the checkpoint it was loaded from")
        fingerprints[target.name] = fingerprint(matrix)
    return Plan(family, targets, heads, fingerprints)


def build_layers(plan: Plan, config) -> dict[str, Union[DecomposedLayer, DecomposedExperts]]:
    """Decompose every target into a new layer; the model is not modified."""
    cache = default_cache() if config.svd_cache else None
    try:
        return {t.name: DecomposedLayer.build(t.module, t.name, t.slices, options=config, cache=cache,
                                              weight_fingerprint=plan.fingerprints.get(t.name))
                if t.expert is None else
                DecomposedExperts.build(t.module, t.name, t.expert, options=config, cache=cache,
                                        weight_fingerprint=plan.fingerprints.get(t.name))
                for t in plan.targets}
    finally:
        if cache is not None:
            cache.close()  # its writes finish in the background (vf_core.svd.wait_for_cache_writes)
        return_freed_memory()  # the decompositions' temporaries, kept by the allocator otherwise


def _owner(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name.rpartition(".")[0])


def _current_expert_param(owner: nn.Module, name: str) -> Union[DecomposedExperts, PlainExpertParams]:
    attr = name.rpartition(".")[2]
    if parametrize.is_parametrized(owner, attr):
        layer = owner.parametrizations[attr][0]
        if isinstance(layer, DecomposedExperts):
            return layer
    return PlainExpertParams({attr: owner._parameters[attr]})


def _swap_one(model: nn.Module, name: str, new: Union[nn.Module, PlainExpertParams]):
    """Put ``new`` in place of what ``name`` holds now and return that: a module for a module, a
    :class:`DecomposedExperts` or :class:`PlainExpertParams` for a 3-D expert parameter."""
    if isinstance(new, (DecomposedExperts, PlainExpertParams)):
        owner = _owner(model, name)
        old = _current_expert_param(owner, name)
        if isinstance(old, DecomposedExperts):
            if isinstance(new, DecomposedExperts):
                raise TargetError(f"{name!r} is decomposed already")
            old.uninstall(owner, new)
            return old
        if isinstance(new, DecomposedExperts):
            return new.install(owner)
        for attr, value in new.tensors.items():
            setattr(owner, attr, value)
        return old
    old_module = model.get_submodule(name)
    new.train(old_module.training)  # keep the model's train/eval mode
    model.set_submodule(name, new)
    return old_module


def swap_in(model: nn.Module, layers: dict[str, Union[nn.Module, PlainExpertParams]]) -> dict[str, object]:
    """Put ``layers`` in place (modules by name; for a 3-D expert parameter, by the parameter's full name, a
    :class:`DecomposedExperts` or the plain parameters to restore); returns what they replaced. Restores
    everything if a swap fails."""
    replaced: dict[str, object] = {}
    try:
        for name, layer in layers.items():
            replaced[name] = _swap_one(model, name, layer)
    except Exception:
        for name, old in reversed(list(replaced.items())):
            _swap_one(model, name, old)
        raise
    return replaced
