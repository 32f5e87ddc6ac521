"""Training strength ``S_v = mean |v_t - v_0|`` of every vector at once, and the top-k ranking on it.

Paper: https://arxiv.org/abs/2503.19530 (method spec section 1.2). The values equal
:meth:`vf_core.TrainableVector.strength` exactly; computing them together costs one device sync per device
instead of one per vector.

Example:
    >>> import torch
    >>> from vf_core.vectors import TrainableVector, VectorRegistry
    >>> from vf_avf.strength import strengths, top_k
    >>> reg = VectorRegistry([TrainableVector(n, 0, "q", "bias", torch.nn.Parameter(torch.zeros(2)), n) for n in "abc"])
    >>> with torch.no_grad():
    ...     _ = reg["b"].parameter.add_(1.0)
    >>> strengths(reg)
    {'a': 0.0, 'b': 1.0, 'c': 0.0}
    >>> top_k({"a": 0.5, "b": 2.0, "c": 0.5}, 2)
    ['b', 'a']
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import torch
from vf_core.vectors import TrainableVector

__all__ = ["strengths", "top_k", "bottom_k"]


@torch.no_grad()
def strengths(vectors: Iterable[TrainableVector]) -> dict[str, float]:
    """``{name: S_v}`` for every vector, in registry order.

    Vectors sharded by FSDP (``DTensor`` parameters) are measured whole: each rank sums its shard and one
    all-reduce per device mesh adds the sums up, so every rank must call this at the same point (the
    :class:`~vf_avf.VectorFreezer` does, at every step).
    """
    vectors = list(vectors)
    by_device: dict[torch.device, list[int]] = {}
    by_mesh: dict[Any, list[int]] = {}
    values: list[torch.Tensor] = []
    for i, vec in enumerate(vectors):
        param = vec.parameter.detach()
        if hasattr(param, "device_mesh"):  # a shard: its sum for now, the mean once the ranks' sums are added
            local = param.to_local()
            values.append((local - _local(vec.initial, local)).abs().float().sum())
            by_mesh.setdefault(param.device_mesh, []).append(i)
            continue
        values.append((param - vec.initial.to(param.device)).abs().float().mean())
        by_device.setdefault(param.device, []).append(i)
    out: list[float] = [0.0] * len(vectors)
    for indices in by_device.values():
        for i, value in zip(indices, torch.stack([values[i] for i in indices]).tolist()):
            out[i] = value
    for mesh, indices in by_mesh.items():
        for i, value in zip(indices, _sharded_means(mesh, [vectors[i] for i in indices], [values[i] for i in indices])):
            out[i] = value
    return {vec.name: value for vec, value in zip(vectors, out)}


def _local(initial: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """This rank's slice of a vector's initial value (vf_core shards it like the parameter)."""
    if hasattr(initial, "to_local"):
        return initial.to_local().to(local.device)
    if initial.shape == local.shape:
        return initial.to(local.device)
    raise ValueError("a sharded vector's initial value is not sharded; read VectorFitModel.vectors after sharding"
                     " the model (fully_shard) so that the registry follows its new parameters")


def _sharded_means(mesh: Any, vectors: list, sums: list) -> list[float]:
    """Add the ranks' sums over every dimension of ``mesh`` (one all-reduce each), count a replicated
    dimension once, and divide by the vectors' sizes."""
    import torch.distributed as dist
    from torch.distributed.tensor import Replicate

    total = torch.stack(sums)
    for dim in range(mesh.ndim):
        dist.all_reduce(total, group=mesh.get_group(dim))
    out = []
    for vec, value in zip(vectors, total.tolist()):
        copies = math.prod(mesh.size(d) for d, p in enumerate(vec.parameter.placements) if isinstance(p, Replicate))
        out.append(value / copies / vec.parameter.numel())
    return out


def _ranked(scores: Mapping[str, float], sign: float) -> list[str]:
    order = {name: i for i, name in enumerate(scores)}

    def key(name: str) -> tuple[float, int]:
        value = scores[name]
        return (math.inf if math.isnan(value) else sign * value, order[name])  # NaN ranks last either way

    return sorted(scores, key=key)


def top_k(scores: Mapping[str, float], k: int) -> list[str]:
    """The ``k`` names with the highest scores, highest first; ties go to the earlier name in ``scores``."""
    return _ranked(scores, -1.0)[:k]


def bottom_k(scores: Mapping[str, float], k: int) -> list[str]:
    """The ``k`` names with the lowest scores, lowest first; ties go to the earlier name in ``scores``."""
    return _ranked(scores, 1.0)[:k]
