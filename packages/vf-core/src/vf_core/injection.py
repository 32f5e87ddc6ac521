"""Replacing targeted layers by decomposed ones, one at a time, all or nothing.

Finding the targets and checking their weights (:func:`plan_injection`) touches nothing. :func:`inject` then streams:
it decomposes one target, swaps the new layer in and frees that decomposition's temporaries before the next
target, so that decomposing a large model needs at most the model, its factors and one layer's temporaries
(``benchmarks/memory``). Each replaced module is kept until the last target is in: if anything fails on the way
(an SVD, a part's check, an interrupt), every swap is undone and the model is exactly as it was.

Paper: https://arxiv.org/abs/2503.19530 (VectorFit).

Example:
    >>> import torch
    >>> from vf_core import VectorFitConfig
    >>> from vf_core.injection import inject, plan_injection
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> config = VectorFitConfig(target_modules=["0", "2"])
    >>> layers, replaced = inject(net, plan_injection(net, config), config)
    >>> sorted(layers), type(net[0]).__name__
    (['0', '2'], 'DecomposedLayer')
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple, Optional, Union

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

__all__ = ["Plan", "Injected", "plan_injection", "build_layers", "inject", "swap_in", "undo"]

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


def _build_one(target: Target, plan: Plan, config, cache) -> Union[DecomposedLayer, DecomposedExperts]:
    if target.expert is None:
        return DecomposedLayer.build(target.module, target.name, target.slices, options=config, cache=cache,
                                     weight_fingerprint=plan.fingerprints.get(target.name))
    return DecomposedExperts.build(target.module, target.name, target.expert, options=config, cache=cache,
                                   weight_fingerprint=plan.fingerprints.get(target.name))


def build_layers(plan: Plan, config) -> dict[str, Union[DecomposedLayer, DecomposedExperts]]:
    """Decompose every target into a new layer; the model is not modified (loading an adapter checks the layers
    against its file before any is swapped in). Each layer's temporaries are freed before the next is built."""
    cache = default_cache() if config.svd_cache else None
    layers = {}
    try:
        for target in plan.targets:
            layers[target.name] = _build_one(target, plan, config, cache)
            return_freed_memory()  # this decomposition's temporaries, kept by the allocator otherwise
    finally:
        if cache is not None:
            cache.close()  # its writes finish in the background (vf_core.svd.wait_for_cache_writes)
    return layers


class Injected(NamedTuple):
    """What :func:`inject` did: the new layers and what they replaced (``undo(model, injected.replaced)`` puts it
    back), both by name."""

    layers: dict[str, Union[DecomposedLayer, DecomposedExperts]]
    replaced: dict[str, object]


def inject(model: nn.Module, plan: Plan, config) -> Injected:
    """Decompose the targets of ``plan`` one at a time, each swapped into ``model`` as soon as it is built; returns
    the new layers and what they replaced, by name. All or nothing: if anything raises (an SVD, a part's check, ``KeyboardInterrupt``),
    every swap is undone before the error propagates, and ``model`` is exactly as it was.

    Memory: the replaced modules are kept until the last target is in (they are what an undo puts back; the caller
    drops them), and each decomposition's temporaries are freed before the next one starts, so the peak is the
    model, its factors and one layer's temporaries.
    """
    cache = default_cache() if config.svd_cache else None
    layers: dict[str, Union[DecomposedLayer, DecomposedExperts]] = {}
    replaced: dict[str, object] = {}
    try:
        for target in plan.targets:
            layer = _build_one(target, plan, config, cache)
            replaced[target.name] = _swap_one(model, target.name, layer)
            layers[target.name] = layer
            del layer
            return_freed_memory()  # this decomposition's temporaries, kept by the allocator otherwise
    except BaseException:
        _undo(model, replaced)
        raise
    finally:
        if cache is not None:
            cache.close()  # its writes finish in the background (vf_core.svd.wait_for_cache_writes)
    return Injected(layers, replaced)


def _undo(model: nn.Module, replaced: dict[str, object]) -> None:
    """Put back what ``replaced`` holds, latest first."""
    for name, old in reversed(list(replaced.items())):
        _swap_one(model, name, old)


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
    except BaseException:
        _undo(model, replaced)
        raise
    return replaced


def undo(model: nn.Module, replaced: dict[str, object]) -> None:
    """Undo :func:`swap_in` or :func:`inject`: ``replaced`` maps names to what was there before."""
    _undo(model, replaced)
