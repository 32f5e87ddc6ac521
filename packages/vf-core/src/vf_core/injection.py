"""Replacing targeted layers by decomposed ones, all or nothing.

Everything that can fail (finding targets, checking weights, the SVDs) happens before the model is touched;
only then are the new layers swapped in, so a failed ``get_vectorfit_model`` leaves the model as it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .errors import NonFiniteWeightError, TargetError, TiedWeightError
from .families import Family
from .heap import return_freed_memory
from .layers import DecomposedLayer
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
    if any(isinstance(m, DecomposedLayer) for m in model.modules()):
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
        weight = getattr(target.module, "weight", None)
        shared = owners.get(id(weight), []) if weight is not None else []
        if len(shared) > 1 and not config.decompose_tied:
            raise TiedWeightError(
                f"module {target.name!r} has a weight tied to {sorted(set(shared) - {target.name + '.weight'})};"
                " decomposing it would untie them silently. Leave it out of target_modules, or set"
                " decompose_tied=True to decompose this copy only")
        matrix = layout_for(target.module, target.name).matrix(target.module)
        if not torch.isfinite(matrix.sum()) and not torch.isfinite(matrix).all():  # one cheap pass first
            raise NonFiniteWeightError(
                f"module {target.name!r} has non-finite values (NaN or inf) in its weight; its SVD is undefined."
                " Check the checkpoint it was loaded from")
        fingerprints[target.name] = fingerprint(matrix)
    return Plan(family, targets, heads, fingerprints)


def build_layers(plan: Plan, config) -> dict[str, DecomposedLayer]:
    """Decompose every target into a new layer; the model is not modified."""
    cache = default_cache() if config.svd_cache else None
    try:
        return {t.name: DecomposedLayer.build(t.module, t.name, t.slices, options=config, cache=cache,
                                              weight_fingerprint=plan.fingerprints.get(t.name))
                for t in plan.targets}
    finally:
        if cache is not None:
            cache.close()  # its writes finish in the background (vf_core.svd.wait_for_cache_writes)
        return_freed_memory()  # the decompositions' temporaries, kept by the allocator otherwise


def swap_in(model: nn.Module, layers: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """Put ``layers`` in place; returns the modules they replaced. Restores everything if a swap fails."""
    replaced: dict[str, nn.Module] = {}
    try:
        for name, layer in layers.items():
            replaced[name] = model.get_submodule(name)
            layer.train(replaced[name].training)  # keep the model's train/eval mode
            model.set_submodule(name, layer)
    except Exception:
        for name, old in replaced.items():
            model.set_submodule(name, old)
        raise
    return replaced
