"""The registry of trainable vectors: every ``s``, ``b`` and ``M`` that trains, with its name and place.

Freezing policies (``vf-avf``), plots and the CLI all read this registry; nothing else needs to walk the
model. Each :class:`TrainableVector` knows its ``layer`` (block index), ``role`` and ``kind``, the live
``parameter`` and a copy of its ``initial`` value.

Example:
    >>> import torch
    >>> from vf_core.vectors import TrainableVector, VectorRegistry
    >>> p = torch.nn.Parameter(torch.ones(3))
    >>> reg = VectorRegistry([TrainableVector("fc.sigma", 0, "q", "sigma", p, "fc")])
    >>> with torch.no_grad():
    ...     _ = p.add_(0.5)
    >>> reg["fc.sigma"].strength()
    0.5
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Optional

import torch
from torch import nn

__all__ = ["TrainableVector", "VectorRegistry", "build_registry"]


@dataclass(eq=False)
class TrainableVector:
    """One trainable vector.

    Attributes:
        name: unique name, ``<module>.<kind>`` or ``<module>.<role>.<kind>`` for a slice of a fused module;
            for a 3-D expert parameter ``<param>[<expert>].<kind>`` or ``<param>[<expert>].<half>.<kind>``
            (``...experts.gate_up_proj[3].gate.sigma``).
        layer: block index (0-based, in order of appearance) or None outside blocks.
        role: ``q, k, v, o, f1, f2`` or None.
        kind: ``"sigma"`` (singular values), ``"bias"`` or ``"m"`` (SVFT's sparse entries).
        parameter: the tensor that trains.
        module: name of the module that holds it (of the 3-D parameter, for an expert parameter).
        initial: a copy of the value before training.
        expert: the expert index, for a vector of one expert (of a 3-D expert parameter, or of separate linear
            experts named ``...experts.<i>...``), else None.
    """

    name: str
    layer: Optional[int]
    role: Optional[str]
    kind: str
    parameter: nn.Parameter
    module: str
    initial: torch.Tensor = field(default=None)  # type: ignore[assignment]
    expert: Optional[int] = None

    def __post_init__(self) -> None:
        if self.initial is None:
            self.initial = self.parameter.detach().clone()

    @property
    def numel(self) -> int:
        return self.parameter.numel()

    def strength(self) -> float:
        """Training strength: mean absolute change from :attr:`initial` (method spec section 1.2)."""
        with torch.no_grad():
            value = (self.parameter.detach() - self.initial.to(self.parameter.device)).abs().float().mean()
            full = getattr(value, "full_tensor", None)  # a sharded (FSDP) vector: a collective
            return float(full() if callable(full) else value)

    def delta(self) -> torch.Tensor:
        return self.parameter.detach() - self.initial.to(self.parameter.device)

    def __repr__(self) -> str:
        expert = "" if self.expert is None else f" expert={self.expert},"
        return (f"TrainableVector({self.name!r}, layer={self.layer}, role={self.role!r},{expert} kind={self.kind!r},"
                f" numel={self.numel})")


class VectorRegistry:
    """An ordered, name-indexed collection of :class:`TrainableVector`."""

    def __init__(self, vectors: Iterable[TrainableVector] = ()) -> None:
        self._by_name: dict[str, TrainableVector] = {}
        for vec in vectors:
            if vec.name in self._by_name:
                raise ValueError(f"duplicate vector name {vec.name!r}")
            self._by_name[vec.name] = vec

    def __iter__(self) -> Iterator[TrainableVector]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __getitem__(self, name: str) -> TrainableVector:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no trainable vector named {name!r}; see VectorFitModel.vectors.names()") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def names(self) -> list[str]:
        return list(self._by_name)

    def select(self, *, kind: Optional[str] = None, role: Optional[str] = None,
               layer: Optional[int] = None, expert: Optional[int] = None) -> list[TrainableVector]:
        return [v for v in self if (kind is None or v.kind == kind) and (role is None or v.role == role)
                and (layer is None or v.layer == layer) and (expert is None or v.expert == expert)]

    def parameters(self) -> list[nn.Parameter]:
        return [v.parameter for v in self]

    def strengths(self) -> dict[str, float]:
        return {v.name: v.strength() for v in self}

    def numel_by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for v in self:
            counts[v.kind] = counts.get(v.kind, 0) + v.numel
        return counts

    def reset_initial(self) -> None:
        """Take the current values as the new starting point (after loading an adapter, say)."""
        for v in self:
            v.initial = v.parameter.detach().clone()


def build_registry(layers: Mapping[str, Any], layer_index: Mapping[str, Optional[int]]) -> VectorRegistry:
    """The registry of every vector that trains in ``layers`` (module name -> decomposed layer, in model
    order), each with the block index ``layer_index[name]``; named ``<module>.<kind>``, or
    ``<module>.<part>.<kind>`` for a layer of several parts (a fused projection), or
    ``<param>[<expert>](.<half>).<kind>`` for a 3-D expert parameter (the layer's ``part_suffix``)."""
    vectors = []
    for name, layer in layers.items():
        for key, role, kind, param in layer.trainable_vectors():
            vec_name = f"{name}{layer.part_suffix(key)}.{kind}"
            vectors.append(TrainableVector(vec_name, layer_index[name], role, kind, param, name,
                                           expert=layer.expert_of(key)))
    return VectorRegistry(vectors)
